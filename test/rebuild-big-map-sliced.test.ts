// A pool rebuild reads a big closed volume's chunk map a slice at a time, and
// opens it a slice at a time. Before, it read the map in one go to see
// whether the volume had stripes on the pool, then opened it in one go: a map
// of 1M entries held the event loop for seconds, every NBD and S3 client of
// the node waiting. The slowest event-loop gap during the rebuild is measured
// against one synchronous read of the same map in this process (what any
// one-go read costs here, under whatever load the machine has).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { readVolume } from './helpers/volume.js';
import { assertNoLongHold, closedBigColdVolume, countWholeMapReads, oneGoReadMs, watchGaps } from './helpers/big-chunk-map.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
/** Chunk entries of the big cold volume: one go ~0.15-0.4 s here. */
const CHUNKS = 150_000;

test(`a pool rebuild reads and opens a closed volume of ${CHUNKS} chunk entries a slice at a time, and rebuilds its stripe`, async (t) => {
  const { m, dir, id, chunk0 } = await closedBigColdVolume(t, false, CHUNKS);
  const lost = m.meta.chunks.get([id, 0])!.stripe!.shards[2]!.pool;
  replacePoolDir(dir, lost);
  const oneGoMs = oneGoReadMs(m, id, CHUNKS);
  const wholeMapReads = countWholeMapReads(t, m, id);
  const gaps = watchGaps();
  const report = await m.cold!.reconstructor.rebuildPool(lost);
  const slowest = gaps.stop();
  assertNoLongHold(t, slowest, oneGoMs, 'pool rebuild', wholeMapReads);
  assert.deepEqual(report.volumesSkipped, []);
  assert.equal(report.stripesChecked, 1);
  assert.equal(report.stripesRebuilt, 1);
  assert.equal(report.complete, true);
  assert.ok(!m.isOpen('big'), 'given back and closed once its stripe was flipped');
  const vol = await m.borrowVolumeAsync('big');
  assert.ok((await readVolume(vol, 0, MiB)).equals(chunk0));
  assert.equal(vol.chunkState[CHUNKS - 1], ChunkState.Discarded);
  m.giveBack(vol);
});
