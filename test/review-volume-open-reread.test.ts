// Review of the sliced volume open (3f76da6): a write to a closed volume's
// chunk map while an open reads it a slice at a time made the open read the
// whole map again, twice, and then in one go. Compaction flips a cold
// volume's entries every few ms while a pass runs, so an open of a big cold
// volume during a pass did just that: with one write every 100 ms to a map
// of 1M entries, the open took ~2 s (~0.8 s without) and held the event loop
// 0.5-0.7 s (20-30 ms without), what the sliced open was made to end. Now the
// entries written are read again once their writes committed, and the map
// is read once. What the volume has is still the index's, entry for entry,
// BLOCK_STATUS (per-group counts) included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 100_000;
const CHUNK_BYTES = 4096;

test('entries written during a sliced open (one per range read) are read again, the map not read again whole; the volume has the index', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-open-reread-', () => m!);
  m = VolumeManager.open(dir);
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const rec = await m.createVolume({ name: 'big', sizeBytes: CHUNKS * CHUNK_BYTES, tier: 'hot', pool: 'hot-0', chunkSizeBytes: CHUNK_BYTES });
  const first = m;
  // Groups of 4,096 chunks (BLOCK_STATUS's counts) all data and all holes in turn: a count off by one answers a whole group wrong.
  await first.meta.transaction(() => {
    for (let c = 0; c < CHUNKS; c++) if ((c >> 12) % 2 === 0) void first.meta.chunks.put([rec.id, c], { state: ChunkState.Allocated, pool: 'hot-0' });
  });
  await m.close();
  m = VolumeManager.open(dir);
  const mgr = m;

  // At every range read after the first: one entry already read changes (removed, trimmed, or written where
  // a hole was), and one not read yet (removed), as compaction's flips and a sync opener's writes come.
  const volumeChunks = mgr.meta.volumeChunks.bind(mgr.meta);
  let ranges = 0;
  let wholeReads = 0;
  let oneGo = 0;
  let k = 0;
  mgr.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    if (volumeId === rec.id) {
      ranges++;
      if (fromChunk === 0) wholeReads++;
      if (limit === undefined) oneGo++;
      if (fromChunk > 0) {
        k++;
        const behind = (k * 7919) % fromChunk;
        const kind = k % 3;
        if (kind === 0) void mgr.meta.chunks.remove([rec.id, behind]);
        else if (kind === 1) void mgr.meta.chunks.put([rec.id, behind], { state: ChunkState.Discarded, pool: 'hot-0' });
        else void mgr.meta.chunks.put([rec.id, behind], { state: ChunkState.Allocated, pool: 'hot-0' });
        const ahead = fromChunk + ((k * 104_729) % (CHUNKS - fromChunk));
        void mgr.meta.chunks.remove([rec.id, ahead]);
      }
    }
    return volumeChunks(volumeId, fromChunk, limit);
  };
  const vol = await mgr.borrowVolumeAsync('big');
  mgr.meta.volumeChunks = volumeChunks;
  t.diagnostic(JSON.stringify({ ranges, writes: 2 * k, wholeReads, oneGo }));
  assert.ok(k >= 20, `writes during the open: ${k} ranges`);
  assert.equal(oneGo, 0, 'the map was read in one go');
  assert.equal(wholeReads, 1, 'the map was read whole more than once');

  // Every chunk as the index has it, and the per-group counts behind BLOCK_STATUS agree.
  await mgr.meta.transaction(() => undefined);
  const want = new Uint8Array(CHUNKS);
  for (const { chunkIndex, entry } of volumeChunks(rec.id)) want[chunkIndex] = entry.state;
  let differ = 0;
  for (let c = 0; c < CHUNKS; c++) if (vol.chunkState[c] !== want[c]) differ++;
  assert.equal(differ, 0, `${differ} chunks differ from the index`);
  const data = (s: number) => s === ChunkState.Allocated || s === ChunkState.Cold;
  const expected: { lengthBytes: number; flags: number }[] = [];
  for (let c = 0; c < CHUNKS; c++) {
    const flags = data(want[c]!) ? 0 : 3;
    const last = expected.at(-1);
    if (last !== undefined && last.flags === flags) last.lengthBytes += CHUNK_BYTES;
    else expected.push({ lengthBytes: CHUNK_BYTES, flags });
  }
  const got: { lengthBytes: number; flags: number }[] = [];
  for (let off = 0; off < CHUNKS * CHUNK_BYTES; ) {
    const ext = vol.blockStatus(off, CHUNKS * CHUNK_BYTES - off, 1 << 20);
    for (const e of ext) {
      const last = got.at(-1);
      if (last !== undefined && last.flags === e.flags) last.lengthBytes += e.lengthBytes;
      else got.push({ ...e });
      off += e.lengthBytes;
    }
  }
  assert.deepEqual(got, expected);
  mgr.giveBack(vol);
});

test('chunks moved off a second pool during a sliced open, its file removed: the open does not ask for that file', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-open-reread-pools-', () => m!);
  m = VolumeManager.open(dir);
  for (const name of ['hot-0', 'hot-1']) await m.putPool({ name, path: path.join(dir, name), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const rec = await m.createVolume({ name: 'mv', sizeBytes: 20_000 * CHUNK_BYTES, tier: 'hot', pool: 'hot-0', chunkSizeBytes: CHUNK_BYTES });
  const first = m;
  // Chunks 0-99 in hot-1's file (an interrupted move left them there), the rest in hot-0's.
  await first.meta.transaction(() => {
    for (let c = 0; c < 20_000; c++) void first.meta.chunks.put([rec.id, c], { state: ChunkState.Allocated, pool: c < 100 ? 'hot-1' : 'hot-0' });
  });
  const hot1 = first.pools.get('hot-1')!;
  hot1.ensureDirs();
  fs.writeFileSync(hot1.volumeFile(rec.id), Buffer.alloc(0));
  await m.close();
  m = VolumeManager.open(dir);
  const mgr = m;
  // Once chunks 0-99 were read: moved to hot-0 (as a move finishing them does) and hot-1's file removed.
  const volumeChunks = mgr.meta.volumeChunks.bind(mgr.meta);
  let moved = false;
  mgr.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    if (volumeId === rec.id && fromChunk > 0 && !moved) {
      moved = true;
      for (let c = 0; c < 100; c++) void mgr.meta.chunks.put([rec.id, c], { state: ChunkState.Allocated, pool: 'hot-0' });
      fs.rmSync(hot1.volumeFile(rec.id));
    }
    return volumeChunks(volumeId, fromChunk, limit);
  };
  const vol = await mgr.borrowVolumeAsync('mv');
  mgr.meta.volumeChunks = volumeChunks;
  assert.ok(moved);
  assert.deepEqual(vol.openFilePools(), ['hot-0']);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['hot-0']);
  mgr.giveBack(vol);
});
