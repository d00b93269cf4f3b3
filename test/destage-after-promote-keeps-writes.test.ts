// A destager pass lists a cold volume's journaled chunks when it starts; a
// cold -> hot migration (or a client write) may promote a listed chunk
// before the pass reaches it. The late drainJournalChunk() must not copy the
// chunk's file onto itself: that read-modify-write lost writes in flight
// (the cause of test/migration-under-writes' stale blocks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { openColdTierManager, readVolume as read, writeVolume as write } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
/**
 * Rounds of (client write in flight + late destager call). The loss needs the
 * destager's file read to overtake the pwrite on the libuv pool, so it is a
 * race: before the fix, 2-12 of 64 rounds lost their write in each of 3 runs.
 */
const ROUNDS = 200;

test('a destager call for a chunk promoted since its pass listed it leaves writes in flight intact', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-late-destage-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  // Chunk 0 on a stripe (the "old" bytes), then journaled on top of it.
  await write(vol, 0, Buffer.alloc(MiB, 0x4f));
  await m.cold!.destager.drain();
  assert.equal(vol.chunkState[0], ChunkState.Cold);
  await write(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x4a));
  // What a destager pass starting now would list; the migration then promotes it.
  assert.deepEqual(m.cold!.journal.dirtyChunks(vol.rec.id), [0]);
  const moved = await migrateVolume(m, 'v', 'hot', { preserve: false });
  assert.equal(moved.phase, 'Done');
  assert.equal(vol.chunkState[0], ChunkState.Allocated);
  assert.equal(m.cold!.journal.extents(vol.rec.id, 0), undefined);
  // The pass that listed chunk 0 reaches it now: nothing is left to merge.
  assert.equal(await vol.drainJournalChunk(0), false, 'a promoted chunk reports no destage work');

  const lost: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const data = Buffer.alloc(MiB, 1 + (round % 250));
    // The client write is in flight (its pwrite queued) when the late
    // destager call starts: the call's file read races the pwrite.
    const written = write(vol, 0, data);
    const late = vol.drainJournalChunk(0);
    await Promise.all([late, written]);
    const back = await read(vol, 0, MiB);
    if (!back.equals(data)) lost.push(round);
  }
  assert.deepEqual(lost, [], `acknowledged writes read back as older bytes in rounds ${lost.join(',')}`);
  assert.equal(vol.chunkState[0], ChunkState.Allocated);
});
