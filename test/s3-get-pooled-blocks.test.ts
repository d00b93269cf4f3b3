// GET bodies go out from pooled 4 MiB read blocks, the next block read while
// the previous is written: concurrent GETs never see another object's bytes,
// a client that hangs up mid-body releases the object, and a bad chunk in a
// later block cuts the response short instead of sending wrong bytes. Small
// objects read alone take the synchronous fast path: exact bytes, and a
// corrupt one is refused with an error, never served.
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { INLINE_MAX_BYTES } from '../src/dataplane/objects/store.js';
import { signer, startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;

function objFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out: string[] = [];
  for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
  return out;
}

/** Waits for a filesystem condition the daemon reaches asynchronously (no event to wait on), bounded. */
async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function getBytes(env: S3Env, key: string, range?: string): Promise<Buffer> {
  const r = await env.sdk.send(new GetObjectCommand({ Bucket: 'blocks', Key: key, Range: range }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

/** A signed raw GET: resolves with the status, the declared length and the response stream. */
async function rawGet(env: S3Env, key: string): Promise<{ res: http.IncomingMessage; req: http.ClientRequest }> {
  const u = new URL(env.endpoint);
  const toSign = { method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/blocks/${key}`, query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } };
  const s = (await signer(env).sign(toSign as never)) as unknown as { headers: Record<string, string> };
  return new Promise((resolve, reject) => {
    const req = http.get({ host: u.hostname, port: u.port, path: `/blocks/${key}`, headers: s.headers, agent: false }, (res) => resolve({ res, req }));
    req.on('error', reject);
  });
}

describe('s3 GET from pooled read blocks', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3();
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'blocks' }));
  });
  after(async () => {
    await env.cleanup();
  });

  it('concurrent GETs of multi-block objects are byte-exact, whole and ranged across block edges', async () => {
    // 9 MiB + 1: two full 4 MiB blocks and a 1 MiB + 1 byte tail; distinct bytes per object.
    const objects = Array.from({ length: 8 }, (_, i) => ({ key: `multi-${i}`, data: randomBytes(9 * MiB + 1) }));
    await Promise.all(objects.map((o) => env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: o.key, Body: o.data }))));
    // Three rounds of all at once: blocks return to the pool and are reused across objects.
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(objects.map((o) => getBytes(env, o.key)));
      got.forEach((g, i) => assert.ok(g.equals(objects[i]!.data), `round ${round}: ${objects[i]!.key} differs`));
    }
    const d = objects[0]!.data;
    const ranges: [number, number][] = [
      [4 * MiB - 10, 4 * MiB + 10],
      [3 * MiB, 8 * MiB + 1],
      [8 * MiB, 9 * MiB],
      [1, 9 * MiB - 1],
    ];
    const ranged = await Promise.all(ranges.map(([a, b]) => getBytes(env, 'multi-0', `bytes=${a}-${b}`)));
    ranged.forEach((g, i) => assert.ok(g.equals(d.subarray(ranges[i]![0], ranges[i]![1] + 1)), `range ${ranges[i]}`));
  });

  it('a client that hangs up mid-body releases the object: a delete then frees its data file', async () => {
    const data = randomBytes(24 * MiB);
    const filesBefore = new Set(objFiles(env.daemon.dataDir));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: 'big', Body: data }));
    const file = objFiles(env.daemon.dataDir).find((f) => !filesBefore.has(f));
    assert.ok(file, 'the PUT created a data file');
    for (let i = 0; i < 4; i++) {
      const { res, req } = await rawGet(env, 'big');
      assert.equal(res.statusCode, 200);
      const first = await new Promise<Buffer>((resolve) => res.once('data', resolve));
      assert.ok(first.equals(data.subarray(0, first.length)), 'the first bytes are the object');
      req.destroy();
    }
    await env.sdk.send(new DeleteObjectCommand({ Bucket: 'blocks', Key: 'big' }));
    // Freed only once every reader let go; a reader stuck on a dead socket would keep it forever.
    await until('the deleted object data file is removed', () => !fs.existsSync(file));
    const small = randomBytes(5 * MiB);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: 'after', Body: small }));
    assert.ok((await getBytes(env, 'after')).equals(small), 'the daemon still serves exact bytes');
  });

  it('a corrupt chunk in a later block cuts the response short after exact bytes', async () => {
    const data = randomBytes(10 * MiB);
    const filesBefore = new Set(objFiles(env.daemon.dataDir));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: 'rot', Body: data }));
    const file = objFiles(env.daemon.dataDir).find((f) => !filesBefore.has(f))!;
    // Flip a byte in chunk 6, which lives in the second 4 MiB block.
    const at = 6 * MiB + 123;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([data[at]! ^ 0xff]), 0, 1, at);
    fs.closeSync(fd);
    const { res } = await rawGet(env, 'rot');
    assert.equal(res.statusCode, 200, 'the first block is intact, so the response starts');
    assert.equal(Number(res.headers['content-length']), data.length);
    const pieces: Buffer[] = [];
    await new Promise<void>((resolve) => {
      res.on('data', (p: Buffer) => pieces.push(p));
      res.on('close', () => resolve());
      res.on('error', () => resolve());
    });
    const got = Buffer.concat(pieces);
    assert.ok(res.complete === false, 'the response must not complete');
    assert.ok(got.length < 8 * MiB, `no byte of the bad block may be sent (got ${got.length})`);
    assert.ok(got.equals(data.subarray(0, got.length)), 'what was sent is the object prefix');
    // An intact range of the same object is still served.
    assert.ok((await getBytes(env, 'rot', `bytes=0-${4 * MiB - 1}`)).equals(data.subarray(0, 4 * MiB)));
  });

  it('small objects read alone (fast path) are exact whole and ranged; a corrupt one is refused', async () => {
    // Above INLINE_MAX_BYTES (smaller objects live in the index, not in files).
    const sizes = [INLINE_MAX_BYTES + 1, 40 * 1024, 64 * 1024];
    const objs = sizes.map((n) => ({ key: `small-${n}`, data: randomBytes(n) }));
    for (const o of objs) await env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: o.key, Body: o.data }));
    // One at a time, so each GET is the only one in flight.
    for (const o of objs) {
      assert.ok((await getBytes(env, o.key)).equals(o.data), o.key);
      const last = o.data.length - 1;
      const mid = Math.floor(last / 2);
      assert.ok((await getBytes(env, o.key, `bytes=${mid}-${last}`)).equals(o.data.subarray(mid)), `${o.key} range`);
    }
    const data = randomBytes(INLINE_MAX_BYTES + 4096);
    const filesBefore = new Set(objFiles(env.daemon.dataDir));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'blocks', Key: 'small-rot', Body: data }));
    const file = objFiles(env.daemon.dataDir).find((f) => !filesBefore.has(f))!;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([data[100]! ^ 0x01]), 0, 1, 100);
    fs.closeSync(fd);
    const { res } = await rawGet(env, 'small-rot');
    const body = await new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      res.on('data', (p: Buffer) => parts.push(p));
      res.on('end', () => resolve(Buffer.concat(parts)));
    });
    assert.equal(res.statusCode, 500, 'a chunk failing its CRC is an error before any byte');
    assert.match(body.toString('utf8'), /<Code>InternalError<\/Code>/);
    assert.ok(!body.includes(data.subarray(0, 64)), 'no object bytes in the error');
  });
});
