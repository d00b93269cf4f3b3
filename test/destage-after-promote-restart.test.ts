// A chunk that goes cold -> hot -> cold keeps what it had across a restart:
// journal records merged into the file by the promote stay merged (the head
// journal file still holds them and is replayed at every start), and the new
// stripe's generation is above every earlier stripe of the chunk, so shard
// records of the superseded stripes can never be taken for the live one.
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

test('cold -> hot -> cold: a restart replays no journal record the promote merged, and stripe generations only grow', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-promote-restart-'));
  let m = await openColdTierManager(dir, true);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
  let vol = m.openVolume('v');
  // Two stripe generations of chunk 0, then "A" journaled on top.
  await write(vol, 0, Buffer.alloc(MiB, 0x31));
  await m.cold!.destager.drain();
  await write(vol, 0, Buffer.alloc(MiB, 0x32));
  await m.cold!.destager.drain();
  const before = vol.stripes.get(0)!.generation;
  assert.equal(before, 2);
  await write(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x41));
  await vol.flush();

  // Hot: the promote merges "A" into the file; "B" overwrites it there.
  assert.equal((await migrateVolume(m, 'v', 'hot', { preserve: false })).phase, 'Done');
  await write(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x42));
  await vol.flush();
  // Cold again: chunk 0 is destaged from the file, with nothing journaled.
  assert.equal((await migrateVolume(m, 'v', 'cold', { preserve: false })).phase, 'Done');
  assert.equal(vol.chunkState[0], ChunkState.Cold);
  assert.ok(vol.stripes.get(0)!.generation > before, `generation ${vol.stripes.get(0)!.generation} after promote + destage, was ${before}`);
  assert.ok((await read(vol, 0, BLOCK_BYTES)).equals(Buffer.alloc(BLOCK_BYTES, 0x42)), 'before restart');

  await m.close();
  m = await openColdTierManager(dir, false);
  vol = m.openVolume('v');
  assert.deepEqual(m.cold!.journal.dirtyChunks(vol.rec.id), [], 'no journal record of chunk 0 is live after the restart');
  const back = await read(vol, 0, 2 * BLOCK_BYTES);
  assert.ok(back.subarray(0, BLOCK_BYTES).equals(Buffer.alloc(BLOCK_BYTES, 0x42)), `block 0 after restart reads 0x${back[0]!.toString(16)}, wrote 0x42`);
  assert.ok(back.subarray(BLOCK_BYTES).equals(Buffer.alloc(BLOCK_BYTES, 0x32)), 'block 1 after restart');
});
