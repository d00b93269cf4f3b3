// A hot pool over its quota (EDQUOT from the write; statfs shows room, so the
// pool looks roomy when chosen) answers as a full pool does: an NBD WRITE gets
// NBD_ENOSPC, an S3 PUT 503 ServiceUnavailable "no space". Node 20 names no
// errno 122 (code "Unknown system error -122"), so a check of code 'EDQUOT'
// never matched and both answered as for an I/O fault (EIO, 500 InternalError,
// which S3 clients retry, each refilling the quota). Real daemon, nbdsh and
// @aws-sdk/client-s3; the pool in a btrfs subvolume with a qgroup limit
// (helpers/quota-disk; root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { TestDaemon } from './helpers/daemon.js';
import { api, MiB } from './helpers/cold.js';
import { attachedNbdsh, type AttachedNbdsh } from './helpers/nbd-client.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { outcome, sdkClient } from './helpers/s3-env.js';
import { quotaDisk } from './helpers/quota-disk.js';

test('a hot pool over its quota: NBD WRITE gets ENOSPC and S3 PUT 503 no space, as on a full disk, not EIO / 500', { skip: process.getuid?.() !== 0 && 'mounts a btrfs image (root)' }, async (t) => {
  let nbd: AttachedNbdsh | null = null;
  let d: TestDaemon | null = null;
  // Registered first, so run first: the daemon stops before the pool's file system is unmounted.
  t.after(async () => {
    await nbd?.close();
    await d?.cleanup();
  });
  const disk = quotaDisk(t, 'hot-quota-', 24 * MiB);
  // No L2 file on the pool: the quota is the volume's and the objects'.
  d = await TestDaemon.start({ config: poolsYaml(['hot-q', 'hot', disk.poolDir]) + 'cache: { l2CapacityBytes: 0 }\ndemoVolume: null\n' });
  await api(d, 'POST', '/v1/volumes', { name: 'q', sizeBytes: 64 * MiB, tier: 'hot', pool: 'hot-q' });
  nbd = await attachedNbdsh(d.exportUri('q'));
  disk.setLimit(4 * MiB);

  let answer = '';
  for (let i = 0; i < 16 && !answer.startsWith('error'); i++) answer = await nbd.step(`h.pwrite(b'Q' * ${MiB}, ${i * MiB})`);
  assert.match(answer, /^error: .*No space left on device/, 'an NBD write over the quota');
  assert.ok(disk.freeBytes() > 16 * MiB, 'premise: statfs shows room');

  const creds = JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  const sdk = sdkClient(d.s3Endpoint, creds.keys[0]!.accessKeyId, creds.keys[0]!.secretAccessKey);
  t.after(() => sdk.destroy());
  await sdk.send(new CreateBucketCommand({ Bucket: 'quota' }));
  const body = Buffer.alloc(8 * MiB, 0x71);
  assert.deepEqual(await outcome(sdk.send(new PutObjectCommand({ Bucket: 'quota', Key: 'big', Body: body }))), [503, 'ServiceUnavailable'], 'an S3 PUT over the quota');
  assert.deepEqual(await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'quota', Key: 'big' }))), [404, 'NotFound']);

  // Room back in the quota: both work again.
  disk.setLimit(24 * MiB);
  assert.equal(await nbd.step(`h.pwrite(b'Q' * ${MiB}, 0)`), 'None');
  await sdk.send(new PutObjectCommand({ Bucket: 'quota', Key: 'big', Body: body }));
  assert.equal((await sdk.send(new HeadObjectCommand({ Bucket: 'quota', Key: 'big' }))).ContentLength, body.length);
});
