// Cold buckets: objects stored as erasure-coded stripes through the cold
// tier's StripeStore, read back byte-exact, including after a cold pool
// loses its shards (degraded reads repaired inline).
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createColdBucket, startS3, type S3Env } from './helpers/s3-env.js';

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.join(d.parentPath, d.name));
}

describe('s3 cold buckets', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3();
    // The tier is chosen at bucket creation with x-couchestor-tier (signed like any header).
    await createColdBucket(env, 'cold');
  });
  after(async () => {
    await env.cleanup();
  });

  it('objects in a cold bucket are stripes on the cold pools, not hot data files, and read back byte-exact', async () => {
    const hotBefore = filesUnder(path.join(env.daemon.dataDir, 'pools', 'hot-0', 'objects')).length;
    const data = randomBytes(3 * 1024 * 1024 + 333);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'obj', Body: data }));
    assert.equal(filesUnder(path.join(env.daemon.dataDir, 'pools', 'hot-0', 'objects')).length, hotBefore);
    const coldFiles = [0, 1, 2, 3, 4, 5].map((i) => filesUnder(path.join(env.daemon.dataDir, 'pools', `cold-${i}`)).length);
    assert.ok(coldFiles.every((n) => n > 0), `every cold pool holds shards: ${coldFiles}`);
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'obj' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(data));
    const ranged = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'obj', Range: 'bytes=1048000-2097500' }));
    assert.ok(Buffer.from(await ranged.Body!.transformToByteArray()).equals(data.subarray(1048000, 2097501)));
  });

  it('multipart objects in a cold bucket round-trip byte-exact', async () => {
    const parts = [randomBytes(5 * 1024 * 1024 + 7), randomBytes(100_000)];
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
    const etags: string[] = [];
    for (const [i, p] of parts.entries()) etags.push((await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId, PartNumber: i + 1, Body: p }))).ETag!);
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'mp' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(Buffer.concat(parts)));
  });

  it('a cold object stays readable after one cold pool loses all its shards', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 1);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'degraded', Body: data }));
    for (const f of filesUnder(path.join(env.daemon.dataDir, 'pools', 'cold-2'))) fs.truncateSync(f, 0);
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'degraded' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(data));
  });
});
