// A chunk-map write that fails with nobody awaiting it (Volume.setChunk's
// put) takes the volume offline and reaches the next FLUSH as an error; it
// no longer crashes the daemon as an unhandled rejection. Failed at 544848f
// (the rejection was unhandled and the FLUSH reported success).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { openColdTierManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

test('a failed chunk-map put takes the volume offline: no unhandled rejection, the next FLUSH (and later ones) fail', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-chunk-put-fail-'));
  const m = await openColdTierManager(dir);
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  t.after(async () => {
    process.off('unhandledRejection', onUnhandled);
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'hot' });
  const vol = m.openVolume('v');
  // The next put's commit fails (what lmdb-js's put promise does when its
  // commit fails): the entry is handed to the real store, the caller sees the rejection.
  const chunks = m.meta.chunks as unknown as { put: (...a: unknown[]) => Promise<boolean> };
  const realPut = chunks.put;
  let injected = 0;
  chunks.put = function (this: unknown, ...a: unknown[]) {
    chunks.put = realPut;
    injected++;
    void realPut.apply(this, a);
    return Promise.reject(Object.assign(new Error('MDB_PANIC: commit failed (injected)'), { code: 'EIO' }));
  };
  // A write to a fresh chunk: allocation puts its chunk entry.
  await writeVolume(vol, 2 * MiB, Buffer.alloc(BLOCK_BYTES, 0x5a));
  assert.equal(injected, 1, 'the write did not put a chunk entry');
  assert.equal(vol.chunkState[2], ChunkState.Allocated);
  await assert.rejects(vol.flush(), /chunk map.*offline/, 'the FLUSH reported success after the chunk entry failed to commit');
  await assert.rejects(vol.flush(), /offline/, 'a later FLUSH succeeded');
  assert.deepEqual(unhandled, [], 'the failed put was an unhandled rejection (the daemon would crash)');
});
