// Presigned URLs whose x-amz-* headers travel in the query string, as S3
// reads them: the presigners of aws-sdk-js v2/v3, -ruby and -go v1 move
// x-amz-* headers into the query (signed there), and S3 applies them as the
// headers. botocore keeps them as signed headers (X-Amz-SignedHeaders), so
// its URLs are made here with the hoisting those SDKs do (a before-sign hook
// on Debian's botocore, the aws cli's own) and, for one, by
// @smithy/signature-v4's presign, the JS SDK v3's. Sent with curl. Before,
// such parameters were signed but ignored: the object was stored without
// its metadata, class or tags, and a refused value (a class, an ACL, an
// unsupported condition, a bad checksum) was not refused. One daemon.
import { CompleteMultipartUploadCommand, CreateBucketCommand, GetObjectTaggingCommand, HeadObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { awsOk, errorCode, objectExists, signedRequest, signer, startS3, type S3Env } from './helpers/s3-env.js';

/**
 * Presigns botocore operations with Debian's awscli.botocore (the aws cli's
 * own signer), one python run for a batch. Per spec: `add`, headers put on
 * the request before signing (x-amz-* ones botocore has no parameter for);
 * `hoist` (default true), x-amz-* headers moved into the query before
 * signing, as the hoisting SDKs do (without it, botocore's own URL: they
 * stay signed headers); `extraQuery`, parameters added to the query as well.
 */
const PRESIGN_PY = String.raw`
import json, sys
from urllib.parse import urlsplit, quote
from awscli.botocore.session import Session
from awscli.botocore.config import Config
a = json.load(sys.stdin)
c = Session().create_client('s3', endpoint_url=a['endpoint'], region_name='us-east-1', aws_access_key_id=a['key'], aws_secret_access_key=a['secret'], config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}))
cur = [None]
def edit(request, **kw):
    s = cur[0]
    for k, v in s.get('add', {}).items():
        request.headers[k] = v
    extra = list(s.get('extraQuery', {}).items())
    if s.get('hoist', True):
        moved = [(k, v if isinstance(v, str) else v.decode()) for k, v in request.headers.items() if k.lower().startswith('x-amz-')]
        for k, _ in moved:
            del request.headers[k]
        extra += moved
    if extra:
        q = '&'.join(quote(k.lower(), safe='-_.~') + '=' + quote(v, safe='-_.~') for k, v in extra)
        request.url += ('&' if urlsplit(request.url).query else '?') + q
c.meta.events.register('before-sign.s3', edit)
out = []
for s in a['specs']:
    cur[0] = s
    out.append(c.generate_presigned_url(s['op'], Params=s['params'], ExpiresIn=s.get('expires', 300)))
print(json.dumps(out))
`;

interface Spec {
  op: string;
  params: Record<string, unknown>;
  add?: Record<string, string>;
  hoist?: boolean;
  extraQuery?: Record<string, string>;
  expires?: number;
}

function presign(env: S3Env, specs: Spec[]): string[] {
  const r = spawnSync('/usr/bin/python3', ['-c', PRESIGN_PY], { input: JSON.stringify({ endpoint: env.endpoint, key: env.accessKeyId, secret: env.secretAccessKey, specs }), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as string[];
}

interface CurlAnswer {
  status: number;
  body: string;
  headers: string;
}

/** curl -X METHOD URL [-H ...] [--data-binary @file]: status, body and the response headers. */
function curl(method: string, url: string, opts: { headers?: Record<string, string>; bodyFile?: string } = {}): CurlAnswer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'presign-curl-'));
  try {
    const args = ['-sS', '-g', '-X', method, '-o', path.join(dir, 'body'), '-D', path.join(dir, 'headers'), '-w', '%{http_code}'];
    for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
    if (opts.bodyFile !== undefined) args.push('--data-binary', `@${opts.bodyFile}`);
    else if (method === 'PUT') args.push('--data-binary', '');
    const r = spawnSync('/usr/bin/curl', [...args, url], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    return { status: Number(r.stdout), body: fs.readFileSync(path.join(dir, 'body'), 'utf8'), headers: fs.readFileSync(path.join(dir, 'headers'), 'utf8') };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const query = (url: string) => new URL(url).searchParams;

/** x-amz-* values refused as headers, and what the header form answers. */
const REFUSED: { header: string; value: string; status: number; code: string }[] = [
  { header: 'x-amz-if-match-size', value: '15', status: 501, code: 'NotImplemented' },
  { header: 'x-amz-storage-class', value: 'NEARLINE', status: 400, code: 'InvalidStorageClass' },
  { header: 'x-amz-acl', value: 'public-read', status: 400, code: 'AccessControlListNotSupported' },
  { header: 'x-amz-checksum-crc32', value: 'AAAAAA==', status: 400, code: 'BadDigest' },
];

const SPECS: Record<string, Spec> = {
  meta: { op: 'put_object', params: { Bucket: 'pre', Key: 'meta', Metadata: { colour: 'blue', Owner: 'Ada' }, StorageClass: 'STANDARD_IA', Tagging: 'project=couche&tier=warm', ContentType: 'text/plain' } },
  late: { op: 'put_object', params: { Bucket: 'pre', Key: 'late', Metadata: { colour: 'red' } }, expires: 0 },
  get: { op: 'get_object', params: { Bucket: 'pre', Key: 'meta', ResponseContentType: 'application/x-pre', ResponseContentDisposition: 'attachment; filename="p.txt"', VersionId: 'null' }, hoist: false },
  tamper: { op: 'put_object', params: { Bucket: 'pre', Key: 'tamper', Metadata: { role: 'viewer' } } },
  plain: { op: 'put_object', params: { Bucket: 'pre', Key: 'plain' } },
  // botocore has no parameter for x-amz-if-match-size (nor a way to give a wrong checksum): added to the request, then hoisted.
  ...Object.fromEntries(REFUSED.map((c, i) => [`refused-${i}`, { op: 'put_object', params: { Bucket: 'pre', Key: `refused-${i}` }, add: { [c.header]: c.value } }])),
  // Signed as a header (botocore's way) and in the query too (aws-sdk-js v2's way).
  'both-same': { op: 'put_object', params: { Bucket: 'pre', Key: 'both-same', Metadata: { k: 'v' } }, hoist: false, extraQuery: { 'x-amz-meta-k': 'v' } },
  copy: { op: 'copy_object', params: { Bucket: 'pre', Key: 'copied', CopySource: 'pre/copy-src', MetadataDirective: 'REPLACE', Metadata: { m: 'new' }, TaggingDirective: 'REPLACE', Tagging: 'c=d' } },
  mpu: { op: 'create_multipart_upload', params: { Bucket: 'pre', Key: 'multi', Metadata: { part: 'ed' }, StorageClass: 'ONEZONE_IA' } },
  'both-differs': { op: 'put_object', params: { Bucket: 'pre', Key: 'both-differs', Metadata: { k: 'w' } }, hoist: false, extraQuery: { 'x-amz-meta-k': 'v' } },
};

describe('presigned URLs with x-amz-* headers in the query', () => {
  let env: S3Env;
  let work: string;
  let file: string;
  const urls = new Map<string, string>();
  const url = (name: string) => urls.get(name)!;
  before(async () => {
    env = await startS3();
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'pre' }));
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-presign-'));
    file = path.join(work, 'body');
    fs.writeFileSync(file, 'presigned bytes');
    // One python run for every URL of the file (each run is ~0.5 s); they live 300 s.
    const names = Object.keys(SPECS);
    const made = presign(env, Object.values(SPECS));
    for (const [i, n] of names.entries()) urls.set(n, made[i]!);
  });
  after(async () => {
    await env?.cleanup();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('a PUT with metadata, storage class and tagging in the query stores them (botocore, hoisted; @smithy/signature-v4 presign); head-object and get-object-tagging show them; an expired one is 403', async () => {
    // What botocore does with them, hoisted: in the query, out of X-Amz-SignedHeaders; Content-Type stays a signed header.
    const q = query(url('meta'));
    assert.equal(q.get('x-amz-meta-colour'), 'blue');
    assert.equal(q.get('x-amz-storage-class'), 'STANDARD_IA');
    assert.equal(q.get('x-amz-tagging'), 'project=couche&tier=warm');
    assert.equal(q.get('X-Amz-SignedHeaders'), 'content-type;host');

    const put = curl('PUT', url('meta'), { headers: { 'Content-Type': 'text/plain' }, bodyFile: file });
    assert.equal(put.status, 200, put.body);
    const head = awsOk(env, ['s3api', 'head-object', '--bucket', 'pre', '--key', 'meta']);
    assert.deepEqual(head.Metadata, { colour: 'blue', owner: 'Ada' });
    assert.equal(head.StorageClass, 'STANDARD_IA');
    assert.equal(head.ContentType, 'text/plain');
    assert.equal(head.ContentLength, 15);
    assert.deepEqual(awsOk(env, ['s3api', 'get-object-tagging', '--bucket', 'pre', '--key', 'meta']).TagSet, [
      { Key: 'project', Value: 'couche' },
      { Key: 'tier', Value: 'warm' },
    ]);

    // botocore's GET: response-* overrides and versionId are query parameters of their own.
    const got = curl('GET', url('get'));
    assert.equal(got.status, 200, got.body);
    assert.equal(got.body, 'presigned bytes');
    assert.match(got.headers, /^content-type: application\/x-pre\r$/im);
    assert.match(got.headers, /^content-disposition: attachment; filename="p.txt"\r$/im);
    assert.match(got.headers, /^x-amz-meta-colour: blue\r$/im);

    // The JS SDK v3's presigner hoists every x-amz-* header itself.
    const u = new URL(env.endpoint);
    const req = { method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: '/pre/smithy', query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-meta-from': 'smithy', 'x-amz-tagging': 'sdk=v3', 'x-amz-storage-class': 'GLACIER' } };
    const p = await signer(env).presign(req as never, { expiresIn: 300 });
    assert.equal((p.query as Record<string, string>)['x-amz-meta-from'], 'smithy');
    const smithyUrl = `${env.endpoint}/pre/smithy?${new URLSearchParams(p.query as Record<string, string>).toString().replace(/\+/g, '%20')}`;
    assert.equal(curl('PUT', smithyUrl, { bodyFile: file }).status, 200);
    const sh = await env.sdk.send(new HeadObjectCommand({ Bucket: 'pre', Key: 'smithy' }));
    assert.deepEqual(sh.Metadata, { from: 'smithy' });
    assert.equal(sh.StorageClass, 'GLACIER');
    assert.deepEqual((await env.sdk.send(new GetObjectTaggingCommand({ Bucket: 'pre', Key: 'smithy' }))).TagSet, [{ Key: 'sdk', Value: 'v3' }]);

    const late = curl('PUT', url('late'), { bodyFile: file });
    assert.equal(late.status, 403, late.body);
    assert.equal(errorCode(late.body), 'AccessDenied');
    assert.match(late.body, /Request has expired/);
    assert.equal(await objectExists(env, 'pre', 'late'), false);
  });

  it('a query value changed after signing is 403 SignatureDoesNotMatch; an x-amz-* header the URL did not sign is 403 AccessDenied (HeadersNotSigned): nothing stored, no copy made', async () => {
    await signedRequest(env, 'PUT', '/pre/secret', {}, 'not for the URL holder');
    const tampered = url('tamper').replace('x-amz-meta-role=viewer', 'x-amz-meta-role=admin');
    assert.notEqual(tampered, url('tamper'));
    const t = curl('PUT', tampered, { bodyFile: file });
    assert.equal(t.status, 403, t.body);
    assert.equal(errorCode(t.body), 'SignatureDoesNotMatch');
    assert.equal(await objectExists(env, 'pre', 'tamper'), false);

    // The holder of a plain PUT URL adds headers the signer never saw.
    const added = curl('PUT', url('plain'), { headers: { 'x-amz-meta-role': 'admin' }, bodyFile: file });
    assert.equal(added.status, 403, added.body);
    assert.equal(errorCode(added.body), 'AccessDenied');
    assert.match(added.body, /<HeadersNotSigned>x-amz-meta-role<\/HeadersNotSigned>/);
    const copy = curl('PUT', url('plain'), { headers: { 'x-amz-copy-source': '/pre/secret' } });
    assert.equal(copy.status, 403, copy.body);
    assert.match(copy.body, /<HeadersNotSigned>x-amz-copy-source<\/HeadersNotSigned>/);
    assert.equal(await objectExists(env, 'pre', 'plain'), false);
    // The same URL as issued still works.
    assert.equal(curl('PUT', url('plain'), { bodyFile: file }).status, 200);
  });

  it('an x-amz-* value in the query is refused exactly as the header is: 501 for an unsupported condition, 400 for a bad class, ACL or checksum', async () => {
    for (const c of REFUSED) {
      const viaHeader = await signedRequest(env, 'PUT', '/pre/refused-header', {}, 'presigned bytes', { [c.header]: c.value });
      assert.deepEqual([viaHeader.status, errorCode(viaHeader.body)], [c.status, c.code], `${c.header} as a header`);
    }
    for (const [i, c] of REFUSED.entries()) {
      assert.equal(query(url(`refused-${i}`)).get(c.header), c.value);
      const r = curl('PUT', url(`refused-${i}`), { bodyFile: file });
      assert.deepEqual([r.status, errorCode(r.body)], [c.status, c.code], `${c.header} in the query: ${r.body}`);
      assert.equal(await objectExists(env, 'pre', `refused-${i}`), false);
    }
    assert.equal(await objectExists(env, 'pre', 'refused-header'), false);
  });

  it('a presigned CopyObject and CreateMultipartUpload take x-amz-copy-source, the directives, metadata, class and tagging from the query', async () => {
    assert.equal((await signedRequest(env, 'PUT', '/pre/copy-src', {}, 'copy me', { 'x-amz-meta-m': 'old' })).status, 200);
    assert.equal(query(url('copy')).get('x-amz-copy-source'), 'pre/copy-src');
    const c = curl('PUT', url('copy'));
    assert.equal(c.status, 200, c.body);
    assert.match(c.body, /<CopyObjectResult[ >]/);
    const head = await env.sdk.send(new HeadObjectCommand({ Bucket: 'pre', Key: 'copied' }));
    assert.deepEqual(head.Metadata, { m: 'new' });
    assert.equal(head.ContentLength, 7);
    assert.deepEqual((await env.sdk.send(new GetObjectTaggingCommand({ Bucket: 'pre', Key: 'copied' }))).TagSet, [{ Key: 'c', Value: 'd' }]);

    const created = curl('POST', url('mpu'));
    assert.equal(created.status, 200, created.body);
    const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created.body)![1]!;
    const part = await env.sdk.send(new UploadPartCommand({ Bucket: 'pre', Key: 'multi', UploadId: uploadId, PartNumber: 1, Body: 'one part' }));
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'pre', Key: 'multi', UploadId: uploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } }));
    const mh = await env.sdk.send(new HeadObjectCommand({ Bucket: 'pre', Key: 'multi' }));
    assert.deepEqual(mh.Metadata, { part: 'ed' });
    assert.equal(mh.StorageClass, 'ONEZONE_IA');
  });

  it('a name in the query and as a signed header: the same value is taken (aws-sdk-js v2 sends both), a different one is 400', async () => {
    assert.equal(query(url('both-same')).get('X-Amz-SignedHeaders'), 'host;x-amz-meta-k');
    assert.equal(curl('PUT', url('both-same'), { headers: { 'x-amz-meta-k': 'v' }, bodyFile: file }).status, 200);
    assert.deepEqual((await env.sdk.send(new HeadObjectCommand({ Bucket: 'pre', Key: 'both-same' }))).Metadata, { k: 'v' });
    const r = curl('PUT', url('both-differs'), { headers: { 'x-amz-meta-k': 'w' }, bodyFile: file });
    assert.equal(r.status, 400, r.body);
    assert.equal(errorCode(r.body), 'InvalidArgument');
    assert.equal(await objectExists(env, 'pre', 'both-differs'), false);
  });
});
