// Review of 1a1b25a/6e20f2a: CompleteMultipartUpload listing a part whose
// index record is damaged (recordDamage) must refuse, naming the damage, and
// change nothing. Before, it answered success: the damaged segment was copied
// into a new object record, the upload and its parts were dropped, and the
// client held a 200 for an object every GET answers 500 ("stored data is
// damaged") and whose other parts' bytes it could no longer re-complete.
// Since: refused as DamagedPartRecord, an InvalidPart, which the S3 boundary
// answers 400 InvalidPart naming the damage and the part (was Corrupt, a 500
// a client retries, had the S3 server's own check before it missed a part
// damaged meanwhile). A real LMDB index and ObjectStore; the part record is
// damaged through LMDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { InvalidPart, NoSuchObject } from '../src/dataplane/errors.js';
import { DamagedPartRecord } from '../src/dataplane/objects/store.js';
import { toS3Error } from '../src/dataplane/s3/errors.js';
import { partKey, storeWithHotBucket, tempMeta } from './helpers/damaged-record.js';


test('CompleteMultipartUpload with a damaged part record refuses (400 InvalidPart naming the damage) and leaves the upload, its parts and the key as they were', async (t) => {
  const meta = tempMeta(t, 'couchestor-review-damaged-part-complete-');
  const store = await storeWithHotBucket(meta);
  const upload = await store.createUpload('b', 'k', {}, {});
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  // Part 1 damaged: its segment's kind unreadable (a hot segment otherwise).
  await parts.put(partKey(upload.uploadId, 1), { partNumber: 1, etag: 'aa', sizeBytes: 3, lastModifiedMs: 0, segment: { kind: 'h\u0000t', pool: 'hot-0', fileId: 4, lengthBytes: 3, chunkCrc32c: [0] } });

  await assert.rejects(store.completeUpload('b', 'k', upload.uploadId, [{ partNumber: 1, etag: 'aa' }]), (err: unknown) => {
    assert.ok(err instanceof DamagedPartRecord && err instanceof InvalidPart, String(err));
    assert.match((err as Error).message, /Part 1 cannot be used: its stored record is damaged \(segment\.kind is "h\\u0000t"\)/);
    const s3 = toS3Error(err, { bucket: 'b', key: 'k' });
    assert.deepEqual([s3.status, s3.code, s3.extra], [400, 'InvalidPart', { UploadId: upload.uploadId, PartNumber: '1' }]);
    assert.match(s3.message, /Part 1 cannot be used: its stored record is damaged/);
    return true;
  });
  assert.throws(() => store.headObject('b', 'k'), NoSuchObject, 'no object was made from the damaged part');
  assert.equal(store.getUpload('b', 'k', upload.uploadId).uploadId, upload.uploadId, 'the upload is still there');
  assert.ok(parts.get(partKey(upload.uploadId, 1)) !== undefined, 'the part record is still there');
});
