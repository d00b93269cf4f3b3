// NBD_OPT_LIST tries a volume that may not open (its file missing, its last
// open failed) before listing it. A big chunk map is now tried in the
// background, a slice at a time, the list answered by its last try meanwhile;
// before, the list opened it in one go (a 1M-entry map held the event loop
// seconds at every list, every client of the node waiting). The slowest
// event-loop gap is measured against one synchronous read of the same map in
// this process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { NbdServer } from '../src/dataplane/nbd/server.js';
import { assertNoLongHold, closedBigColdVolume, countWholeMapReads, oneGoReadMs, watchGaps } from './helpers/big-chunk-map.js';

/** Chunk entries of the big cold volume: one go ~0.15-0.4 s here. */
const CHUNKS = 150_000;

test(`NBD_OPT_LIST tries a closed volume of ${CHUNKS} chunk entries whose file is missing a slice at a time, and lists it`, async (t) => {
  const { m, id } = await closedBigColdVolume(t, false, CHUNKS);
  const server = new NbdServer({ manager: m });
  t.after(() => server.close());
  // Its file gone (a volume that may not open): the list tries it (a cold volume's file, no chunk in it, is made again).
  const file = m.poolByName(m.getVolumeRecord('big')!.poolName).volumeFile(id);
  fs.rmSync(file);
  const oneGoMs = oneGoReadMs(m, id, CHUNKS);
  const wholeMapReads = countWholeMapReads(t, m, id);
  const gaps = watchGaps();
  const listed = server.list().map((e) => e.name);
  // The list's try, still reading the map: shared (one open), awaited here.
  const tried = await m.tryOpen('big');
  const slowest = gaps.stop();
  assertNoLongHold(t, slowest, oneGoMs, 'NBD_OPT_LIST', wholeMapReads);
  assert.deepEqual(listed, ['big'], 'listed while its try runs (no failure known)');
  assert.equal(tried, undefined, 'it opened');
  assert.ok(fs.existsSync(file), 'the try opened it (its file made again)');
  assert.ok(!m.isOpen('big'), 'closed again after the try');
  assert.deepEqual(server.list().map((e) => e.name), ['big']);
});
