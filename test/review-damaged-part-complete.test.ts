// Review of 1a1b25a/6e20f2a: CompleteMultipartUpload listing a part whose
// index record is damaged (recordDamage) must refuse, naming the damage, and
// change nothing. Before, it answered success: the damaged segment was copied
// into a new object record, the upload and its parts were dropped, and the
// client held a 200 for an object every GET answers 500 ("stored data is
// damaged") and whose other parts' bytes it could no longer re-complete.
// A real LMDB index and ObjectStore; the part record is damaged through LMDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import { PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { Corrupt, NoSuchObject } from '../src/dataplane/errors.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';

/** A part's index key: 1, the upload id, the part number as 2 bytes (objects/store.ts partKey). */
const partKey = (uploadId: string, part: number) => Buffer.concat([Buffer.from([1]), Buffer.from(uploadId, 'latin1'), Buffer.from([part >> 8, part & 0xff])]);

test('CompleteMultipartUpload with a damaged part record refuses (Corrupt) and leaves the upload, its parts and the key as they were', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-damaged-part-complete-'));
  const meta = MetaStore.open(dir);
  t.after(async () => {
    await meta.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const manager = { meta, pools: new Map() } as unknown as VolumeManager;
  const store = await ObjectStore.open(manager);
  await store.createBucket('b', 'hot');
  const upload = await store.createUpload('b', 'k', {}, {});
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  // Part 1 damaged: its segment's kind unreadable (a hot segment otherwise).
  await parts.put(partKey(upload.uploadId, 1), { partNumber: 1, etag: 'aa', sizeBytes: 3, lastModifiedMs: 0, segment: { kind: 'h\u0000t', pool: 'hot-0', fileId: 4, lengthBytes: 3, chunkCrc32c: [0] } });

  await assert.rejects(store.completeUpload('b', 'k', upload.uploadId, [{ partNumber: 1, etag: 'aa' }]), (err: unknown) => {
    assert.ok(err instanceof Corrupt, String(err));
    assert.match((err as Error).message, /part 1 .*damaged \(segment\.kind is "h\\u0000t"\)/);
    return true;
  });
  assert.throws(() => store.headObject('b', 'k'), NoSuchObject, 'no object was made from the damaged part');
  assert.equal(store.getUpload('b', 'k', upload.uploadId).uploadId, upload.uploadId, 'the upload is still there');
  assert.ok(parts.get(partKey(upload.uploadId, 1)) !== undefined, 'the part record is still there');
});
