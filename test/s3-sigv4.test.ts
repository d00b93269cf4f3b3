// SigV4 verification: AWS's published examples as known answers, then live
// requests signed by @smithy/signature-v4 (the SDK's signer) that are bad in
// one way each: unsigned, stale, expired, tampered body, bad chunk signature,
// bad trailer checksum, oversized headers, malformed XML.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { crc32 } from '@node-rs/crc32';
import { S3Error } from '../src/dataplane/s3/errors.js';
import { verifiedBody, verifyRequest } from '../src/dataplane/s3/sigv4.js';
import { errorCode, signedChunkedBody, signer, startS3, type S3Env } from './helpers/s3-env.js';

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const EXAMPLE_NOW = Date.UTC(2013, 4, 24, 0, 0, 30);
const secretFor = (id: string) => (id === AKID ? SECRET : undefined);
const sha256hex = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

async function* from(pieces: Buffer[]): AsyncGenerator<Buffer> {
  yield* pieces;
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return Buffer.concat(out);
}

describe('sigv4 known answers from the AWS S3 documentation', () => {
  it('GET object with Range (header auth)', () => {
    const r = verifyRequest(
      {
        method: 'GET',
        url: '/test.txt',
        headers: {
          host: 'examplebucket.s3.amazonaws.com',
          range: 'bytes=0-9',
          'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
          'x-amz-date': '20130524T000000Z',
          authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41`,
        },
      },
      secretFor,
      EXAMPLE_NOW,
    );
    assert.equal(r.accessKeyId, AKID);
    assert.deepEqual(r.payload, { kind: 'sha256', hex: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' });
  });

  it('PUT object whose key needs encoding ($), and a one-character change is refused', () => {
    const req = (sig: string) => ({
      method: 'PUT',
      url: '/test$file.text',
      headers: {
        host: 'examplebucket.s3.amazonaws.com',
        date: 'Fri, 24 May 2013 00:00:00 GMT',
        'x-amz-date': '20130524T000000Z',
        'x-amz-storage-class': 'REDUCED_REDUNDANCY',
        'x-amz-content-sha256': '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072',
        authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=${sig}`,
      },
    });
    assert.equal(verifyRequest(req('98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd'), secretFor, EXAMPLE_NOW).accessKeyId, AKID);
    assert.throws(() => verifyRequest(req('98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108be'), secretFor, EXAMPLE_NOW), (e: S3Error) => e.code === 'SignatureDoesNotMatch');
  });

  it('GET bucket with query parameters (max-keys, prefix)', () => {
    const r = verifyRequest(
      {
        method: 'GET',
        url: '/?max-keys=2&prefix=J',
        headers: {
          host: 'examplebucket.s3.amazonaws.com',
          'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
          'x-amz-date': '20130524T000000Z',
          authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7`,
        },
      },
      secretFor,
      EXAMPLE_NOW,
    );
    assert.equal(r.accessKeyId, AKID);
  });

  it('presigned URL: valid within X-Amz-Expires, refused after', () => {
    const url =
      '/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
    const req = { method: 'GET', url, headers: { host: 'examplebucket.s3.amazonaws.com' } };
    assert.deepEqual(verifyRequest(req, secretFor, EXAMPLE_NOW).payload, { kind: 'unsigned' });
    assert.throws(() => verifyRequest(req, secretFor, EXAMPLE_NOW + 86_401_000), (e: S3Error) => e.code === 'AccessDenied' && /expired/.test(e.message));
  });

  it('aws-chunked upload with chunk signatures (66560 bytes in 64 KiB + 1 KiB chunks)', async () => {
    const seed = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
    const auth = verifyRequest(
      {
        method: 'PUT',
        url: '/examplebucket/chunkObject.txt',
        headers: {
          host: 's3.amazonaws.com',
          'x-amz-date': '20130524T000000Z',
          'x-amz-storage-class': 'REDUCED_REDUNDANCY',
          'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
          'content-encoding': 'aws-chunked',
          'x-amz-decoded-content-length': '66560',
          'content-length': '66824',
          authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=${seed}`,
        },
      },
      secretFor,
      EXAMPLE_NOW,
    );
    assert.equal(auth.payload.kind, 'chunked');
    const body = (sig1: string) =>
      Buffer.concat([
        Buffer.from(`10000;chunk-signature=${sig1}\r\n`),
        Buffer.alloc(65536, 'a'),
        Buffer.from('\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n'),
        Buffer.alloc(1024, 'a'),
        Buffer.from('\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n'),
      ]);
    const good = body('ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648');
    assert.equal(good.length, 66824);
    // Delivered in awkward pieces: the decoder must not care where reads split.
    const pieces = (b: Buffer) => [b.subarray(0, 7), b.subarray(7, 90), b.subarray(90, 40000), b.subarray(40000)];
    // The request's own x-amz-decoded-content-length (required for aws-chunked bodies).
    const headers = { 'x-amz-decoded-content-length': '66560' };
    const decoded = await collect(verifiedBody(from(pieces(good)), auth.payload, headers));
    assert.ok(decoded.equals(Buffer.alloc(66560, 'a')));
    const bad = body('ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288649');
    await assert.rejects(collect(verifiedBody(from(pieces(bad)), auth.payload, headers)), (e: S3Error) => e.code === 'SignatureDoesNotMatch');
    await assert.rejects(collect(verifiedBody(from([good.subarray(0, 50000)]), auth.payload, headers)), (e: S3Error) => e.code === 'IncompleteBody');
    // Without it the body is refused before a byte is decoded.
    await assert.rejects(collect(verifiedBody(from(pieces(good)), auth.payload, {})), (e: S3Error) => e.code === 'MissingContentLength' && e.status === 411);
  });
});

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function send(env: S3Env, method: string, pathAndQuery: string, headers: Record<string, string>, body?: Buffer | Buffer[]): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(env.endpoint);
    const req = http.request({ host: u.hostname, port: u.port, method, path: pathAndQuery, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    for (const b of Array.isArray(body) ? body : body ? [body] : []) req.write(b);
    req.end();
  });
}

