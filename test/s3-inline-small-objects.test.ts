// Small objects of hot buckets (up to INLINE_MAX_BYTES) live inside their
// index record: no data file, exact bytes whole, ranged and copied, the ETag
// is their MD5, overwrite and delete behave, and an acknowledged one
// survives SIGKILL.
import { CopyObjectCommand, CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { INLINE_MAX_BYTES } from '../src/dataplane/objects/store.js';
import { startS3, type S3Env } from './helpers/s3-env.js';

function objFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out: string[] = [];
  for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
  return out.sort();
}

async function getBytes(env: S3Env, key: string, range?: string): Promise<Buffer> {
  const r = await env.sdk.send(new GetObjectCommand({ Bucket: 'inl', Key: key, Range: range }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function missing(env: S3Env, key: string): Promise<boolean> {
  try {
    await env.sdk.send(new HeadObjectCommand({ Bucket: 'inl', Key: key }));
    return false;
  } catch (err) {
    return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;
  }
}

describe('s3 small objects stored inline in the index', () => {
  const envs: S3Env[] = [];
  after(async () => {
    for (const e of envs) await e.cleanup();
  });

  it('no data file; exact whole, ranged, copied; ETag is the MD5; overwrite and delete', async () => {
    const env = await startS3();
    envs.push(env);
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'inl' }));
    const files = objFiles(env.daemon.dataDir);
    const data = randomBytes(4096);
    const put = await env.sdk.send(new PutObjectCommand({ Bucket: 'inl', Key: 'a', Body: data, Metadata: { k: 'v' } }));
    assert.equal(put.ETag, `"${createHash('md5').update(data).digest('hex')}"`);
    assert.deepEqual(objFiles(env.daemon.dataDir), files, 'an inline object has no data file');
    assert.ok((await getBytes(env, 'a')).equals(data));
    assert.ok((await getBytes(env, 'a', 'bytes=100-199')).equals(data.subarray(100, 200)));
    const head = await env.sdk.send(new HeadObjectCommand({ Bucket: 'inl', Key: 'a' }));
    assert.equal(head.ContentLength, 4096);
    assert.equal(head.Metadata?.k, 'v');
    await env.sdk.send(new CopyObjectCommand({ Bucket: 'inl', Key: 'a-copy', CopySource: 'inl/a' }));
    assert.ok((await getBytes(env, 'a-copy')).equals(data));
    const empty = await env.sdk.send(new PutObjectCommand({ Bucket: 'inl', Key: 'empty', Body: Buffer.alloc(0) }));
    assert.equal(empty.ETag, `"${createHash('md5').digest('hex')}"`);
    assert.equal((await getBytes(env, 'empty')).length, 0);
    const second = randomBytes(INLINE_MAX_BYTES);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'inl', Key: 'a', Body: second }));
    assert.ok((await getBytes(env, 'a')).equals(second), 'an overwrite replaces the bytes');
    await env.sdk.send(new DeleteObjectCommand({ Bucket: 'inl', Key: 'a' }));
    assert.equal(await missing(env, 'a'), true);
    // One byte over the limit goes to a data file again.
    const big = randomBytes(INLINE_MAX_BYTES + 1);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'inl', Key: 'big', Body: big }));
    assert.equal(objFiles(env.daemon.dataDir).length, files.length + 1);
    assert.ok((await getBytes(env, 'big')).equals(big));
  });

  it('an acknowledged inline PUT survives SIGKILL', async () => {
    const first = await startS3();
    await first.sdk.send(new CreateBucketCommand({ Bucket: 'inl' }));
    const data = randomBytes(3000);
    await first.sdk.send(new PutObjectCommand({ Bucket: 'inl', Key: 'k', Body: data }));
    await first.daemon.kill();
    first.sdk.destroy();
    const second = await startS3({ dataDir: first.daemon.dataDir });
    envs.push(second);
    assert.ok((await getBytes(second, 'k')).equals(data));
  });
});
