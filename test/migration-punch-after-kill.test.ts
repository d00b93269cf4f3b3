// A SIGKILL between an aborted move to cold's destages and its hole punch:
// the next start (finishInterruptedReleases) punches the dead ranges the
// kill left holding their old bytes, so their blocks come back; the live
// chunks' bytes stay on disk and every byte of the volume reads back against
// the model, before and after a later write + destage. A second start finds
// nothing to punch. The move runs in a child process (helpers/punch-kill-child)
// paused at exactly that point by COUCHESTOR_TEST_PAUSE_BEFORE_PUNCH (see
// migration.ts) and killed there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrationPunchCounters } from '../src/dataplane/volumes/migration.js';
import { firstDataOffset } from '../src/dataplane/volumes/seek-data.js';
import { readFileRange } from './helpers/hot-warm.js';
import { PUNCH_KILL_CHUNKS, PUNCH_KILL_DESTAGED, PUNCH_KILL_TRIMMED, runPunchKillChild } from './helpers/punch-kill-child.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = PUNCH_KILL_CHUNKS;
const TRIMMED = PUNCH_KILL_TRIMMED;
const DESTAGED = PUNCH_KILL_DESTAGED;
const DEAD = [...DESTAGED, TRIMMED].sort((a, b) => a - b);
const LIVE = Array.from({ length: CHUNKS }, (_, c) => c).filter((c) => !DEAD.includes(c));
/** st_blocks counts 512-byte units. */
const BLOCKS_PER_CHUNK = MiB / 512;

async function holes(file: string, chunks: number[]): Promise<number[]> {
  const fd = fs.openSync(file, 'r');
  try {
    const out: number[] = [];
    for (const c of chunks) {
      const dataAt = await firstDataOffset(fd, c * MiB);
      if (dataAt === -1 || dataAt >= (c + 1) * MiB) out.push(c);
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

test('SIGKILL between an aborted move to cold\'s destages and its punch: the next start punches the dead ranges (st_blocks drops by them), data unchanged; a second start punches nothing', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-punch-after-kill-'));
  let m: VolumeManager | null = null;
  t.after(async () => {
    await m?.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const { file, want } = await runPunchKillChild(dir);
  // As the kill left it: whole, every dead range still holding its bytes.
  const before = fs.statSync(file);
  assert.equal(before.size, CHUNKS * MiB);
  assert.ok(before.blocks >= CHUNKS * BLOCKS_PER_CHUNK, `the file holds ${before.blocks} blocks after the kill`);
  assert.deepEqual(await holes(file, DEAD), [], 'a dead range was punched before the kill');

  m = await openColdTierManager(dir, false);
  const r = await m.finishInterruptedReleases();
  const vol = m.openVolume('v');
  // The kill left the record as the move wrote it: cold, the destaged chunks in stripes, the rest in the file.
  assert.equal(vol.rec.tier, 'cold');
  assert.deepEqual([...vol.stripes.keys()].sort((a, b) => a - b), DESTAGED);
  assert.deepEqual(vol.chunksOnFile(), LIVE);
  assert.equal(vol.chunkState[TRIMMED], ChunkState.Discarded);

  assert.equal(r.bytesPunched, DEAD.length * MiB, `start-up punched ${r.bytesPunched} bytes`);
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 1, bytesPunched: DEAD.length * MiB, punchesUnsupported: 0 });
  const after = fs.statSync(file);
  assert.equal(after.size, before.size, 'the punch changed the file size');
  const freed = before.blocks - after.blocks;
  assert.ok(freed >= DEAD.length * BLOCKS_PER_CHUNK, `only ${freed} blocks freed for ${DEAD.length} dead chunks`);
  assert.ok(after.blocks >= LIVE.length * BLOCKS_PER_CHUNK, `${after.blocks} blocks left for ${LIVE.length} live chunks`);
  assert.deepEqual(await holes(file, DEAD), DEAD, 'not every dead range is a hole');
  // The live chunks' bytes on disk, and every byte through the volume.
  for (const c of LIVE) assert.ok(readFileRange(file, c * MiB, MiB).equals(want.subarray(c * MiB, (c + 1) * MiB)), `live chunk ${c}'s bytes on disk`);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after the start-up punch');

  // A second start: st_blocks shows nothing dead holds space; nothing punched.
  await m.close();
  m = await openColdTierManager(dir, false);
  const again = await m.finishInterruptedReleases();
  assert.equal(again.bytesPunched, 0);
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 0 });
  const vol2 = m.openVolume('v');
  assert.ok((await readVolume(vol2, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after a second restart');

  // Writes into a punched destaged chunk, the trimmed one and a live one (journal, then destaged) read back.
  for (const c of [DESTAGED[3]!, TRIMMED, LIVE[0]!]) {
    const block = crypto.randomBytes(8192);
    block.copy(want, c * MiB + 4096);
    await writeVolume(vol2, c * MiB + 4096, block);
  }
  await vol2.flush();
  await m.cold!.destager.drain();
  assert.ok((await readVolume(vol2, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after writes and a destage');
  t.diagnostic(`kill left ${before.blocks} blocks; start-up punch freed ${freed} (${DEAD.length} dead chunks = ${DEAD.length * BLOCKS_PER_CHUNK})`);
});
