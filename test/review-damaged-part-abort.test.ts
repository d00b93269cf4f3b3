// Review of 1a1b25a: a multipart part record damaged into a non-record
// (null) must not make its upload impossible to abort or complete. Before:
// AbortMultipartUpload threw (reading 'segment' of null) inside its LMDB
// transaction, which lmdb-js does not roll back, so the part records before
// it were removed for good while the upload stayed, and every retry threw
// again (500, the upload never gone, the damaged part never cleared through
// S3); CompleteMultipartUpload threw too (reading 'partNumber'), even for a
// list that did not name the damaged part. Now a damaged part is dropped
// with its upload, freeing nothing it names, and one the list names refuses
// (DamagedPartRecord, an InvalidPart: S3 400; was Corrupt, a 500). Real LMDB index and ObjectStore; records written through LMDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { NoSuchUpload } from '../src/dataplane/errors.js';
import { DamagedPartRecord } from '../src/dataplane/objects/store.js';
import { partKey, storeWithHotBucket, tempMeta } from './helpers/damaged-record.js';

/** A well-formed part on a pool this index has none of (nothing to free). */
const goodPart = (n: number) => ({ partNumber: n, etag: `e${n}`, sizeBytes: 5 * 1024 * 1024, lastModifiedMs: 1, segment: { kind: 'hot', pool: 'gone', fileId: 100 + n, lengthBytes: 5 * 1024 * 1024, chunkCrc32c: [0] } });

test('a part record damaged into null: abort drops the upload and every part; complete refuses naming it, or completes without it', async (t) => {
  const meta = tempMeta(t, 'couchestor-review-damaged-part-abort-');
  const store = await storeWithHotBucket(meta);
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  const partsOf = (uploadId: string) => [...parts.getRange({ start: partKey(uploadId, 0), end: partKey(uploadId, 0xffff) })].length;

  // Abort: parts 1 and 3 good, part 2 null.
  const a = await store.createUpload('b', 'k', {}, {});
  await parts.put(partKey(a.uploadId, 1), goodPart(1));
  await parts.put(partKey(a.uploadId, 2), null);
  await parts.put(partKey(a.uploadId, 3), goodPart(3));
  await store.abortUpload('b', 'k', a.uploadId);
  assert.throws(() => store.getUpload('b', 'k', a.uploadId), NoSuchUpload, 'the upload is gone');
  assert.equal(partsOf(a.uploadId), 0, 'every part record is gone, the damaged one too');

  // Complete naming the damaged part: refused, nothing changed.
  const c = await store.createUpload('b', 'k', {}, {});
  await parts.put(partKey(c.uploadId, 1), goodPart(1));
  await parts.put(partKey(c.uploadId, 2), null);
  await assert.rejects(store.completeUpload('b', 'k', c.uploadId, [{ partNumber: 1, etag: 'e1' }, { partNumber: 2, etag: 'e2' }]), DamagedPartRecord);
  assert.equal(store.getUpload('b', 'k', c.uploadId).uploadId, c.uploadId);
  assert.equal(partsOf(c.uploadId), 2);

  // Complete without it: the object is made of part 1, the damaged record goes with the upload.
  const rec = await store.completeUpload('b', 'k', c.uploadId, [{ partNumber: 1, etag: 'e1' }]);
  assert.equal(rec.sizeBytes, 5 * 1024 * 1024);
  assert.equal(store.headObject('b', 'k').etag, rec.etag);
  assert.equal(partsOf(c.uploadId), 0, 'the damaged part record is gone with its upload');
});
