// ColdObjectHolders.list() maps each open upload's id to the object its
// upload completes into (a part's holder key carries it, so current() and
// the flips find the part's stripes in the object once the upload
// completes: test/review-cold-complete-during-rebuild). An upload record
// damaged into another live upload's id (quarantine.ts uploadDamage:
// "uploadId is ..., not its index key's") was read for that map: the live
// upload's id then named the damaged record's object, so once the live
// upload completed, current() of its part's holder key answered undefined
// ("gone": a pool rebuild skips the stripe and does not count it as not
// rebuilt). Now the map is read from the index keys (uploadKey: the
// object's index key, 0, the upload id), never from a record's value. In
// process (real ObjectStore, stripe store, LMDB).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MetaStore } from '../src/dataplane/meta/store.js';
import { UPLOADS_DB, type ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { bodyOf, patternBytes } from './helpers/cold.js';
import { STRIPE_BYTES, setupFlipBatch } from './helpers/cold-flip-batch.js';

test("holders: an upload record damaged into another upload's id does not redirect that upload's parts; after its completion current() still finds the part's stripe in the object", async (t) => {
  const { holders, store } = await setupFlipBatch(t);
  const meta = (holders as unknown as { meta: MetaStore }).meta;
  await store.createBucket('mp', 'cold');
  const live = await store.createUpload('mp', 'obj', {}, {});
  const bytes = patternBytes(STRIPE_BYTES, 5);
  const part = await store.uploadPart('mp', 'obj', live.uploadId, 1, bodyOf(bytes), { expectedBytes: bytes.length });
  const ref = (part.segment as ColdSegment).stripes[0]!;
  // Another upload, on a key sorting after the live one's, its record damaged into the live upload's id.
  const other = await store.createUpload('mp', 'zz-other', {}, {});
  const uploads = meta.openDB<{ uploadId: string; key: string }, Buffer>(UPLOADS_DB);
  const otherKey = [...uploads.getRange({ start: Buffer.from([1]) })].find((e) => e.value.uploadId === other.uploadId)!.key as Buffer;
  await uploads.put(Buffer.from(otherKey), { ...other, uploadId: live.uploadId });

  const partKey = [...holders.list()].find(([k, r]) => k.startsWith('p/') && r.ownerId === ref.ownerId && r.chunkIndex === ref.chunkIndex)![0];
  assert.deepEqual(holders.current(partKey), ref);
  await store.completeUpload('mp', 'obj', live.uploadId, [{ partNumber: 1, etag: part.etag }]);
  assert.deepEqual(holders.current(partKey), ref, "the part's stripe found in the completed object");
});
