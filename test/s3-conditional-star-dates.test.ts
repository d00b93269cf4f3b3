// Conditional headers as RFC 9110 reads them: a quoted "*" is an entity tag
// whose value is `*` (no object has it), not the wildcard, on every path that
// takes If-Match / If-None-Match (GET, HEAD, PUT, CopyObject and its
// copy-source conditions, CompleteMultipartUpload, DeleteObject); a bare `*`
// stays the wildcard. If-Modified-Since / If-Unmodified-Since that are not an
// HTTP-date ("1", "2024", "12/31/2099", which Date.parse reads as dates) make
// their condition ignored (13.1.3, 13.1.4), and valid dates in all three
// HTTP-date forms are honoured. Real daemon, @aws-sdk/client-s3 with the
// headers set as sent (signed).
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { outcome, startS3 } from './helpers/s3-env.js';

/** Sends `command` with `headers` set exactly as given (added at the build step, so signed like any header). */
function withHeaders<C extends { middlewareStack: { add: (...a: never[]) => void } }>(command: C, headers: Record<string, string>): C {
  (command.middlewareStack as unknown as { add: (m: unknown, o: unknown) => void }).add(
    (next: (a: unknown) => unknown) => async (args: { request: { headers: Record<string, string> } }) => {
      Object.assign(args.request.headers, headers);
      return next(args);
    },
    { step: 'build', priority: 'low' },
  );
  return command;
}

const send = (sdk: S3Client, command: unknown, headers: Record<string, string>) => outcome(sdk.send(withHeaders(command as Parameters<S3Client['send']>[0], headers)));

/** A daemon (cleaned up after `t`) with bucket `bkt` holding `k` = "v1"; its SDK client and k's ETag. */
async function bucketWithObject(t: TestContext): Promise<{ sdk: S3Client; ETag: string }> {
  const env = await startS3();
  t.after(() => env.cleanup());
  await env.sdk.send(new CreateBucketCommand({ Bucket: 'bkt' }));
  const { ETag } = await env.sdk.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'v1' }));
  return { sdk: env.sdk, ETag: ETag! };
}

test('a quoted "*" is an ETag, not the wildcard, on reads, writes, copies, completes and deletes; a bare * still is', async (t) => {
  const started = Date.now();
  const { sdk } = await bucketWithObject(t);
  const quoted = { 'if-match': '"*"' };
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), quoted), [412, 'PreconditionFailed'], 'GET If-Match "*"');
  assert.equal((await send(sdk, new HeadObjectCommand({ Bucket: 'bkt', Key: 'k' }), quoted))[0], 412, 'HEAD If-Match "*"');
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': '"*"' }), [200, 'OK'], 'GET If-None-Match "*" is no match');
  assert.deepEqual(await send(sdk, new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'v2' }), quoted), [412, 'PreconditionFailed'], 'PUT If-Match "*"');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'k', CopySource: 'bkt/k', MetadataDirective: 'REPLACE' }), quoted), [412, 'PreconditionFailed'], 'CopyObject If-Match "*"');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'c', CopySource: 'bkt/k' }), { 'x-amz-copy-source-if-match': '"*"' }), [412, 'PreconditionFailed'], 'x-amz-copy-source-if-match "*"');
  const { UploadId } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'bkt', Key: 'k' }));
  const { ETag } = await sdk.send(new UploadPartCommand({ Bucket: 'bkt', Key: 'k', UploadId, PartNumber: 1, Body: 'part' }));
  const complete = () => new CompleteMultipartUploadCommand({ Bucket: 'bkt', Key: 'k', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] } });
  assert.deepEqual(await send(sdk, complete(), quoted), [412, 'PreconditionFailed'], 'CompleteMultipartUpload If-Match "*"');
  assert.deepEqual(await send(sdk, new DeleteObjectCommand({ Bucket: 'bkt', Key: 'k' }), quoted), [412, 'PreconditionFailed'], 'DeleteObject If-Match "*"');
  assert.equal(Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }))).Body!.transformToByteArray()).toString(), 'v1', 'nothing written or deleted');

  // The bare wildcard: any current object.
  const bare = { 'if-match': '*' };
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), bare), [200, 'OK']);
  assert.equal((await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': '*' }))[0], 304);
  assert.deepEqual(await send(sdk, complete(), bare), [200, 'OK'], 'CompleteMultipartUpload If-Match *');
  assert.deepEqual(await send(sdk, new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'v3' }), bare), [200, 'OK'], 'PUT If-Match *');
  assert.deepEqual(await send(sdk, new DeleteObjectCommand({ Bucket: 'bkt', Key: 'k' }), bare), [200, 'OK'], 'DeleteObject If-Match *');
  t.diagnostic(`${Date.now() - started} ms`);
});