/** Signs with the SDK's own signer, then returns headers ready for `send`. */
async function signed(env: S3Env, method: string, path: string, query: Record<string, string>, headers: Record<string, string>, opts: { secret?: string; date?: Date } = {}): Promise<{ url: string; headers: Record<string, string> }> {
  const u = new URL(env.endpoint);
  const req = { method, protocol: 'http:', hostname: u.hostname, port: Number(u.port), path, query, headers: { host: u.host, ...headers } };
  const s = (await signer(env, opts.secret).sign(req as never, { signingDate: opts.date })) as unknown as { headers: Record<string, string> };
  const qs = new URLSearchParams(query).toString().replace(/\+/g, '%20');
  return { url: qs ? `${path}?${qs}` : path, headers: s.headers as Record<string, string> };
}

describe('sigv4 on the live endpoint', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3();
    await send(env, 'PUT', '/sig', (await signed(env, 'PUT', '/sig', {}, { 'x-amz-content-sha256': sha256hex('') })).headers);
  });
  after(async () => {
    await env.cleanup();
  });

  it('an unsigned request is refused with AccessDenied XML', async () => {
    const r = await send(env, 'GET', '/', {});
    assert.equal(r.status, 403);
    assert.equal(errorCode(r.body), 'AccessDenied');
    assert.match(r.headers['content-type'] ?? '', /xml/);
  });

  it('a request signed with the wrong secret or an hour old is refused', async () => {
    const wrong = await signed(env, 'GET', '/', {}, { 'x-amz-content-sha256': sha256hex('') }, { secret: 'not-the-secret-not-the-secret' });
    const r1 = await send(env, 'GET', wrong.url, wrong.headers);
    assert.equal(r1.status, 403);
    assert.equal(errorCode(r1.body), 'SignatureDoesNotMatch');
    const old = await signed(env, 'GET', '/', {}, { 'x-amz-content-sha256': sha256hex('') }, { date: new Date(Date.now() - 3600_000) });
    const r2 = await send(env, 'GET', old.url, old.headers);
    assert.equal(r2.status, 403);
    assert.equal(errorCode(r2.body), 'RequestTimeTooSkewed');
  });

  it('a presigned URL past its expiry is refused', async () => {
    const u = new URL(env.endpoint);
    const req = { method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: '/sig', query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never; // as @aws-sdk/s3-request-presigner does
    const p = await signer(env).presign(req, { expiresIn: 60, signingDate: new Date(Date.now() - 120_000) });
    const qs = new URLSearchParams(p.query as Record<string, string>).toString();
    const r = await send(env, 'GET', `/sig?${qs}`, {});
    assert.equal(r.status, 403);
    assert.equal(errorCode(r.body), 'AccessDenied');
    assert.match(r.body, /Request has expired/);
    const fresh = await signer(env).presign(req, { expiresIn: 60 });
    const r2 = await send(env, 'GET', `/sig?${new URLSearchParams(fresh.query as Record<string, string>).toString()}`, {});
    assert.equal(r2.status, 200, r2.body + JSON.stringify(fresh.query));
  });

  it('a body that does not match its signed x-amz-content-sha256 stores nothing', async () => {
    const s = await signed(env, 'PUT', '/sig/tampered', {}, { 'x-amz-content-sha256': sha256hex('good body'), 'content-length': '9' });
    const r = await send(env, 'PUT', s.url, s.headers, Buffer.from('evil body'));
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'XAmzContentSHA256Mismatch');
    const h = await signed(env, 'HEAD', '/sig/tampered', {}, { 'x-amz-content-sha256': sha256hex('') });
    assert.equal((await send(env, 'HEAD', h.url, h.headers)).status, 404);
  });

  it('signed aws-chunked uploads: good chunks are stored, one bad chunk signature stores nothing', async () => {
    const data = [Buffer.alloc(8192, 'x'), Buffer.alloc(100, 'y')];
    const decodedLength = data.reduce((n, b) => n + b.length, 0);
    const build = async (key: string, corruptChunk: number) => {
      const date = new Date();
      const headers = {
        'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
        'content-encoding': 'aws-chunked',
        'x-amz-decoded-content-length': String(decodedLength),
      };
      const s = await signed(env, 'PUT', `/sig/${key}`, {}, headers, { date });
      const body = await signedChunkedBody(env, s.headers, date, data, corruptChunk);
      return send(env, 'PUT', s.url, { ...s.headers, 'content-length': String(body.length) }, body);
    };
    const ok = await build('chunked-good', -1);
    assert.equal(ok.status, 200, ok.body);
    const bad = await build('chunked-bad', 1);
    assert.equal(bad.status, 403);
    assert.equal(errorCode(bad.body), 'SignatureDoesNotMatch');
    const g = await signed(env, 'GET', '/sig/chunked-good', {}, { 'x-amz-content-sha256': sha256hex('') });
    const got = await send(env, 'GET', g.url, g.headers);
    assert.equal(got.body, 'x'.repeat(8192) + 'y'.repeat(100));
    const h = await signed(env, 'HEAD', '/sig/chunked-bad', {}, { 'x-amz-content-sha256': sha256hex('') });
    assert.equal((await send(env, 'HEAD', h.url, h.headers)).status, 404);
  });

  it('unsigned aws-chunked with a trailing CRC32: a wrong checksum is BadDigest and stores nothing', async () => {
    const payload = Buffer.from('hello trailer');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(payload) >>> 0);
    const put = async (key: string, checksum: string) => {
      const body = Buffer.from(`${payload.length.toString(16)}\r\n${payload.toString()}\r\n0\r\nx-amz-checksum-crc32:${checksum}\r\n\r\n`);
      const s = await signed(env, 'PUT', `/sig/${key}`, {}, {
        'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
        'content-encoding': 'aws-chunked',
        'x-amz-trailer': 'x-amz-checksum-crc32',
        'x-amz-decoded-content-length': String(payload.length),
      });
      return send(env, 'PUT', s.url, { ...s.headers, 'content-length': String(body.length) }, body);
    };
    assert.equal((await put('trailer-good', crc.toString('base64'))).status, 200);
    const bad = await put('trailer-bad', 'AAAAAA==');
    assert.equal(bad.status, 400);
    assert.equal(errorCode(bad.body), 'BadDigest');
    const h = await signed(env, 'HEAD', '/sig/trailer-bad', {}, { 'x-amz-content-sha256': sha256hex('') });
    assert.equal((await send(env, 'HEAD', h.url, h.headers)).status, 404);
  });

  it('oversized request headers get an S3 error and the server keeps serving', async () => {
    const r = await send(env, 'GET', '/', { 'x-amz-meta-huge': 'z'.repeat(40 * 1024) });
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'RequestHeaderSectionTooLarge');
    const meta = await signed(env, 'PUT', '/sig/meta', {}, { 'x-amz-content-sha256': sha256hex(''), 'x-amz-meta-big': 'm'.repeat(3000) });
    const r2 = await send(env, 'PUT', meta.url, meta.headers);
    assert.equal(r2.status, 400);
    assert.equal(errorCode(r2.body), 'MetadataTooLarge');
    const ok = await signed(env, 'GET', '/', {}, { 'x-amz-content-sha256': sha256hex('') });
    assert.equal((await send(env, 'GET', ok.url, ok.headers)).status, 200);
  });

  it('a path with broken percent-encoding is InvalidURI XML', async () => {
    for (const p of ['/sig/%ZZ', '/sig/%C3%28', '/%E0%A4%A']) {
      const r = await send(env, 'GET', p, {});
      assert.equal(r.status, 400, p);
      assert.equal(errorCode(r.body), 'InvalidURI', p);
    }
  });

  it('malformed XML bodies are MalformedXML, never a crash', async () => {
    const bodies = ['<Delete><Object><Key>a</Key></Object>', '<Delete><Object><Key>a</Key></Objekt></Delete>', 'not xml at all', '<!DOCTYPE x [<!ENTITY e "boom">]><Delete>&e;</Delete>', '<Wrong/>', ''];
    for (const b of bodies) {
      const body = Buffer.from(b);
      const s = await signed(env, 'POST', '/sig', { delete: '' }, { 'x-amz-content-sha256': sha256hex(body), 'content-length': String(body.length), 'content-md5': createHash('md5').update(body).digest('base64') });
      const r = await send(env, 'POST', s.url, s.headers, body);
      assert.equal(r.status, 400, b);
      assert.equal(errorCode(r.body), 'MalformedXML', b);
    }
  });
});
