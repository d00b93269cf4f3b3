// Review of 1a1b25a/89a4e1a: a hot object record whose segment names its file
// with a damaged field (fileId not an integer) must count as damaged, like a
// garbled kind: the start-up sweep keeps every hot object file while one is
// there. Before, recordDamage passed any segment of kind "hot", open() put the
// damaged fileId in its referenced set, and the sweep DELETED the object's
// file (its id matched nothing referenced): bytes an operator could still
// recover, gone at a restart. GET of the key answers the damage (500
// InternalError naming it), not a TypeError's "try again".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import os from 'node:os';
import { ColdObjectHolders, DamagedIndexRecord, recordDamage } from '../src/dataplane/objects/cold-holders.js';
import { hotFiles, killAndRemove, putKeptAndVictim, rewriteRecord } from './helpers/damaged-record.js';
import { restartS3, startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const BUCKET = 'hotfields';

test('recordDamage: a hot segment without an integer fileId, a string pool or a numeric length, an inline one without bytes, a cold one relabelled hot or inline are damaged; every segment a writer makes is not', () => {
  const hot = { kind: 'hot', pool: 'hot-0', fileId: 12, lengthBytes: 5, chunkCrc32c: [1] };
  assert.equal(recordDamage({ segments: [hot] }, 'segments'), null);
  assert.equal(recordDamage({ segments: [{ ...hot, lengthBytes: 0, chunkCrc32c: [] }] }, 'segments'), null, 'an empty hot object');
  assert.equal(recordDamage({ segments: [] }, 'segments'), null);
  assert.equal(recordDamage({ segments: [{ kind: 'inline', lengthBytes: 0, crc32c: 0, bytes: Buffer.alloc(0) }] }, 'segments'), null);
  assert.equal(recordDamage({ segment: { kind: 'cold', fileId: 1, lengthBytes: 0, chunkBytes: 1, stripes: [] } }, 'segment'), null);
  assert.match(recordDamage({ segments: [{ ...hot, fileId: '12' }] }, 'segments') ?? '', /fileId/);
  assert.match(recordDamage({ segments: [{ ...hot, fileId: null }] }, 'segments') ?? '', /fileId/);
  assert.match(recordDamage({ segments: [{ ...hot, pool: 3 }] }, 'segments') ?? '', /pool/);
  assert.match(recordDamage({ segment: { ...hot, lengthBytes: 'x' } }, 'segment') ?? '', /lengthBytes/);
  assert.match(recordDamage({ segments: [{ kind: 'inline', lengthBytes: null, bytes: Buffer.alloc(0) }] }, 'segments') ?? '', /lengthBytes/);
  // A cold segment whose kind flipped to another valid kind: its stripes would look unreferenced (compaction).
  const cold = { kind: 'cold', fileId: 3, lengthBytes: 5, chunkBytes: 1048576, stripes: [{ ownerId: 'ab', chunkIndex: 0, generation: 1, dataShards: 4, parityShards: 2, shards: [] }] };
  assert.equal(recordDamage({ segments: [cold] }, 'segments'), null);
  assert.notEqual(recordDamage({ segments: [{ ...cold, kind: 'hot' }] }, 'segments'), null, 'cold relabelled hot');
  assert.notEqual(recordDamage({ segment: { ...cold, kind: 'inline' } }, 'segment'), null, 'cold relabelled inline');
});

test("the strict list (pool rebuild) is not stopped by a hot segment's damaged fileId (it hides no cold stripe), still by a cold segment relabelled hot; count() counts both", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-damaged-hot-list-'));
  const meta = MetaStore.open(dir);
  t.after(async () => {
    await meta.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const key = (k: string) => Buffer.concat([Buffer.from([1, 0, 0, 0, 9]), Buffer.from(k)]);
  const ref = { ownerId: 'ab', chunkIndex: 0, generation: 1, dataShards: 4, parityShards: 2, stripeSizeBytes: 1, dataLengthBytes: 1, shards: [] };
  const cold = { kind: 'cold', fileId: 3, lengthBytes: 1, chunkBytes: 1, stripes: [ref] };
  await objects.put(key('cold'), { key: 'cold', segments: [cold] });
  await objects.put(key('hot'), { key: 'hot', segments: [{ kind: 'hot', pool: 'hot-0', fileId: '#4', lengthBytes: 1, chunkCrc32c: [0] }] });
  const holders = new ColdObjectHolders(meta, { releaseReplaced: () => undefined });
  assert.deepEqual([...holders.list()].map(([, r]) => r.ownerId), ['ab'], 'the cold stripe listed, the hot record no stop');
  assert.equal(holders.count(), 1);
  assert.deepEqual(holders.damaged(), { objects: 1, parts: 0 }, 'counted as damaged all the same');
  await objects.put(key('relabelled'), { key: 'relabelled', segments: [{ ...cold, kind: 'hot' }] });
  assert.throws(() => [...holders.list()], DamagedIndexRecord);
});

test('a hot object record whose fileId is damaged: the restart sweeps no hot file, GET answers the damage', async (t) => {
  let env: S3Env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(() => killAndRemove(env, dataDir));
  const kept = await putKeptAndVictim(env, BUCKET, MiB);
  assert.equal(await env.daemon.stop(), 0);
  const before = hotFiles(dataDir);
  assert.equal(before.size, 2, 'one hot file per object');

  type Rec = { key: string; segments: { kind: string; fileId?: unknown }[] };
  await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'victim', (v) => {
    assert.equal(v.segments[0]!.kind, 'hot');
    // Damaged: the segment's fileId is no longer a number (its kind is intact).
    return { ...v, segments: [{ ...v.segments[0]!, fileId: `#${String(v.segments[0]!.fileId)}` }] };
  });

  env = await restartS3(env);
  const after = hotFiles(dataDir);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'no hot file swept');
  for (const [f, bytes] of before) assert.ok(after.get(f)!.equals(bytes), `${f} unchanged`);
  assert.match(env.daemon.stderr, /damaged index records; unreferenced segment files are kept/);
  await assert.rejects(env.sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'victim' })), (err: { $metadata?: { httpStatusCode?: number }; message?: string }) => {
    assert.equal(err.$metadata?.httpStatusCode, 500);
    assert.match(err.message ?? '', /index record of hotfields\/victim is damaged \(segments\[0\]\.fileId/);
    return true;
  });
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(kept), 'the other object reads back');
});
