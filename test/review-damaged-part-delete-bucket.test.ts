// DeleteBucket aborting an upload whose part record is damaged into null:
// the damaged part is dropped and frees nothing it names (as abort, as an
// overwrite). Before: reading 'segment' of null threw a TypeError inside the
// bucket's LMDB transaction, which lmdb-js does not roll back, after the
// part records before it were removed: the bucket stayed, the upload lost
// some of its parts, every retry threw again. Real LMDB and ObjectStore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PARTS_DB, UPLOADS_DB } from '../src/dataplane/objects/cold-segments.js';
import { NoSuchBucket } from '../src/dataplane/errors.js';
import { partKey, storeWithHotBucket, tempMeta } from './helpers/damaged-record.js';

test('deleting a bucket whose open upload has a part record damaged into null drops the upload and every part', async (t) => {
  const meta = tempMeta(t, 'couchestor-review-damaged-part-delete-bucket-');
  const store = await storeWithHotBucket(meta);
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  const u = await store.createUpload('b', 'k', {}, {});
  // Part 1 good (on a pool this store has none of: nothing to free), part 2 null.
  await parts.put(partKey(u.uploadId, 1), { partNumber: 1, etag: 'e1', sizeBytes: 1, lastModifiedMs: 1, segment: { kind: 'hot', pool: 'gone', fileId: 101, lengthBytes: 1, chunkCrc32c: [0] } });
  await parts.put(partKey(u.uploadId, 2), null);
  await store.deleteBucket('b');
  assert.throws(() => store.getBucket('b'), NoSuchBucket);
  assert.equal([...parts.getRange({ start: Buffer.from([1]) })].length, 0, 'every part record gone');
  assert.equal([...meta.openDB<unknown, Buffer>(UPLOADS_DB).getRange({ start: Buffer.from([1]) })].length, 0, 'the upload gone');
});
