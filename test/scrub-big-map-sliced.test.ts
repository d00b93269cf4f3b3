// The scrub reads a big closed volume's chunk map a slice at a time. Before,
// it read each closed volume's map from the index in one go, and opened one
// that may not open (its file missing, its last open failed) in one go: a map
// of 1M entries held the event loop for seconds at every scrub, every NBD and
// S3 client of the node waiting. The slowest event-loop gap during the pass
// is measured against one synchronous read of the same map in this process
// (what any one-go read costs here, under whatever load the machine has).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { assertNoLongHold, closedBigColdVolume, countWholeMapReads, oneGoReadMs, watchGaps } from './helpers/big-chunk-map.js';

/** Chunk entries of the big cold volume: one go ~0.15-0.4 s here. */
const CHUNKS = 150_000;

test(`a scrub reads a closed volume of ${CHUNKS} chunk entries a slice at a time, and tries one that may not open a slice at a time`, async (t) => {
  const { m, id } = await closedBigColdVolume(t, false, CHUNKS);
  // Its file gone (a volume that may not open): the pass's listing tries to open it (a cold
  // volume's file, no chunk in it, is made again) and closes it again.
  const rec = m.getVolumeRecord('big')!;
  fs.rmSync(m.poolByName(rec.poolName).volumeFile(id));
  const oneGoMs = oneGoReadMs(m, id, CHUNKS);
  const wholeMapReads = countWholeMapReads(t, m, id);
  const gaps = watchGaps();
  const report = await m.cold!.reconstructor.scrub();
  const slowest = gaps.stop();
  assertNoLongHold(t, slowest, oneGoMs, 'scrub', wholeMapReads);
  assert.deepEqual(report.volumesSkipped, []);
  assert.equal(report.stripesChecked, 1, "chunk 0's stripe checked");
  assert.equal(report.badStripes, 0);
  assert.ok(!m.isOpen('big'), 'closed again after the pass');
  assert.ok(fs.existsSync(m.poolByName(rec.poolName).volumeFile(id)), 'the try opened it (its file made again)');
});
