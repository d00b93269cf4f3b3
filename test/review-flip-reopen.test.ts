// Reopening the object index in one process (CLI, admin paths, tests): a
// second ObjectStore.open after the first store's MetaStore closed.
// lmdb-js's getKeysCount(options) sets options.onlyCount and options.values
// on the object it is given; ObjectStore.open passed its module-level range,
// so every later open's getRange(range) was a count, not an iterator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';

async function openIndex(dir: string): Promise<{ meta: MetaStore; store: ObjectStore }> {
  const meta = MetaStore.open(dir);
  const manager = { meta, pools: new Map() } as unknown as VolumeManager;
  try {
    return { meta, store: await ObjectStore.open(manager) };
  } catch (err) {
    await meta.close();
    throw err;
  }
}

test('ObjectStore.open twice in one process (the same index reopened, then a fresh one): both open, the index is intact', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-flip-reopen-'));
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-flip-reopen-'));
  t.after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(other, { recursive: true, force: true });
  });

  const first = await openIndex(dir);
  await first.store.createBucket('b', 'hot');
  const upload = await first.store.createUpload('b', 'k', {}, {});
  await first.meta.close();

  const again = await openIndex(dir);
  try {
    assert.deepEqual(again.store.listBuckets().map((b) => b.name), ['b']);
    assert.equal(again.store.getUpload('b', 'k', upload.uploadId).uploadId, upload.uploadId);
  } finally {
    await again.meta.close();
  }

  const fresh = await openIndex(other);
  try {
    assert.deepEqual(fresh.store.listBuckets(), []);
  } finally {
    await fresh.meta.close();
  }
});
