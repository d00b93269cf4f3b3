// A presigned URL whose payload hash is a signed x-amz-content-sha256
// header, not a query parameter: aws-sdk-go (v1) never hoists a caller's
// X-Amz-Content-Sha256 into the query (one of its requiredSignedHeaders) and
// signs the canonical request's payload line with it (aws-sdk-go#1976), so
// whoever holds the URL must upload exactly those bytes; S3 takes such a URL.
// Made here with @smithy/signature-v4 the same way (the header unhoisted,
// hence signed; the payload line from it). One daemon.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { errorCode, objectExists, rawRequest, s3WithBucketForSuite, signer, type S3Env } from './helpers/s3-env.js';

const BODY = 'exactly these bytes';
const HASH = createHash('sha256').update(BODY).digest('hex');

async function presignedPutWithHashHeader(env: S3Env, pathname: string): Promise<string> {
  const u = new URL(env.endpoint);
  const req = { method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query: {}, headers: { host: u.host, 'x-amz-content-sha256': HASH } };
  const p = await signer(env).presign(req as never, { expiresIn: 300, unhoistableHeaders: new Set(['x-amz-content-sha256']) });
  const q = p.query as Record<string, string>;
  assert.equal(q['X-Amz-SignedHeaders'], 'host;x-amz-content-sha256');
  assert.equal(Object.keys(q).filter((k) => k.toLowerCase() === 'x-amz-content-sha256').length, 0);
  return `${pathname}?${new URLSearchParams(q).toString()}`;
}

const put = (env: S3Env, target: string, body: string) =>
  rawRequest(env, 'PUT', target, { 'x-amz-content-sha256': HASH, 'content-length': String(Buffer.byteLength(body)) }, (r) => r.end(body));

describe('presigned URL with a signed x-amz-content-sha256 header', () => {
  const s3 = s3WithBucketForSuite('pre');

  it('the signed hash is the payload hash: the bytes it names are stored, other bytes are 400 XAmzContentSHA256Mismatch', async () => {
    const env = s3();
    const ok = await put(env, await presignedPutWithHashHeader(env, '/pre/exact'), BODY);
    assert.equal(ok.status, 200, ok.body);
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'pre', Key: 'exact' }));
    assert.equal(await got.Body!.transformToString(), BODY);

    const other = 'other bytes, same len';
    const bad = await put(env, await presignedPutWithHashHeader(env, '/pre/other'), other);
    assert.deepEqual([bad.status, errorCode(bad.body)], [400, 'XAmzContentSHA256Mismatch'], bad.body);
    assert.equal(await objectExists(env, 'pre', 'other'), false);
  });
});
