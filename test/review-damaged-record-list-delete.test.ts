// Review of 1a1b25a/6e20f2a: a damaged object record whose damage reaches
// past its segments (the stored value null or not an object, its key or
// lastModifiedMs fields gone) must still list under its key and delete.
// Before: ListObjects of the whole bucket threw (null: "reading 'key'"; with
// a delimiter, key.indexOf of undefined; in the server, LastModified of an
// undefined time threw a RangeError): every key of the bucket unlistable,
// 500. And DELETE of a record stored as null answered 204 and removed
// nothing (the "if (prev)" test), so the record, and with it the sweep and
// compaction stop it causes, could never be cleared through S3. Real LMDB
// index and ObjectStore; the record is written through LMDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { Corrupt } from '../src/dataplane/errors.js';
import { storeWithHotBucket, tempMeta } from './helpers/damaged-record.js';

const DAMAGED: unknown[] = [null, 7, 'x', { segments: 7 }, { key: 3, lastModifiedMs: 'y', sizeBytes: null, etag: 4, segments: [{ kind: 'c0ld' }] }];

test('a record damaged past its segments lists under its index key (with and without a delimiter) and DELETE removes it', async (t) => {
  const meta = tempMeta(t, 'couchestor-review-damaged-list-');
  const store = await storeWithHotBucket(meta);
  const id = store.listBuckets()[0]!.id;
  const indexKey = Buffer.concat([Buffer.from([1, id >>> 24, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff]), Buffer.from('dir/bad')]);
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);

  for (const value of DAMAGED) {
    const label = JSON.stringify(value);
    await objects.put(indexKey, value);
    const flat = store.list('b', { prefix: '', delimiter: '', after: '', maxKeys: 10 });
    assert.deepEqual(flat.objects.map((o) => o.key), ['dir/bad'], `${label}: listed under its key`);
    const o = flat.objects[0]!;
    assert.ok(Number.isFinite(o.lastModifiedMs) && Number.isFinite(o.sizeBytes) && typeof o.etag === 'string', `${label}: listable fields: ${JSON.stringify(o)}`);
    const grouped = store.list('b', { prefix: '', delimiter: '/', after: '', maxKeys: 10 });
    assert.deepEqual(grouped.commonPrefixes, ['dir/'], `${label}: grouped by the delimiter`);
    assert.throws(() => store.headObject('b', 'dir/bad'), Corrupt, `${label}: HEAD answers the damage`);
    assert.equal(await store.deleteObject('b', 'dir/bad'), true, `${label}: deleted`);
    assert.equal(objects.get(indexKey), undefined, `${label}: the record is gone`);
  }
});
