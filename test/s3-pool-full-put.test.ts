// An S3 PUT or UploadPart that fills the hot pool mid-write (the pool looked
// roomy when it was chosen; the disk's own ENOSPC at the write) answers 503
// ServiceUnavailable "no space", as a pool already full does, not 500
// InternalError (which the aws cli and the SDKs retry as a server fault). Nothing
// is left half-visible (no object listed, HEAD 404), the space goes back, and
// the same PUT works once the disk has room. Real daemon, @aws-sdk/client-s3;
// the hot pool on a 16 MiB tmpfs (root; unmounted after the test in every
// outcome). Found by session 14's hunt: before, both answered 500.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CreateBucketCommand, CreateMultipartUploadCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, UploadPartCommand, AbortMultipartUploadCommand } from '@aws-sdk/client-s3';
import { TestDaemon } from './helpers/daemon.js';
import { MiB } from './helpers/cold.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { outcome, sdkClient } from './helpers/s3-env.js';
import { smallDisk } from './helpers/small-pool.js';
import fs from 'node:fs';
import path from 'node:path';

test('a PUT and an UploadPart that hit ENOSPC on the hot pool answer 503 no space, leave nothing visible, and work once there is room', async (t) => {
  const disk = await smallDisk(t, 's3-pool-full-', 16 * MiB);
  // No L2 file on the small pool: the whole pool is the objects'.
  const d = await TestDaemon.start({ config: poolsYaml(['hot-0', 'hot', disk.poolDir]) + 'cache: { l2CapacityBytes: 0 }\ndemoVolume: null\n' });
  t.after(() => d.cleanup());
  const creds = JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  const sdk = sdkClient(d.s3Endpoint, creds.keys[0]!.accessKeyId, creds.keys[0]!.secretAccessKey);
  t.after(() => sdk.destroy());
  await sdk.send(new CreateBucketCommand({ Bucket: 'full' }));
  const body = Buffer.alloc(3 * MiB, 0x5c);

  disk.leaveFree(2 * MiB);
  const [status, code] = await outcome(sdk.send(new PutObjectCommand({ Bucket: 'full', Key: 'big', Body: body })));
  assert.deepEqual([status, code], [503, 'ServiceUnavailable'], `PUT on a full disk: ${status} ${code}\n${d.stderr.slice(-2000)}`);
  assert.deepEqual(await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'full', Key: 'big' }))), [404, 'NotFound']);
  assert.equal((await sdk.send(new ListObjectsV2Command({ Bucket: 'full' }))).KeyCount, 0, 'nothing listed');
  assert.ok(disk.freeBytes() >= 2 * MiB - 64 * 1024, `the failed PUT gave its space back (${disk.freeBytes()} free)`);

  const upload = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'full', Key: 'mp' }));
  const part = await outcome(sdk.send(new UploadPartCommand({ Bucket: 'full', Key: 'mp', UploadId: upload.UploadId, PartNumber: 1, Body: Buffer.alloc(5 * MiB, 0x6d) })));
  assert.deepEqual(part, [503, 'ServiceUnavailable'], `UploadPart on a full disk: ${part.join(' ')}`);
  await sdk.send(new AbortMultipartUploadCommand({ Bucket: 'full', Key: 'mp', UploadId: upload.UploadId }));
  assert.match(d.stderr, /s3: request failed.*ENOSPC/, 'the log has the errno');

  disk.freeFiller();
  await sdk.send(new PutObjectCommand({ Bucket: 'full', Key: 'big', Body: body }));
  assert.equal((await sdk.send(new HeadObjectCommand({ Bucket: 'full', Key: 'big' }))).ContentLength, body.length);
});
