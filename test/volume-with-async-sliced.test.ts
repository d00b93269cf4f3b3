// VolumeManager.withVolumeAsync, the control loop's look at a move candidate
// (ANALYZE, repeated every pass while the move is blocked): a closed volume
// is opened a slice at a time (borrowVolumeAsync), not read in one go (1M
// chunk entries held the event loop ~0.9 s), and given back after the look;
// an open volume is taken in the same turn, as withVolume does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 100_000;
const CHUNK_BYTES = 4096;

test('withVolumeAsync opens a closed volume a slice at a time and closes it after; an open one is looked at in the same turn', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-with-async-', () => m!);
  m = VolumeManager.open(dir);
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const rec = await m.createVolume({ name: 'big', sizeBytes: CHUNKS * CHUNK_BYTES, tier: 'hot', pool: 'hot-0', chunkSizeBytes: CHUNK_BYTES });
  const first = m;
  await first.meta.transaction(() => {
    for (let c = 0; c < CHUNKS; c++) void first.meta.chunks.put([rec.id, c], { state: ChunkState.Allocated, pool: 'hot-0' });
  });
  await m.close();
  m = VolumeManager.open(dir);
  const mgr = m;

  const volumeChunks = mgr.meta.volumeChunks.bind(mgr.meta);
  let reads = 0;
  mgr.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    reads++;
    return volumeChunks(volumeId, fromChunk, limit);
  };
  // Event-loop turns taken while the look runs: a sliced open yields between its slices.
  let turns = 0;
  let ticking = true;
  const tick = () => {
    if (!ticking) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  const seen = await mgr.withVolumeAsync('big', (vol) => ({ state: vol.chunkState[CHUNKS - 1], id: vol.rec.id }));
  ticking = false;
  assert.deepEqual(seen, { state: ChunkState.Allocated, id: rec.id }, 'the look saw the whole map');
  assert.ok(reads > 2, `the map was read in slices (${reads} reads)`);
  assert.ok(turns > 2, `the event loop turned while the map was read (${turns} turns)`);
  assert.ok(!mgr.openVolumes().some((v) => v.name === 'big'), 'given back and closed after the look');

  // Open (lent elsewhere): the look runs in this turn, nothing read again.
  const held = mgr.borrowVolume('big');
  reads = 0;
  let ran = false;
  const look = mgr.withVolumeAsync('big', () => (ran = true));
  assert.ok(ran, 'an open volume is looked at before withVolumeAsync returns');
  await look;
  assert.equal(reads, 0);
  mgr.giveBack(held);
});
