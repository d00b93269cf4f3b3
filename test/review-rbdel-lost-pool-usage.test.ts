// Pool usage of a volume lost on a replaced hot pool (`pools replace
// --discard-volumes` marks it lostOnPools; its data is gone with the old
// disk). The replace sets the pool's usage to 0 (the new disk is empty), but
// the lost volume's Allocated entries still name the pool: deleting it (what
// the replace tells the operator to do) gave their space back out of the
// new disk's count, under-counting what the volumes written there since
// use; a start before that delete counted the lost chunks on the new disk.
// Neither counts them now (recomputeUsage, removeChunkMap). Likewise a delete
// whose chunk-map removal (a batch at a time, seconds for a big map) runs
// across a replace of the pool: the batches after it gave the old disk's
// chunks back out of the new disk's count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { openColdTierManager, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const LOST_CHUNKS = 50;

function write(m: VolumeManager, name: string, offsetBytes: number, data: Buffer): Promise<void> {
  const vol = m.openVolume(name);
  return new Promise((resolve, reject) => vol.write(offsetBytes, data, true, (err) => (err ? reject(err) : resolve())));
}

test('a volume lost on a replaced hot pool is not counted in the new disk\'s usage, at a start nor by its delete', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rbdel-lost-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = path.join(dir, 'hot-1');
  await m.putPool({ name: 'hot-1', path: hot1, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const lost = await m.createVolume({ name: 'lost', sizeBytes: LOST_CHUNKS * MiB, tier: 'hot', pool: 'hot-1' });
  await write(m, 'lost', 0, Buffer.alloc(LOST_CHUNKS * MiB, 0x11));
  await m.openVolume('lost').flush();
  const allocated = [...m.meta.volumeChunks(lost.id)].filter(({ entry }) => entry.state === ChunkState.Allocated && entry.pool === 'hot-1').length;
  assert.equal(allocated, LOST_CHUNKS, 'premise: the lost volume has its chunks on hot-1');
  assert.equal(m.pools.get('hot-1')!.usedBytes, LOST_CHUNKS * MiB);

  // The disk dies: an empty directory where it was mounted; replaced, the volume discarded.
  await m.close();
  fs.renameSync(hot1, `${hot1}.dead`);
  fs.mkdirSync(hot1);
  m = await openColdTierManager(dir, false);
  const r = await m.replacePool('hot-1', { discardVolumes: true });
  assert.deepEqual(r.volumesLost, ['lost']);
  assert.equal(m.pools.get('hot-1')!.usedBytes, 0, 'the new disk is empty');
  // A new volume written on the new disk: 3 chunks.
  await m.createVolume({ name: 'fresh', sizeBytes: 8 * MiB, tier: 'hot', pool: 'hot-1' });
  await write(m, 'fresh', 0, Buffer.alloc(3 * MiB, 0x22));
  await m.openVolume('fresh').flush();
  assert.equal(m.pools.get('hot-1')!.usedBytes, 3 * MiB);

  // A start before the lost volume's delete: the new disk holds only the new volume's chunks.
  await m.close();
  m = await openColdTierManager(dir, false);
  assert.equal(m.pools.get('hot-1')!.usedBytes, 3 * MiB, 'a start counts none of the lost chunks on the new disk');

  // The delete the replace asks for gives back none of the new disk's space.
  await m.deleteVolume('lost');
  assert.equal([...m.meta.volumeChunks(lost.id)].length, 0);
  assert.equal(m.pools.get('hot-1')!.usedBytes, 3 * MiB, 'the new volume\'s chunks stay counted');
});

test('a delete whose chunk-map removal runs across a replace of the pool gives back none of the new disk\'s space', async (t) => {
  const CHUNKS = 3000; // 3 batches
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rbdel-replaced-', () => m!);
  m = await openColdTierManager(dir);
  const mgr = m;
  const hot1 = path.join(dir, 'hot-1');
  await mgr.putPool({ name: 'hot-1', path: hot1, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const big = await mgr.createVolume({ name: 'big', sizeBytes: CHUNKS * MiB, tier: 'hot', pool: 'hot-1' });
  // Its map as written chunks (the space counted as the start's count would).
  await mgr.meta.transaction(() => {
    for (let i = 0; i < CHUNKS; i++) void mgr.meta.chunks.put([big.id, i], { state: ChunkState.Allocated, pool: 'hot-1' });
  });
  mgr.pools.get('hot-1')!.usedBytes += CHUNKS * MiB;
  // After the removal's first batch commits: hot-1's disk dies and is replaced, a new volume is written there.
  const meta = mgr.meta as unknown as { removeDeletingChunks: (id: number, limit: number) => Promise<unknown> };
  const real = meta.removeDeletingChunks;
  t.after(() => (meta.removeDeletingChunks = real));
  let batches = 0;
  meta.removeDeletingChunks = async (id: number, limit: number) => {
    const got = await real.call(mgr.meta, id, limit);
    if (++batches === 1) {
      fs.renameSync(hot1, `${hot1}.dead`);
      fs.mkdirSync(hot1);
      const r = await mgr.replacePool('hot-1');
      assert.deepEqual(r.volumesLost, [], 'the volume being deleted is not lost: it is out of the namespace');
      await mgr.createVolume({ name: 'fresh', sizeBytes: 8 * MiB, tier: 'hot', pool: 'hot-1' });
      await write(mgr, 'fresh', 0, Buffer.alloc(3 * MiB, 0x22));
      await mgr.openVolume('fresh').flush();
      assert.equal(mgr.pools.get('hot-1')!.usedBytes, 3 * MiB);
    }
    return got;
  };
  await mgr.deleteVolume('big');
  assert.ok(batches >= 3, `premise: the removal took ${batches} batches`);
  assert.equal([...mgr.meta.volumeChunks(big.id)].length, 0);
  assert.equal(mgr.pools.get('hot-1')!.usedBytes, 3 * MiB, 'the new volume\'s chunks stay counted');
});