test('GET/HEAD If-Modified-Since and If-Unmodified-Since: a value that is not an HTTP-date is ignored; HTTP-dates in all three forms are honoured', async (t) => {
  const started = Date.now();
  const { sdk } = await bucketWithObject(t);
  const get = (headers: Record<string, string>) => send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), headers);
  const head = async (headers: Record<string, string>) => (await send(sdk, new HeadObjectCommand({ Bucket: 'bkt', Key: 'k' }), headers))[0];
  // Date.parse reads these as 2001, 2024-01-01 and 2099-12-31 (local time): not HTTP-dates, so no condition.
  for (const garbage of ['1', '2024', '12/31/2099', 'Thu, 31 Dec 2099 00:00:00 GMT junk', 'Fri, 30 Feb 2099 00:00:00 GMT']) {
    assert.deepEqual(await get({ 'if-unmodified-since': garbage }), [200, 'OK'], `If-Unmodified-Since: ${garbage}`);
    assert.equal(await head({ 'if-unmodified-since': garbage }), 200, `HEAD If-Unmodified-Since: ${garbage}`);
    assert.deepEqual(await get({ 'if-modified-since': garbage }), [200, 'OK'], `If-Modified-Since: ${garbage}`);
    assert.equal(await head({ 'if-modified-since': garbage }), 200, `HEAD If-Modified-Since: ${garbage}`);
  }
  // Valid dates, past and future, in IMF-fixdate, RFC 850 and asctime forms.
  const past = ['Sat, 01 Jan 2000 00:00:00 GMT', 'Saturday, 01-Jan-00 00:00:00 GMT', 'Sat Jan  1 00:00:00 2000'];
  const future = ['Wed, 31 Dec 2098 00:00:00 GMT', 'Wednesday, 31-Dec-70 00:00:00 GMT', 'Wed Dec 31 00:00:00 2098'];
  for (const p of past) {
    assert.deepEqual(await get({ 'if-unmodified-since': p }), [412, 'PreconditionFailed'], `If-Unmodified-Since: ${p}`);
    assert.deepEqual(await get({ 'if-modified-since': p }), [200, 'OK'], `If-Modified-Since: ${p}`);
  }
  for (const f of future) {
    assert.deepEqual(await get({ 'if-unmodified-since': f }), [200, 'OK'], `If-Unmodified-Since: ${f}`);
    assert.equal(await head({ 'if-modified-since': f }), 304, `HEAD If-Modified-Since: ${f}`);
  }
  // The copy-source forms share the parser: garbage is ignored there too.
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'c', CopySource: 'bkt/k' }), { 'x-amz-copy-source-if-unmodified-since': '1' }), [200, 'OK'], 'x-amz-copy-source-if-unmodified-since: 1');
  t.diagnostic(`${Date.now() - started} ms`);
});

test('If-Match compares strongly: a weak W/"etag" never matches (GET, HEAD, PUT, CopyObject, copy source, DeleteObject); If-None-Match weakly (W/ matches: 304); lists with spaces', async (t) => {
  const started = Date.now();
  const { sdk, ETag } = await bucketWithObject(t);
  const weak = { 'if-match': `W/${ETag}` };
  // RFC 9110 13.1.1: If-Match uses the strong comparison (8.8.3.2), under which a weak tag matches nothing.
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), weak), [412, 'PreconditionFailed'], 'GET If-Match W/');
  assert.equal((await send(sdk, new HeadObjectCommand({ Bucket: 'bkt', Key: 'k' }), weak))[0], 412, 'HEAD If-Match W/');
  assert.deepEqual(await send(sdk, new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'v2' }), weak), [412, 'PreconditionFailed'], 'PUT If-Match W/');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'k', CopySource: 'bkt/k', MetadataDirective: 'REPLACE' }), weak), [412, 'PreconditionFailed'], 'CopyObject If-Match W/');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'c', CopySource: 'bkt/k' }), { 'x-amz-copy-source-if-match': `W/${ETag}` }), [412, 'PreconditionFailed'], 'x-amz-copy-source-if-match W/');
  assert.deepEqual(await send(sdk, new DeleteObjectCommand({ Bucket: 'bkt', Key: 'k' }), weak), [412, 'PreconditionFailed'], 'DeleteObject If-Match W/');
  // The same tag strong in a list with spaces around its members matches.
  const list = { 'if-match': `  "0123" ,  W/${ETag} ,\t${ETag}  ` };
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), list), [200, 'OK'], 'GET If-Match list');
  // If-None-Match uses the weak comparison (13.1.2): W/"etag" matches the object's ETag.
  assert.equal((await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': `"0123", W/${ETag}` }))[0], 304, 'GET If-None-Match W/');
  assert.equal((await send(sdk, new HeadObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': '*' }))[0], 304, 'HEAD If-None-Match *');
  assert.equal(Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }))).Body!.transformToByteArray()).toString(), 'v1', 'nothing written or deleted');
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'c' }))))[0], 404, 'no copy made');
  t.diagnostic(`${Date.now() - started} ms`);
});

