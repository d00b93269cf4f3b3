// Review (S3 overwrite / DeleteObjects concurrent with GETs, hot and cold
// buckets, real daemon, @aws-sdk/client-s3): one writer overwrites a key
// with a new version (inline-sized, one hot file / a few stripes, several
// stripes), or deletes it with DeleteObjects, while readers GET it whole
// and by range. Every GET body must be exactly one version (the one its
// ETag names: no torn or mixed bytes, no bytes of a freed version), and
// the writer's own GET after each acknowledged PUT or DeleteObjects sees
// that version, or NoSuchKey (never an older one, also through the cold
// tier's cache). After a SIGKILL the last acknowledged state is there.
// Coverage: passed at beee329.
import { CreateBucketCommand, DeleteObjectsCommand, GetObjectCommand, PutObjectCommand, S3ServiceException } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createColdBucket, sdkClient, startS3, type S3Env } from './helpers/s3-env.js';
import { TestDaemon } from './helpers/daemon.js';

const KiB = 1024;
const SIZES = [3 * KiB, 300 * KiB, 2 * 1024 * KiB + 123];
const VERSIONS = 36;
const READERS = 4;

/** Version v's body: every 8 bytes hold v and the offset, so a torn or shifted body is caught. */
function body(v: number): Buffer {
  const n = SIZES[v % SIZES.length]!;
  const b = Buffer.alloc(n);
  for (let at = 0; at + 8 <= n; at += 8) {
    b.writeUInt32LE(v, at);
    b.writeUInt32LE(at, at + 4);
  }
  b.fill(v & 0xff, n - (n % 8));
  return b;
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const bodies = Array.from({ length: VERSIONS }, (_, v) => body(v));
const byEtag = new Map(bodies.map((b, v) => [md5(b), v]));

function isNoSuchKey(err: unknown): boolean {
  return err instanceof S3ServiceException && err.name === 'NoSuchKey';
}

describe('s3 overwrite and DeleteObjects racing GETs', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3();
    await createColdBucket(env, 'cold');
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'hot' }));
  });
  after(async () => {
    await env.cleanup();
  });

  for (const bucket of ['hot', 'cold']) {
    it(`${bucket} bucket: every GET is exactly one version; after each acknowledged PUT or DeleteObjects the writer reads it`, async () => {
      const key = 'k';
      let stop = false;
      let reads = 0;
      let ranged = 0;
      let missing = 0;
      const reader = async (r: number) => {
        for (let i = 0; !stop; i++) {
          const range = (i + r) % 3 === 0;
          try {
            const got = await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(range ? { Range: 'bytes=1000-2999' } : {}) }));
            const data = Buffer.from(await got.Body!.transformToByteArray());
            const v = byEtag.get(got.ETag!.replaceAll('"', ''));
            assert.ok(v !== undefined, `GET returned an unknown ETag ${got.ETag}`);
            const want = range ? bodies[v]!.subarray(1000, 3000) : bodies[v]!;
            assert.ok(data.equals(want), `GET ${range ? 'range ' : ''}of version ${v} returned other bytes (length ${data.length}, first word ${data.length >= 4 ? data.readUInt32LE(0) : -1})`);
            reads++;
            if (range) ranged++;
          } catch (err) {
            if (!isNoSuchKey(err)) throw err;
            missing++;
          }
        }
      };
      const readers = Array.from({ length: READERS }, (_, r) => reader(r));
      const writerClient = sdkClient(env.endpoint, env.accessKeyId, env.secretAccessKey);
      try {
        for (let v = 0; v < VERSIONS; v++) {
          const del = v % 5 === 4;
          if (del) {
            const out = await writerClient.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: key }, { Key: 'other' }] } }));
            assert.equal(out.Errors?.length ?? 0, 0);
            await assert.rejects(writerClient.send(new GetObjectCommand({ Bucket: bucket, Key: key })), isNoSuchKey, `version ${v - 1} still served after DeleteObjects was acknowledged`);
          } else {
            const put = await writerClient.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bodies[v] }));
            assert.equal(put.ETag?.replaceAll('"', ''), md5(bodies[v]!));
            const got = await writerClient.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
            const data = Buffer.from(await got.Body!.transformToByteArray());
            assert.ok(data.equals(bodies[v]!), `after PUT of version ${v} was acknowledged, GET returned version ${byEtag.get(got.ETag!.replaceAll('"', ''))}`);
          }
        }
      } finally {
        stop = true;
        await Promise.allSettled(readers);
      }
      await Promise.all(readers);
      assert.ok(reads > VERSIONS && ranged > 0 && missing > 0, `reads ${reads}, ranged ${ranged}, NoSuchKey ${missing}`);

      // The last acknowledged state survives a SIGKILL.
      const last = VERSIONS - 1;
      const lastWasDelete = last % 5 === 4;
      const dataDir = env.daemon.dataDir;
      await env.daemon.kill();
      const d = await TestDaemon.start({ dataDir });
      const c = sdkClient(d.s3Endpoint, env.accessKeyId, env.secretAccessKey);
      try {
        if (lastWasDelete) await assert.rejects(c.send(new GetObjectCommand({ Bucket: bucket, Key: key })), isNoSuchKey);
        else {
          const got = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
          assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(bodies[last]!), 'the last acknowledged PUT after SIGKILL');
        }
      } finally {
        c.destroy();
        await d.stop();
      }
      // The next case runs on a fresh daemon over the same data dir.
      const again = await startS3({ dataDir });
      env.sdk.destroy();
      fs.rmSync(env.home, { recursive: true, force: true });
      env = again;
    });
  }
});
