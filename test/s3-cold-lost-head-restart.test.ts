// A cold object lost beyond parity (3 of 4+2 pools' disks replaced by empty
// ones, not rebuilt) whose replaced disks took new objects since: after a
// daemon restart, HEAD and GetObjectAttributes must still answer as GET does
// (500 InternalError), as they do in the process that saw the replacement
// (review-s3h-cold-lost-reused). Before, the restart forgot which pools were
// replaced (StripeStore.mayHoldStalePlaces is per process): the lost shards'
// places, now the new objects', counted as kept, and HEAD answered 200 with
// the old size and ETag while GET answered 500. The object store now keeps
// each cold pool's disk identity in the index (objects/pool-disks.ts). The
// objects written after the replacement, a multipart one and one written
// before it on pools never replaced stay 200 and read back.
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectAttributesCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, dropCache, loseAndReplacePool, patternBytes } from './helpers/cold.js';
import { outcome, restartS3, startS3HotAndCold } from './helpers/s3-env.js';

test('pools replaced beyond parity and written again, then a restart: HEAD and GetObjectAttributes of the lost cold object answer 500 as GET does; objects written since answer 200', async (t) => {
  const started = Date.now();
  let env = await startS3HotAndCold();
  t.after(() => env.cleanup());
  const body = patternBytes(2 * MiB + 5, 0x79);
  await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'k', Body: body }));
  // A multipart object completed between the replacements: its time is its completion, its part's
  // bytes are older than every replacement (ObjectRecord.partsFromMs).
  const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
  const part = await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId, PartNumber: 1, Body: body }));
  for (const i of [0, 1]) loseAndReplacePool(env.daemon, i);
  // Two of six lost: readable, so the completion publishes it.
  await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } }));
  loseAndReplacePool(env.daemon, 2);
  // New objects fill the replaced pools' new stores from offset 0, over the lost shards' places.
  const news = [0, 1, 2, 3].map((i) => patternBytes(2 * MiB + 5, i));
  for (const [i, b] of news.entries()) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `new-${i}`, Body: b }));
  for (const key of ['k', 'mp']) assert.equal((await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: key }))))[0], 500, `HEAD ${key} before the restart`);

  await env.daemon.kill();
  env = await restartS3(env);
  const sdk = env.sdk;
  await dropCache(env.daemon);
  assert.deepEqual(await outcome(sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'k' })).then((r) => r.Body!.transformToByteArray())), [500, 'InternalError'], 'GET');
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k' }))))[0], 500, 'HEAD answers as GET after the restart');
  assert.deepEqual(await outcome(sdk.send(new GetObjectAttributesCommand({ Bucket: 'cold', Key: 'k', ObjectAttributes: ['ETag', 'ObjectSize'] }))), [500, 'InternalError'], 'GetObjectAttributes');
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'mp' }))))[0], 500, 'HEAD of the multipart object after the restart');
  assert.deepEqual(await outcome(sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'mp' })).then((r) => r.Body!.transformToByteArray())), [500, 'InternalError'], 'GET of the multipart object');
  for (const [i, b] of news.entries()) {
    assert.equal((await sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: `new-${i}` }))).ContentLength, b.length, `HEAD new-${i}`);
    assert.ok(Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: `new-${i}` }))).Body!.transformToByteArray()).equals(b), `GET new-${i}`);
  }
  t.diagnostic(`${Date.now() - started} ms`);
});

test('pools replaced beyond parity while the daemon was down, written again with nothing looking at the lost object, then another restart: HEAD of it answers 500', async (t) => {
  const started = Date.now();
  let env = await startS3HotAndCold();
  t.after(() => env.cleanup());
  const body = patternBytes(2 * MiB + 5, 0x7a);
  await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'k', Body: body }));
  assert.equal(await env.daemon.stop(), 0);
  // The disks swapped while no daemon ran: the next start finds other disks than it recorded.
  for (const i of [0, 1, 2]) loseAndReplacePool(env.daemon, i);
  env = await restartS3(env);
  const news = [0, 1, 2, 3].map((i) => patternBytes(2 * MiB + 5, i + 10));
  for (const [i, b] of news.entries()) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `new-${i}`, Body: b }));
  // No request looks at k before the next restart: only the disks recorded at each start tell it.
  await env.daemon.kill();
  env = await restartS3(env);
  await dropCache(env.daemon);
  assert.equal((await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k' }))))[0], 500, 'HEAD after the second start');
  assert.deepEqual(await outcome(env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'k' })).then((r) => r.Body!.transformToByteArray())), [500, 'InternalError'], 'GET');
  assert.equal((await env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'new-0' }))).ContentLength, news[0]!.length, 'HEAD new-0');
  t.diagnostic(`${Date.now() - started} ms`);
});
