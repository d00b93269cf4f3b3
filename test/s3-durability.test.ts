// Object durability and atomicity on the real daemon: cut-off uploads and
// SIGKILL mid-upload leave nothing visible and no data behind, acknowledged
// writes survive SIGKILL, old versions are freed, corruption is never served.
import { CompleteMultipartUploadCommand, CreateBucketCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { signer, startS3, type S3Env } from './helpers/s3-env.js';

function objFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out: string[] = [];
  for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
  return out.sort();
}

/** Waits for a filesystem condition the daemon reaches asynchronously (no event to wait on), bounded. */
async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function exists(env: S3Env, key: string): Promise<boolean> {
  try {
    await env.sdk.send(new HeadObjectCommand({ Bucket: 'dur', Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

/** Starts a signed PUT that declares `declaredBytes` and sends only `sentBytes`; returns the open request. */
async function partialPut(env: S3Env, key: string, declaredBytes: number, sentBytes: number): Promise<http.ClientRequest> {
  const u = new URL(env.endpoint);
  const toSign = { method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/dur/${key}`, query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(declaredBytes) } };
  const s = (await signer(env).sign(toSign as never)) as unknown as { headers: Record<string, string> };
  const req = http.request({ host: u.hostname, port: u.port, method: 'PUT', path: `/dur/${key}`, headers: s.headers });
  req.on('error', () => undefined); // we cut it off on purpose
  req.write(randomBytes(sentBytes));
  return req;
}

describe('s3 durability and atomicity', () => {
  const envs: S3Env[] = [];
  after(async () => {
    for (const e of envs) await e.cleanup();
  });

  it('an upload cut off mid-body leaves no object and no data file', async () => {
    const env = await startS3();
    envs.push(env);
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'dur' }));
    const before = objFiles(env.daemon.dataDir);
    const req = await partialPut(env, 'cut', 8 * 1024 * 1024, 3 * 1024 * 1024);
    await until('the upload to reach the pool', () => objFiles(env.daemon.dataDir).length > before.length);
    req.destroy();
    await until('the partial data file to be removed', () => objFiles(env.daemon.dataDir).length === before.length);
    assert.equal(await exists(env, 'cut'), false);
    assert.deepEqual(objFiles(env.daemon.dataDir), before);
  });

  it('SIGKILL mid-upload: after restart the key is absent and the partial file is swept', async () => {
    const first = await startS3();
    await first.sdk.send(new CreateBucketCommand({ Bucket: 'dur' }));
    await first.sdk.send(new PutObjectCommand({ Bucket: 'dur', Key: 'cut', Body: 'previous version' }));
    const before = objFiles(first.daemon.dataDir);
    const req = await partialPut(first, 'cut', 8 * 1024 * 1024, 3 * 1024 * 1024);
    await until('the upload to reach the pool', () => objFiles(first.daemon.dataDir).length > before.length);
    await first.daemon.kill();
    req.destroy();
    first.sdk.destroy();
    const second = await startS3({ dataDir: first.daemon.dataDir });
    envs.push(second);
    assert.deepEqual(objFiles(second.daemon.dataDir), before);
    const got = await second.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'cut' }));
    assert.equal(await got.Body!.transformToString(), 'previous version');
  });

  it('acknowledged PUTs, completed multipart objects and open uploads survive SIGKILL', async () => {
    const first = await startS3();
    await first.sdk.send(new CreateBucketCommand({ Bucket: 'dur' }));
    const single = randomBytes(2 * 1024 * 1024 + 1);
    await first.sdk.send(new PutObjectCommand({ Bucket: 'dur', Key: 'single', Body: single, Metadata: { survives: 'yes' }, ContentType: 'application/x-dur' }));
    const partA = randomBytes(5 * 1024 * 1024);
    const partB = randomBytes(1234);
    const { UploadId: done } = await first.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'dur', Key: 'multi' }));
    const a = await first.sdk.send(new UploadPartCommand({ Bucket: 'dur', Key: 'multi', UploadId: done, PartNumber: 1, Body: partA }));
    const b = await first.sdk.send(new UploadPartCommand({ Bucket: 'dur', Key: 'multi', UploadId: done, PartNumber: 2, Body: partB }));
    await first.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'dur', Key: 'multi', UploadId: done, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: a.ETag! }, { PartNumber: 2, ETag: b.ETag! }] } }));
    const { UploadId: open } = await first.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'dur', Key: 'open' }));
    const o1 = await first.sdk.send(new UploadPartCommand({ Bucket: 'dur', Key: 'open', UploadId: open, PartNumber: 1, Body: partB }));
    await first.daemon.kill();
    first.sdk.destroy();

    const second = await startS3({ dataDir: first.daemon.dataDir });
    envs.push(second);
    const s = await second.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'single' }));
    assert.deepEqual(s.Metadata, { survives: 'yes' });
    assert.equal(s.ContentType, 'application/x-dur');
    assert.ok(Buffer.from(await s.Body!.transformToByteArray()).equals(single));
    const m = await second.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'multi' }));
    assert.ok(Buffer.from(await m.Body!.transformToByteArray()).equals(Buffer.concat([partA, partB])));
    await second.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'dur', Key: 'open', UploadId: open, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: o1.ETag! }] } }));
    const o = await second.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'open' }));
    assert.ok(Buffer.from(await o.Body!.transformToByteArray()).equals(partB));
  });

  it('overwrite and delete free the replaced data files', async () => {
    const env = await startS3();
    envs.push(env);
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'dur' }));
    const before = objFiles(env.daemon.dataDir).length;
    await env.sdk.send(new PutObjectCommand({ Bucket: 'dur', Key: 'v', Body: randomBytes(100_000) }));
    const afterFirst = objFiles(env.daemon.dataDir);
    assert.equal(afterFirst.length, before + 1);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'dur', Key: 'v', Body: randomBytes(100_000) }));
    const afterSecond = objFiles(env.daemon.dataDir);
    assert.equal(afterSecond.length, before + 1);
    assert.notDeepEqual(afterSecond, afterFirst, 'an overwrite writes a new file, never in place');
    await env.sdk.send(new DeleteObjectCommand({ Bucket: 'dur', Key: 'v' }));
    assert.equal(objFiles(env.daemon.dataDir).length, before);
  });

  it('a corrupted data file is never served as object data', async () => {
    const env = await startS3();
    envs.push(env);
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'dur' }));
    const before = new Set(objFiles(env.daemon.dataDir));
    const data = randomBytes(3 * 1024 * 1024);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'dur', Key: 'rot', Body: data }));
    const file = objFiles(env.daemon.dataDir).find((f) => !before.has(f))!;
    // Flip one byte in the second 1 MiB chunk.
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 1024 * 1024 + 5);
    b[0] = b[0]! ^ 0xff;
    fs.writeSync(fd, b, 0, 1, 1024 * 1024 + 5);
    fs.closeSync(fd);
    let served: Buffer | undefined;
    try {
      const r = await env.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'rot' }));
      served = Buffer.from(await r.Body!.transformToByteArray());
    } catch {
      served = undefined; // refused or cut short: both are correct
    }
    assert.ok(served === undefined || served.length < data.length, 'a corrupt chunk must not reach the client as a complete body');
    // The intact first chunk is still readable with a range, and the daemon keeps serving.
    const head = await env.sdk.send(new GetObjectCommand({ Bucket: 'dur', Key: 'rot', Range: 'bytes=0-1048575' }));
    assert.ok(Buffer.from(await head.Body!.transformToByteArray()).equals(data.subarray(0, 1048576)));
  });
});
