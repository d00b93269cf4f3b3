// The S3 front end driven by @aws-sdk/client-s3: conditional and ranged
// reads, checksummed streaming uploads, multipart rules, listing against a
// model, readers racing overwrites, and a large multipart object byte-exact.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { signer, startS3, type S3Env } from './helpers/s3-env.js';

const md5hex = (b: Buffer) => createHash('md5').update(b).digest('hex');

async function bodyBytes(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

async function status(p: Promise<unknown>): Promise<{ status: number | undefined; name: string }> {
  try {
    await p;
    return { status: 200, name: 'ok' };
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { status: e.$metadata?.httpStatusCode, name: e.name };
  }
}

describe('s3 with @aws-sdk/client-s3', () => {
  let env: S3Env;
  let s3: S3Client;
  before(async () => {
    env = await startS3();
    s3 = env.sdk;
    await s3.send(new CreateBucketCommand({ Bucket: 'sdk' }));
  });
  after(async () => {
    await env.cleanup();
  });

  it('conditional GET/HEAD: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since', async () => {
    const data = Buffer.from('conditional body');
    const put = await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'cond', Body: data }));
    const etag = put.ETag!;
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'sdk', Key: 'cond' }));
    const lastModified = head.LastModified!;
    const get = (extra: Record<string, unknown>) => s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'cond', ...extra })).then(async (r) => bodyBytes(r.Body));
    assert.ok((await get({ IfMatch: etag })).equals(data));
    assert.deepEqual(await status(get({ IfMatch: '"0123456789abcdef0123456789abcdef"' })), { status: 412, name: 'PreconditionFailed' });
    assert.equal((await status(get({ IfNoneMatch: etag }))).status, 304);
    // The 304 itself still carries the version's ETag (RFC 7232 4.1).
    const u = new URL(env.endpoint);
    const req = { method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: '/sdk/cond', query: {}, headers: { host: u.host, 'if-none-match': etag, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } };
    const signedReq = (await signer(env).sign(req as never)) as unknown as { headers: Record<string, string> };
    const { host: _host, ...headers } = signedReq.headers;
    const notModified = await fetch(`${env.endpoint}/sdk/cond`, { headers });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.headers.get('etag'), etag);
    assert.ok((await get({ IfNoneMatch: '"other"' })).equals(data));
    assert.equal((await status(get({ IfModifiedSince: new Date(lastModified.getTime() + 60_000) }))).status, 304);
    assert.ok((await get({ IfModifiedSince: new Date(lastModified.getTime() - 60_000) })).equals(data));
    assert.equal((await status(get({ IfUnmodifiedSince: new Date(lastModified.getTime() - 60_000) }))).status, 412);
    // If-Match that holds wins over a failing If-Unmodified-Since (RFC 7232 order, as S3 does).
    assert.ok((await get({ IfMatch: etag, IfUnmodifiedSince: new Date(lastModified.getTime() - 60_000) })).equals(data));
    assert.equal((await status(s3.send(new HeadObjectCommand({ Bucket: 'sdk', Key: 'cond', IfNoneMatch: etag })))).status, 304);
  });

  it('ranged GETs return exactly the requested bytes across chunk boundaries', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'ranges', Body: data }));
    const cases: [string, number, number][] = [
      ['bytes=0-0', 0, 0],
      ['bytes=1048570-1048590', 1048570, 1048590],
      ['bytes=1048576-', 1048576, data.length - 1],
      ['bytes=-17', data.length - 17, data.length - 1],
      [`bytes=100-${data.length + 1000}`, 100, data.length - 1],
    ];
    for (const [range, start, end] of cases) {
      const r = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'ranges', Range: range }));
      assert.equal(r.ContentRange, `bytes ${start}-${end}/${data.length}`, range);
      assert.equal(r.ContentLength, end - start + 1);
      assert.ok((await bodyBytes(r.Body)).equals(data.subarray(start, end + 1)), range);
    }
    assert.deepEqual(await status(s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'ranges', Range: `bytes=${data.length}-` }))), { status: 416, name: 'InvalidRange' });
  });

  it('streamed uploads with CRC32, CRC32C, SHA1 and SHA256 trailing checksums round-trip', async () => {
    for (const algo of ['CRC32', 'CRC32C', 'SHA1', 'SHA256'] as const) {
      const data = randomBytes(2 * 1024 * 1024 + 5);
      const stream = Readable.from([data.subarray(0, 1000), data.subarray(1000, 1_500_000), data.subarray(1_500_000)]);
      const put = await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: `stream-${algo}`, Body: stream, ContentLength: data.length, ChecksumAlgorithm: algo }));
      assert.equal(put.ETag, `"${md5hex(data)}"`, algo);
      const got = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: `stream-${algo}` }));
      assert.ok((await bodyBytes(got.Body)).equals(data), algo);
    }
  });

  it('Content-MD5 mismatch is BadDigest and leaves the previous version in place', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'md5', Body: 'version one' }));
    const bad = await status(s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'md5', Body: 'version two', ContentMD5: createHash('md5').update('something else').digest('base64') })));
    assert.deepEqual(bad, { status: 400, name: 'BadDigest' });
    const got = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'md5' }));
    assert.equal(await got.Body!.transformToString(), 'version one');
  });

  it('multipart rules: EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload; UploadPartCopy', async () => {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'sdk', Key: 'mpu-rules' }));
    const big = randomBytes(5 * 1024 * 1024);
    const p1 = await s3.send(new UploadPartCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId, PartNumber: 1, Body: Buffer.from('tiny') }));
    const p2 = await s3.send(new UploadPartCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId, PartNumber: 2, Body: big }));
    const complete = (parts: { PartNumber: number; ETag: string }[]) => s3.send(new CompleteMultipartUploadCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId, MultipartUpload: { Parts: parts } }));
    assert.deepEqual(await status(complete([{ PartNumber: 1, ETag: p1.ETag! }, { PartNumber: 2, ETag: p2.ETag! }])), { status: 400, name: 'EntityTooSmall' });
    assert.deepEqual(await status(complete([{ PartNumber: 2, ETag: p2.ETag! }, { PartNumber: 1, ETag: p1.ETag! }])), { status: 400, name: 'InvalidPartOrder' });
    assert.deepEqual(await status(complete([{ PartNumber: 2, ETag: '"00000000000000000000000000000000"' }])), { status: 400, name: 'InvalidPart' });
    assert.deepEqual(await status(complete([{ PartNumber: 3, ETag: p2.ETag! }])), { status: 400, name: 'InvalidPart' });
    // A failed completion changes nothing: the upload is still there and completes properly now.
    await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'copy-src', Body: big }));
    const p1b = await s3.send(new UploadPartCopyCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId, PartNumber: 1, CopySource: 'sdk/copy-src' }));
    assert.equal(p1b.CopyPartResult!.ETag, `"${md5hex(big)}"`);
    await complete([{ PartNumber: 1, ETag: p1b.CopyPartResult!.ETag! }, { PartNumber: 2, ETag: p2.ETag! }]);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'mpu-rules' }));
    assert.ok((await bodyBytes(got.Body)).equals(Buffer.concat([big, big])));
    assert.deepEqual(await status(s3.send(new AbortMultipartUploadCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId }))), { status: 404, name: 'NoSuchUpload' });
    assert.deepEqual(await status(s3.send(new UploadPartCommand({ Bucket: 'sdk', Key: 'mpu-rules', UploadId: 'f'.repeat(32), PartNumber: 1, Body: 'x' }))), { status: 404, name: 'NoSuchUpload' });
  });

  it('ListObjectsV2 and ListObjects pages agree with a model for every prefix, delimiter and page size', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'sdk-list' }));
    const keys = ['a', 'a/b', 'a/b/c', 'a/bc', 'a+b', 'a b', 'a%b', 'ab/', 'b/é', 'b/日本/x', 'b/😀', 'b/z', 'c/d/e/f', 'c/d/g', 'zz', 'é/1', '日本語'];
    for (const k of keys) await s3.send(new PutObjectCommand({ Bucket: 'sdk-list', Key: k, Body: k }));
    const sorted = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    const model = (prefix: string, delimiter: string) => {
      const items: string[] = [];
      for (const k of sorted) {
        if (!k.startsWith(prefix)) continue;
        const i = delimiter ? k.indexOf(delimiter, prefix.length) : -1;
        const item = i >= 0 ? 'P:' + k.slice(0, i + delimiter.length) : 'K:' + k;
        if (items[items.length - 1] !== item) items.push(item);
      }
      return items;
    };
    for (const prefix of ['', 'a', 'a/', 'b/', 'c/d/', 'x']) {
      for (const delimiter of ['', '/', 'b']) {
        for (const pageSize of [1, 2, 5, 1000]) {
          for (const v2 of [true, false]) {
            const seen: string[] = [];
            let token: string | undefined;
            for (let pages = 0; pages < 100; pages++) {
              const r = v2
                ? await s3.send(new ListObjectsV2Command({ Bucket: 'sdk-list', Prefix: prefix, Delimiter: delimiter || undefined, MaxKeys: pageSize, ContinuationToken: token }))
                : await s3.send(new ListObjectsCommand({ Bucket: 'sdk-list', Prefix: prefix, Delimiter: delimiter || undefined, MaxKeys: pageSize, Marker: token }));
              const page = [...(r.Contents ?? []).map((c) => 'K:' + c.Key), ...(r.CommonPrefixes ?? []).map((c) => 'P:' + c.Prefix)];
              page.sort((x, y) => Buffer.compare(Buffer.from(x.slice(2)), Buffer.from(y.slice(2))));
              assert.ok(page.length <= pageSize);
              seen.push(...page);
              if (!r.IsTruncated) break;
              token = v2 ? (r as { NextContinuationToken?: string }).NextContinuationToken : ((r as { NextMarker?: string }).NextMarker ?? r.Contents?.[r.Contents.length - 1]?.Key);
              assert.ok(token, 'a truncated page names where to continue');
            }
            assert.deepEqual(seen, model(prefix, delimiter), `prefix=${prefix} delimiter=${delimiter} pageSize=${pageSize} v2=${v2}`);
          }
        }
      }
    }
  });

  it('a reader keeps getting the old bytes while the object is overwritten and deleted', async () => {
    const oldData = randomBytes(8 * 1024 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'race', Body: oldData }));
    const reading = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'race' }));
    const it = (reading.Body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const first = await it.next();
    const newData = randomBytes(1024);
    await s3.send(new PutObjectCommand({ Bucket: 'sdk', Key: 'race', Body: newData }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'sdk', Key: 'race' }));
    const rest: Buffer[] = [Buffer.from(first.value as Buffer)];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(Buffer.from(r.value as Buffer));
    assert.ok(Buffer.concat(rest).equals(oldData));
    assert.deepEqual(await status(s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'race' }))), { status: 404, name: 'NoSuchKey' });
  });

  it(`a ${process.env.S3_LARGE_OBJECT_MIB ?? 256} MiB object round-trips byte-exact through multipart, streamed both ways`, async () => {
    const totalMiB = Number(process.env.S3_LARGE_OBJECT_MIB ?? 256);
    const partMiB = 16;
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'sdk', Key: 'large' }));
    const whole = createHash('md5');
    const parts: { PartNumber: number; ETag: string }[] = [];
    // Deterministic, incompressible content generated part by part: the test never holds the object.
    let counter = 0;
    const nextPart = (bytes: number) => {
      const out = Buffer.allocUnsafe(bytes);
      for (let off = 0; off < bytes; off += 32) createHash('sha256').update(`large-${counter++}`).digest().copy(out, off);
      return out;
    };
    for (let n = 1; n * partMiB <= totalMiB; n++) {
      const part = nextPart(partMiB * 1024 * 1024);
      whole.update(part);
      const r = await s3.send(new UploadPartCommand({ Bucket: 'sdk', Key: 'large', UploadId, PartNumber: n, Body: part }));
      parts.push({ PartNumber: n, ETag: r.ETag! });
    }
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'sdk', Key: 'large', UploadId, MultipartUpload: { Parts: parts } }));
    const got = await s3.send(new GetObjectCommand({ Bucket: 'sdk', Key: 'large' }));
    assert.equal(got.ContentLength, totalMiB * 1024 * 1024);
    const back = createHash('md5');
    let lengthBytes = 0;
    for await (const c of got.Body as AsyncIterable<Buffer>) {
      back.update(c);
      lengthBytes += c.length;
    }
    assert.equal(lengthBytes, totalMiB * 1024 * 1024);
    assert.equal(back.digest('hex'), whole.digest('hex'));
    // Streaming both ways: the daemon's peak RSS stays well below the object's size.
    const hwmKiB = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${env.daemon.proc.pid}/status`, 'utf8'))![1]);
    assert.ok(hwmKiB * 1024 < Math.max(totalMiB, 256) * 1024 * 1024, `daemon peak RSS ${hwmKiB} KiB`);
  });
});
