// Review of 6c7d8af (server.ts deleteObjects, sigv4.ts hasBodyChecksum): DeleteObjects
// must carry an integrity check the daemon actually verifies, not merely a header naming one.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { awsOk, errorCode, objectExists, rawRequest, signer, startS3, type RawAnswer, type S3Env } from './helpers/s3-env.js';

const deleteXml = (keys: string[]) => Buffer.from(`<Delete>${keys.map((k) => `<Object><Key>${k}</Key></Object>`).join('')}</Delete>`);

/** An UNSIGNED-PAYLOAD request with `body` and the extra signed `headers`, on its own connection. */
async function unsigned(env: S3Env, method: string, pathname: string, query: Record<string, string>, body: Buffer, headers: Record<string, string>): Promise<RawAnswer> {
  const u = new URL(env.endpoint);
  const all = { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(body.length), ...headers };
  const req = { method, protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query, headers: all };
  const s = (await signer(env).sign(req as never, { signingDate: new Date() })) as unknown as { headers: Record<string, string> };
  const qs = new URLSearchParams(query).toString().replace(/\+/g, '%20');
  return rawRequest(env, method, qs ? `${pathname}?${qs}` : pathname, s.headers, (r) => r.end(body));
}

describe('DeleteObjects: only a checksum the daemon verifies satisfies the integrity requirement', () => {
  let env: S3Env;
  const B = 'delete-gate';
  before(async () => {
    env = await startS3();
    awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
  });
  after(async () => {
    await env.cleanup();
  });

  // Each of these names a checksum that nothing checks: the body could be anything.
  const unverified: [string, Record<string, string>][] = [
    ['an x-amz-checksum-crc64nvme header (an algorithm the daemon does not compute)', { 'x-amz-checksum-crc64nvme': 'AAAAAAAAAAA=' }],
    ['x-amz-trailer on an UNSIGNED-PAYLOAD body (not aws-chunked: no trailer can follow)', { 'x-amz-trailer': 'x-amz-checksum-crc32' }],
    ['x-amz-trailer naming an unknown algorithm', { 'x-amz-trailer': 'x-amz-checksum-bogus' }],
  ];
  for (const [what, headers] of unverified) {
    it(`${what} is refused and deletes nothing`, async () => {
      const key = `keep-${Object.values(headers)[0]!.replace(/[^a-z0-9]/gi, '')}`;
      await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: key, Body: 'x' }));
      const r = await unsigned(env, 'POST', `/${B}`, { delete: '' }, deleteXml([key]), headers);
      assert.equal(r.status, 400, `status ${r.status}: ${r.body}`);
      assert.equal(errorCode(r.body), 'InvalidRequest');
      assert.equal(await objectExists(env, B, key), true, 'the refused request deleted nothing');
    });
  }

  it('the JS SDK and the aws cli DeleteObjects (their default checksums) still delete', async () => {
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'gone-1', Body: 'x' }));
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'gone-2', Body: 'x' }));
    const { DeleteObjectsCommand } = await import('@aws-sdk/client-s3');
    const out = await env.sdk.send(new DeleteObjectsCommand({ Bucket: B, Delete: { Objects: [{ Key: 'gone-1' }] } }));
    assert.equal(out.Deleted?.length, 1);
    awsOk(env, ['s3api', 'delete-objects', '--bucket', B, '--delete', '{"Objects":[{"Key":"gone-2"}]}']);
    assert.equal(await objectExists(env, B, 'gone-1'), false);
    assert.equal(await objectExists(env, B, 'gone-2'), false);
  });
});
