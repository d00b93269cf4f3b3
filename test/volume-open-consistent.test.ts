// A volume opened a slice at a time (VolumeManager.openSliced) reads its
// chunk map over many event-loop turns. A write to that map meanwhile (what
// compaction's flip does to a closed volume's entries, or a delete) to an
// entry already read must not be lost: the open sees the write counted
// (MetaStore.watchChunkWrites) and reads the map again, so the volume
// serves what the index holds, and its per-group data counts (BLOCK_STATUS)
// agree with its states.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 100_000;
const CHUNK_BYTES = 4096;

test('an entry changed while a sliced open reads the map (after its slice was read) is what the opened volume has', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-open-consistent-', () => m!);
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

  // When the open asks for its second slice (chunk 0 read already), chunk 0 is trimmed in the index.
  const volumeChunks = mgr.meta.volumeChunks.bind(mgr.meta);
  let changed = false;
  let slices = 0;
  mgr.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    slices++;
    if (fromChunk > 0 && !changed) {
      changed = true;
      void mgr.meta.chunks.remove([rec.id, 0]);
    }
    return volumeChunks(volumeId, fromChunk, limit);
  };
  const vol = await mgr.borrowVolumeAsync('big');
  assert.ok(changed, 'the open read the map in more than one slice');
  assert.ok(slices > 2);
  assert.equal(mgr.meta.chunks.get([rec.id, 0]), undefined);
  assert.equal(vol.chunkState[0], ChunkState.Unallocated, 'the opened volume has chunk 0 as the index does');
  assert.equal(vol.chunkState[1], ChunkState.Allocated);
  // BLOCK_STATUS from the per-group counts: chunk 0 a hole, the rest data.
  assert.deepEqual(vol.blockStatus(0, 4 * CHUNK_BYTES, 8), [
    { lengthBytes: CHUNK_BYTES, flags: 3 },
    { lengthBytes: 3 * CHUNK_BYTES, flags: 0 },
  ]);
  mgr.giveBack(vol);
});
