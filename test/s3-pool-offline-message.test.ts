// An S3 client told that a pool is unavailable (503 ServiceUnavailable) is
// not told the host's paths: the pool and the kind of failure, as NBD
// clients are (nbd-export-unavailable). The path goes to the daemon log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, PutObjectCommand, S3ServiceException } from '@aws-sdk/client-s3';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { sdkClient } from './helpers/s3-env.js';

test('S3 PUT to a hot pool whose directory was replaced (or removed) under the daemon: 503 naming the pool, no host path', async (t) => {
  const d = await startWarmDaemon();
  const creds = JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  const client = sdkClient(d.s3Endpoint, creds.keys[0]!.accessKeyId, creds.keys[0]!.secretAccessKey);
  t.after(async () => {
    client.destroy();
    await d.cleanup();
  });
  await client.send(new CreateBucketCommand({ Bucket: 'bkt' }));
  await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'before', Body: crypto.randomBytes(4096) }));
  const hot = path.join(d.dataDir, 'pools', 'hot-0');
  fs.renameSync(hot, `${hot}.old`);
  fs.mkdirSync(hot);
  for (const [key, lengthBytes] of [['small', 200 * 1024], ['large', 3 * 1024 * 1024]] as const) {
    const err = await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: key, Body: crypto.randomBytes(lengthBytes) })).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof S3ServiceException, `PUT ${key} succeeded`);
    assert.equal(err.$metadata.httpStatusCode, 503);
    assert.equal(err.name, 'ServiceUnavailable');
    assert.match(err.message, /hot-0/);
    assert.ok(!err.message.includes(d.dataDir), `PUT ${key}: ${err.message}`);
  }
});
