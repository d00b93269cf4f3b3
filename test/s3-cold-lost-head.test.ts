// A cold object with more than m shards of a stripe gone (their pools lost:
// directory gone, or replaced by an empty disk not yet rebuilt) answers HEAD,
// GetObjectAttributes, CopyObject and UploadPartCopy from it as GET does: 500
// InternalError naming the loss, never 200 with the old size and ETag. What
// the daemon knows without reading a shard decides it (pools offline, the
// extents of each pool's current segment store). An object with at most m
// shards gone per stripe still answers 200 (it reads degraded). Completing a
// multipart upload with a cold part in that state is 400 InvalidPart naming
// the part, the upload kept (published, every GET would answer 500).
import { CompleteMultipartUploadCommand, CopyObjectCommand, CreateMultipartUploadCommand, ListPartsCommand, UploadPartCommand, GetObjectAttributesCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, UploadPartCopyCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, dropCache, losePool, loseAndReplacePool, patternBytes } from './helpers/cold.js';
import { outcome, startS3HotAndCold } from './helpers/s3-env.js';

test('cold object with more than m shards of a stripe gone: HEAD, GetObjectAttributes and copies answer 500 as GET does; with m gone, 200', async (t) => {
  const started = Date.now();
  const env = await startS3HotAndCold();
  t.after(() => env.cleanup());
  const sdk = env.sdk;
  const body = patternBytes(3 * MiB + 5, 0x5c1);
  await sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'k', Body: body }));
  // A cold multipart upload whose one part will lose 3 shards of its stripes too.
  const { UploadId: coldUpload } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
  const { ETag: partEtag } = await sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId: coldUpload, PartNumber: 1, Body: body.subarray(0, MiB + 3) }));
  const d = env.daemon;

  // 4+2: two pools lost (one gone, one replaced by an empty disk) is still readable.
  losePool(d, 0);
  loseAndReplacePool(d, 1);
  const head = await sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k' }));
  assert.equal(head.ContentLength, body.length, 'm shards gone: HEAD 200');
  const got = Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'k' }))).Body!.transformToByteArray());
  assert.ok(got.equals(body), 'm shards gone: GET reads degraded');

  // A third pool gone: every stripe has lost 3 of 6 shards.
  loseAndReplacePool(d, 2);
  // Nothing of it left in the stripe cache: a cold read reads shards.
  await dropCache(d);
  assert.deepEqual(await outcome(sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'k' }))), [500, 'InternalError'], 'GET');
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k' }))))[0], 500, 'HEAD answers as GET');
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k', Range: 'bytes=0-0' }))))[0], 500, 'ranged HEAD');
  const said = await sdk.send(new GetObjectAttributesCommand({ Bucket: 'cold', Key: 'k', ObjectAttributes: ['ETag', 'ObjectSize'] })).then(
    () => assert.fail('GetObjectAttributes answered 200'),
    (err: Error & { $metadata: { httpStatusCode?: number } }) => `${err.$metadata.httpStatusCode} ${err.name}: ${err.message}`,
  );
  assert.match(said, /^500 InternalError: stored data is damaged: stripe 0 of the object lost 3 of 6 shards \(can repair 2\): on pools /, 'GetObjectAttributes names the loss');
  for (const pool of ['cold-0 (offline)', 'cold-1 (replaced, not rebuilt)', 'cold-2 (replaced, not rebuilt)']) assert.ok(said.includes(pool), `${said} names ${pool}`);
  assert.deepEqual(await outcome(sdk.send(new CopyObjectCommand({ Bucket: 'hot', Key: 'copy', CopySource: 'cold/k' }))), [500, 'InternalError'], 'CopyObject');
  assert.deepEqual((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'hot', Key: 'copy' }))))[0], 404, 'no copy written');
  const { UploadId } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'hot', Key: 'mp' }));
  assert.deepEqual(await outcome(sdk.send(new UploadPartCopyCommand({ Bucket: 'hot', Key: 'mp', UploadId, PartNumber: 1, CopySource: 'cold/k' }))), [500, 'InternalError'], 'UploadPartCopy');
  // Completing with that part: 400 InvalidPart naming it, nothing published, the upload kept.
  const completed = await sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId: coldUpload, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: partEtag }] } })).then(
    () => assert.fail('CompleteMultipartUpload answered 200'),
    (err: Error & { $metadata: { httpStatusCode?: number } }) => `${err.$metadata.httpStatusCode} ${err.name}: ${err.message}`,
  );
  assert.match(completed, /^400 InvalidPart: .*part 1's data cannot be read: stripe 0 of the object lost 3 of 6 shards/);
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'mp' }))))[0], 404, 'nothing published');
  assert.equal((await sdk.send(new ListPartsCommand({ Bucket: 'cold', Key: 'mp', UploadId: coldUpload }))).Parts?.length, 1, 'the upload kept');
  t.diagnostic(`${Date.now() - started} ms`);
});
