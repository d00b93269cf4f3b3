// ColdObjectHolders over a real LMDB index holding damaged object AND part
// records beside good ones: count() (what /metrics and GET /v1/cold read)
// counts the good records' stripes and the damaged ones by database, and the
// log names each damaged record once per process, in one line per count at
// most (a second count logs nothing, a newly damaged record is named alone);
// list() without a callback (pool rebuild, scrub) throws a DamagedIndexRecord
// naming bucket/key. Before the fix count() threw (not iterable).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ColdObjectHolders, DamagedIndexRecord } from '../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB, PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { objectKey, putColdBucket9, tempMeta } from './helpers/damaged-record.js';
import { stderrLines } from './helpers/stderr.js';

const ref = (ownerId: string, chunkIndex: number) => ({ ownerId, chunkIndex, generation: 1, dataShards: 4, parityShards: 2, shards: [] });
const cold = (ownerId: string, stripes: number) => ({ kind: 'cold', fileId: 1, lengthBytes: 1, chunkBytes: 1, stripes: Array.from({ length: stripes }, (_, i) => ref(ownerId, i)) });
const partKey = (uploadId: string, part: number) => Buffer.concat([Buffer.from([1]), Buffer.from(uploadId, 'latin1'), Buffer.from([0, part])]);

test('damaged object and part records are skipped and counted by count(), named once in the log, and named by the strict list()', async (t) => {
  const meta = tempMeta(t, 'couchestor-damaged-part-');
  await putColdBucket9(meta);
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  await objects.put(objectKey(9, 'good'), { key: 'good', versionId: 1, segments: [cold('a', 2)] });
  await objects.put(objectKey(9, 'bad'), { key: 'bad', versionId: 2, segments: [{ kind: 'cold', stripes: 'x' }] });
  await parts.put(partKey('upload-good', 1), { segment: cold('b', 1) });
  await parts.put(partKey('upload-bad', 2), { segment: 7 });
  const holders = new ColdObjectHolders(meta, { releaseReplaced: () => undefined });

  const first = await stderrLines(async () => holders.count());
  assert.equal(first.value, 3, 'the good object (2 stripes) and the good part (1) are counted');
  assert.deepEqual(holders.damaged(), { objects: 1, parts: 1 });
  const named = first.lines.filter((l) => l.includes('damaged S3 index records'));
  assert.equal(named.length, 1, first.lines.join('\n'));
  assert.match(named[0]!, /objects bkt\/bad: segments\[0\]\.stripes is "x", not a list/);
  assert.match(named[0]!, /parts upload "upload-bad" part 2: segment is 7, not an object/);

  const second = await stderrLines(async () => holders.count());
  assert.equal(second.value, 3);
  assert.deepEqual(second.lines.filter((l) => l.includes('damaged S3 index records')), [], 'not named again');

  await parts.put(partKey('upload-bad', 3), { segment: { kind: 'cold', stripes: [{ ownerId: 'c' }] } });
  const third = await stderrLines(async () => holders.count());
  assert.deepEqual(holders.damaged(), { objects: 1, parts: 2 });
  const again = third.lines.filter((l) => l.includes('damaged S3 index records'));
  assert.equal(again.length, 1);
  assert.match(again[0]!, /upload "upload-bad" part 3: segment\.stripes\[0\] is not a stripe reference/);
  assert.doesNotMatch(again[0]!, /bkt\/bad|part 2/, 'only the new record');

  assert.throws(
    () => [...holders.list()],
    (err: unknown) => err instanceof DamagedIndexRecord && err instanceof TypeError && /damaged S3 index record \(objects\) bkt\/bad: segments\[0\]\.stripes is "x"/.test(err.message),
  );
});