test('a * inside a list (`*, "x"`) is not the wildcard: If-Match holds only for a listed ETag (GET, HEAD, PUT, CopyObject, copy source, CompleteMultipartUpload, DeleteObject), If-None-Match compares the listed tags', async (t) => {
  const started = Date.now();
  const { sdk, ETag } = await bucketWithObject(t);
  // RFC 9110 13.1.1: If-Match = "*" / #entity-tag: the wildcard only alone. In a list it names no ETag.
  const starList = { 'if-match': '*, "0123"' };
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), starList), [412, 'PreconditionFailed'], 'GET If-Match *, "0123"');
  assert.equal((await send(sdk, new HeadObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-match': '"0123",*' }))[0], 412, 'HEAD If-Match "0123",*');
  assert.deepEqual(await send(sdk, new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'v2' }), starList), [412, 'PreconditionFailed'], 'PUT If-Match *, "0123"');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'k', CopySource: 'bkt/k', MetadataDirective: 'REPLACE' }), starList), [412, 'PreconditionFailed'], 'CopyObject If-Match *, "0123"');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'c', CopySource: 'bkt/k' }), { 'x-amz-copy-source-if-match': '*, "0123"' }), [412, 'PreconditionFailed'], 'x-amz-copy-source-if-match *, "0123"');
  const { UploadId } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'bkt', Key: 'k' }));
  const part = await sdk.send(new UploadPartCommand({ Bucket: 'bkt', Key: 'k', UploadId, PartNumber: 1, Body: 'part' }));
  const complete = () => new CompleteMultipartUploadCommand({ Bucket: 'bkt', Key: 'k', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } });
  assert.deepEqual(await send(sdk, complete(), starList), [412, 'PreconditionFailed'], 'CompleteMultipartUpload If-Match *, "0123"');
  assert.deepEqual(await send(sdk, new DeleteObjectCommand({ Bucket: 'bkt', Key: 'k' }), starList), [412, 'PreconditionFailed'], 'DeleteObject If-Match *, "0123"');
  // If-None-Match: the list's tags are compared, the * among them matches nothing.
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': '*, "0123"' }), [200, 'OK'], 'GET If-None-Match *, "0123"');
  assert.deepEqual(await send(sdk, new CopyObjectCommand({ Bucket: 'bkt', Key: 'c', CopySource: 'bkt/k' }), { 'x-amz-copy-source-if-none-match': '*, "0123"' }), [200, 'OK'], 'x-amz-copy-source-if-none-match *, "0123"');
  assert.equal((await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), { 'if-none-match': `*, ${ETag}` }))[0], 304, 'GET If-None-Match *, ETag');
  // A write's If-None-Match takes only a lone * (as S3): a list is refused, not taken as *.
  assert.equal((await send(sdk, new PutObjectCommand({ Bucket: 'bkt', Key: 'new', Body: 'n' }), { 'if-none-match': '*, "0123"' }))[0], 501, 'PUT If-None-Match *, "0123"');
  assert.equal(Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }))).Body!.transformToByteArray()).toString(), 'v1', 'nothing written or deleted');
  // The object's ETag in the list still matches, the * beside it ignored.
  const withEtag = { 'if-match': `*, ${ETag}` };
  assert.deepEqual(await send(sdk, new GetObjectCommand({ Bucket: 'bkt', Key: 'k' }), withEtag), [200, 'OK'], 'GET If-Match *, ETag');
  assert.deepEqual(await send(sdk, complete(), withEtag), [200, 'OK'], 'CompleteMultipartUpload If-Match *, ETag');
  t.diagnostic(`${Date.now() - started} ms`);
});
