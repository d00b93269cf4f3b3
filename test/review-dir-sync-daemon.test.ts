// Review of a0f0a60 (syncNewEntry: a new file's directory synced by path and
// checked against a replaced pool directory), through the real daemon: no
// false positive when the pool directories are symlinks and the data
// directory is given as a relative path (hot <-> warm moves create their
// target file through syncNewEntry, S3 PUTs their segment file); and an S3 PUT
// to a hot pool whose directory was replaced under the daemon is refused as
// 503 ServiceUnavailable (PoolOffline), not a 500, the daemon carrying on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListBucketsCommand, PutObjectCommand, S3ServiceException } from '@aws-sdk/client-s3';
import { createVolume, nbdcopyIn, nbdcopyOut, randomFile } from './helpers/control-loop.js';
import { TestDaemon } from './helpers/daemon.js';
import { migrate, startWarmDaemon, volumeFile } from './helpers/hot-warm.js';
import { sdkClient } from './helpers/s3-env.js';

const MiB = 1024 * 1024;

function s3(d: TestDaemon) {
  const creds = JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  return sdkClient(d.s3Endpoint, creds.keys[0]!.accessKeyId, creds.keys[0]!.secretAccessKey);
}

async function getBytes(client: ReturnType<typeof s3>, bucket: string, key: string): Promise<Buffer> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

test('pool directories that are symlinks, data directory given relative: hot -> warm -> hot moves and S3 PUTs succeed (no false PoolOffline), byte-exact after a restart', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-dirsync-link-'));
  const dataDir = path.join(root, 'data');
  // The pools live elsewhere; pools/<name> are symlinks to them.
  fs.mkdirSync(path.join(dataDir, 'pools'), { recursive: true });
  for (const name of ['hot-0', 'warm-0']) {
    fs.mkdirSync(path.join(root, 'real', name), { recursive: true });
    fs.symlinkSync(path.join(root, 'real', name), path.join(dataDir, 'pools', name));
  }
  const relative = path.relative(process.cwd(), dataDir);
  assert.ok(!path.isAbsolute(relative));
  let d = await startWarmDaemon({ dataDir: relative });
  let client = s3(d);
  t.after(async () => {
    client.destroy();
    await d.kill();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const rec = await createVolume(d, 'v', 8 * MiB);
  const source = path.join(root, 'src.bin');
  randomFile(source, 8 * MiB);
  const want = fs.readFileSync(source);
  nbdcopyIn(source, d.exportUri('v'));
  const scratch = path.join(root, 'out.bin');
  for (const [to, pool] of [['warm', 'warm-0'], ['hot', 'hot-0']] as const) {
    const done = await migrate(d, 'v', to);
    assert.equal(done.phase, 'Done');
    assert.ok(fs.existsSync(path.join(root, 'real', pool, 'volumes', `${rec.id}.dat`)), `the ${pool} file is in the symlinked directory`);
    assert.ok(nbdcopyOut(d.exportUri('v'), scratch, 8 * MiB).equals(want), `bytes after the move to ${to}`);
  }
  await client.send(new CreateBucketCommand({ Bucket: 'bkt' }));
  const small = crypto.randomBytes(300 * 1024);
  const large = crypto.randomBytes(3 * MiB);
  await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'small', Body: small }));
  await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'large', Body: large }));
  assert.ok((await getBytes(client, 'bkt', 'small')).equals(small));
  assert.ok((await getBytes(client, 'bkt', 'large')).equals(large));
  // Restart on the same (relative) data directory.
  client.destroy();
  await d.kill();
  d = await TestDaemon.start({ dataDir: relative });
  client = s3(d);
  assert.ok(nbdcopyOut(d.exportUri('v'), scratch, 8 * MiB).equals(want), 'volume bytes after a restart');
  assert.ok((await getBytes(client, 'bkt', 'small')).equals(small), 'small object after a restart');
  assert.ok((await getBytes(client, 'bkt', 'large')).equals(large), 'large object after a restart');
  assert.ok(fs.existsSync(volumeFile(d, 'hot-0', rec.id)));
});

test('S3 PUT to a hot pool whose directory was replaced under the daemon: 503 ServiceUnavailable (not 500), nothing indexed, the daemon carries on; put back, PUTs work again', async (t) => {
  const d = await startWarmDaemon();
  const client = s3(d);
  t.after(async () => {
    client.destroy();
    await d.cleanup();
  });
  await client.send(new CreateBucketCommand({ Bucket: 'bkt' }));
  const before = crypto.randomBytes(200 * 1024);
  await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'before', Body: before }));
  const hot = path.join(d.dataDir, 'pools', 'hot-0');
  // The operator swaps the pool directory for an empty one.
  fs.renameSync(hot, `${hot}.old`);
  fs.mkdirSync(hot);
  for (const [key, lengthBytes] of [['small', 200 * 1024], ['large', 3 * MiB]] as const) {
    const err = await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: key, Body: crypto.randomBytes(lengthBytes) })).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof S3ServiceException, `PUT ${key} into a replaced pool directory succeeded`);
    assert.equal(err.$metadata.httpStatusCode, 503, `PUT ${key}: ${err.name} ${err.message}`);
    assert.equal(err.name, 'ServiceUnavailable');
    const got = await client.send(new GetObjectCommand({ Bucket: 'bkt', Key: key })).then(
      () => 200,
      (e: S3ServiceException) => e.$metadata.httpStatusCode,
    );
    assert.equal(got, 404, `${key} is not indexed`);
  }
  // The daemon carries on.
  const buckets = await client.send(new ListBucketsCommand({}));
  assert.deepEqual(buckets.Buckets?.map((b) => b.Name), ['bkt']);
  fs.rmSync(hot, { recursive: true });
  fs.renameSync(`${hot}.old`, hot);
  const after = crypto.randomBytes(200 * 1024);
  await client.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'after', Body: after }));
  assert.ok((await getBytes(client, 'bkt', 'after')).equals(after));
  assert.ok((await getBytes(client, 'bkt', 'before')).equals(before));
  assert.equal(d.proc.exitCode, null, 'the daemon is still running');
});
