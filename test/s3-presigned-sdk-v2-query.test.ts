// Presigned URLs as aws-sdk-js v2 makes them: its SigV4 presigner
// (signers/v4.js updateForPresigned) copies Content-Type, Content-MD5 and
// Cache-Control into the query as well as x-amz-* headers, so a
// getSignedUrl('putObject', { ContentType, ... }) URL carries
// Content-Type=... (signed in the canonical query string); S3 takes it. The
// URL is made here the way v2 makes it, with @smithy/signature-v4 (v2 is not
// installed): Content-Type unsigned (v2 never signs it) and in the query,
// Content-MD5, Cache-Control and x-amz-meta-* signed as headers and in the
// query. One daemon.
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { errorCode, objectExists, rawRequest, s3WithBucketForSuite, signedRequest, signer, type S3Env } from './helpers/s3-env.js';

const BODY = 'a v2 upload';
const MD5 = createHash('md5').update(BODY).digest('base64');

/** A PUT URL shaped as aws-sdk-js v2 presigns it, with `query` (the v2 header copies) added; the path and query to send. */
async function v2PresignedPut(env: S3Env, pathname: string, query: Record<string, string>): Promise<string> {
  const u = new URL(env.endpoint);
  const req = {
    method: 'PUT',
    protocol: 'http:',
    hostname: u.hostname,
    port: Number(u.port),
    path: pathname,
    query,
    // v2 signs every header but content-type (and a few others); its S3 presign hashes no payload (UNSIGNED-PAYLOAD, not sent).
    headers: { host: u.host, 'content-type': 'image/png', 'content-md5': MD5, 'cache-control': 'max-age=60', 'x-amz-meta-k': 'v', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  };
  const p = await signer(env).presign(req as never, {
    expiresIn: 300,
    unsignableHeaders: new Set(['content-type', 'x-amz-content-sha256']),
    signableHeaders: new Set(['cache-control']), // smithy never signs it by default; v2 does
    unhoistableHeaders: new Set(['x-amz-meta-k', 'x-amz-content-sha256']),
  });
  const q = p.query as Record<string, string>;
  assert.equal(q['X-Amz-SignedHeaders'], 'cache-control;content-md5;host;x-amz-meta-k');
  return `${pathname}?${new URLSearchParams(q).toString().replace(/\+/g, '%20')}`;
}

const put = (env: S3Env, target: string) =>
  rawRequest(env, 'PUT', target, { 'content-type': 'image/png', 'content-md5': MD5, 'cache-control': 'max-age=60', 'x-amz-meta-k': 'v', 'content-length': String(BODY.length) }, (r) => r.end(BODY));

describe('presigned URLs of aws-sdk-js v2', () => {
  const s3 = s3WithBucketForSuite('pre');

  it('a PUT URL with Content-Type, Content-MD5 and Cache-Control in its query stores the object; the same names elsewhere are still refused', async () => {
    const env = s3();
    const target = await v2PresignedPut(env, '/pre/v2', { 'Content-Type': 'image/png', 'Content-MD5': MD5, 'Cache-Control': 'max-age=60', 'x-amz-meta-k': 'v' });
    const r = await put(env, target);
    assert.equal(r.status, 200, r.body);
    const head = await env.sdk.send(new HeadObjectCommand({ Bucket: 'pre', Key: 'v2' }));
    assert.equal(head.ContentType, 'image/png');
    assert.equal(head.CacheControl, 'max-age=60');
    assert.deepEqual(head.Metadata, { k: 'v' });
    assert.equal(head.ContentLength, BODY.length);

    // Only v2's exact names are let through: another case is a misspelt parameter, refused as before.
    const lower = await put(env, await v2PresignedPut(env, '/pre/lower', { 'content-type': 'image/png' }));
    assert.deepEqual([lower.status, errorCode(lower.body)], [400, 'InvalidArgument'], lower.body);
    assert.equal(await objectExists(env, 'pre', 'lower'), false);
    // And only on a presigned URL: an Authorization-header PUT with ?Content-Type= is refused as before.
    const signed = await signedRequest(env, 'PUT', '/pre/header-auth', { 'Content-Type': 'image/png' }, BODY);
    assert.deepEqual([signed.status, errorCode(signed.body)], [400, 'InvalidArgument'], signed.body);
    assert.equal(await objectExists(env, 'pre', 'header-auth'), false);
  });
});
