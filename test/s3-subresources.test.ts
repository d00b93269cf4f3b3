// S3 subresources driven by the real aws cli (aws s3api): object and bucket
// tagging (limits, copy/overwrite/delete, multipart, restart), the owner-only
// ACL, bucket configurations that are never configured, the subresources
// CoucheStor refuses by name, and ListObjectVersions paging. Each expected
// code and status was first observed on MinIO (differences are deliberate,
// see src/dataplane/s3/subresources.ts). One daemon for the file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aws, awsFail, awsOk, errorCode, signedRequest, startS3, type S3Env } from './helpers/s3-env.js';

const tagsXml = (tags: [string, string][]) => `<Tagging><TagSet>${tags.map(([k, v]) => `<Tag><Key>${k}</Key><Value>${v}</Value></Tag>`).join('')}</TagSet></Tagging>`;

/** [key, value] pairs of a GetObjectTagging answer (the test's keys need no unescaping). */
async function rawTags(env: S3Env, bucket: string, key: string): Promise<[string, string][]> {
  const r = await signedRequest(env, 'GET', `/${bucket}/${key}`, { tagging: '' });
  assert.equal(r.status, 200, r.body);
  return [...r.body.matchAll(/<Tag><Key>([^<]*)<\/Key><Value>([^<]*)<\/Value><\/Tag>/g)].map((m) => [m[1]!, m[2]!]);
}

const tagSet = (tags: [string, string][]) => JSON.stringify({ TagSet: tags.map(([Key, Value]) => ({ Key, Value })) });
const pairs = (out: { TagSet: { Key: string; Value: string }[] }) => out.TagSet.map((t) => [t.Key, t.Value]);

describe('s3 subresources with the aws cli', () => {
  let env: S3Env;
  let dataDir: string;
  let work: string;
  let body: string;
  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 's3-subres-data-'));
    env = await startS3({ dataDir });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-subres-'));
    body = path.join(work, 'body');
    fs.writeFileSync(body, 'tagged bytes');
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'sub']);
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const put = (key: string, ...extra: string[]) => awsOk(env, ['s3api', 'put-object', '--bucket', 'sub', '--key', key, '--body', body, ...extra]);
  const tagsOf = (key: string) => pairs(awsOk(env, ['s3api', 'get-object-tagging', '--bucket', 'sub', '--key', key]));
  const getObject = (key: string) => awsOk(env, ['s3api', 'get-object', '--bucket', 'sub', '--key', key, path.join(work, 'out')]);

  it('object tags round-trip in order; get-object and HEAD carry the count; delete-object-tagging empties them', () => {
    put('t1', '--tagging', 'a=1&b=x%20y&c=');
    assert.deepEqual(tagsOf('t1'), [['a', '1'], ['b', 'x y'], ['c', '']]);
    assert.equal(getObject('t1').TagCount, 3);
    const head = aws(env, ['s3api', 'head-object', '--bucket', 'sub', '--key', 't1', '--debug']);
    assert.equal(head.status, 0);
    assert.match(head.stderr, /'x-amz-tagging-count': '3'/);
    awsOk(env, ['s3api', 'put-object-tagging', '--bucket', 'sub', '--key', 't1', '--tagging', tagSet([['z', 'last'], ['y', 'ü/ñ: @+=-_.']])]);
    assert.deepEqual(tagsOf('t1'), [['z', 'last'], ['y', 'ü/ñ: @+=-_.']]);
    awsOk(env, ['s3api', 'delete-object-tagging', '--bucket', 'sub', '--key', 't1']);
    assert.deepEqual(tagsOf('t1'), []);
    assert.equal(getObject('t1').TagCount, undefined);
    // Tagging rewrites the record, never the version: bytes and ETag unchanged.
    assert.equal(fs.readFileSync(path.join(work, 'out'), 'utf8'), 'tagged bytes');
  });

  it('an overwrite or a delete drops the tags; CopyObject copies or replaces them by x-amz-tagging-directive; multipart keeps x-amz-tagging', async () => {
    // Written with the cli, read back by hand (GetObjectTagging through the cli is the test above).
    const tagsOf = (key: string) => rawTags(env, 'sub', key);
    put('ow', '--tagging', 'old=1');
    put('ow');
    assert.deepEqual(await tagsOf('ow'), []);
    put('del', '--tagging', 'old=1');
    awsOk(env, ['s3api', 'delete-object', '--bucket', 'sub', '--key', 'del']);
    assert.equal(awsFail(env, ['s3api', 'get-object-tagging', '--bucket', 'sub', '--key', 'del']).code, 'NoSuchKey');
    put('del');
    assert.deepEqual(await tagsOf('del'), []);

    put('src', '--tagging', 'x=1&y=2');
    const copy = (dst: string, ...extra: string[]) => awsOk(env, ['s3api', 'copy-object', '--bucket', 'sub', '--key', dst, '--copy-source', 'sub/src', ...extra]);
    copy('c-default');
    assert.deepEqual(await tagsOf('c-default'), [['x', '1'], ['y', '2']]);
    copy('c-copy', '--tagging', 'ignored=1'); // COPY (the default) ignores x-amz-tagging, as S3 and MinIO
    assert.deepEqual(await tagsOf('c-copy'), [['x', '1'], ['y', '2']]);
    copy('c-replace', '--tagging-directive', 'REPLACE', '--tagging', 'z=3');
    assert.deepEqual(await tagsOf('c-replace'), [['z', '3']]);
    copy('c-none', '--tagging-directive', 'REPLACE');
    assert.deepEqual(await tagsOf('c-none'), []);
    const bogus = awsFail(env, ['s3api', 'copy-object', '--bucket', 'sub', '--key', 'c-bogus', '--copy-source', 'sub/src', '--tagging-directive', 'BOGUS']);
    assert.deepEqual([bogus.code, bogus.httpStatus], ['InvalidArgument', 400]);
    // Replacing only the tags of an object in place is a legal self-copy.
    copy('src', '--tagging-directive', 'REPLACE', '--tagging', 'self=1');
    // (copy-source is sub/src, destination sub/src)
    assert.deepEqual(await tagsOf('src'), [['self', '1']]);

    const up = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'sub', '--key', 'mp', '--tagging', 'm=1&n=2']);
    const part = awsOk(env, ['s3api', 'upload-part', '--bucket', 'sub', '--key', 'mp', '--upload-id', up.UploadId, '--part-number', '1', '--body', body]);
    awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'sub', '--key', 'mp', '--upload-id', up.UploadId, '--multipart-upload', JSON.stringify({ Parts: [{ PartNumber: 1, ETag: part.ETag }] })]);
    assert.deepEqual(await tagsOf('mp'), [['m', '1'], ['n', '2']]);
  });

  it('tag limits and character rules: BadRequest past 10 object tags, InvalidTag for long, duplicate or bad keys and values', async () => {
    put('lim');
    const tags = (n: number, prefix = 'k') => Array.from({ length: n }, (_, i): [string, string] => [`${prefix}${i}`, 'v']);
    const putTags = (ts: [string, string][]) => ['s3api', 'put-object-tagging', '--bucket', 'sub', '--key', 'lim', '--tagging', tagSet(ts)];
    const tooMany = awsFail(env, putTags(tags(11)));
    assert.deepEqual([tooMany.code, tooMany.httpStatus], ['BadRequest', 400]);
    awsOk(env, putTags([['k'.repeat(128), 'v'.repeat(256)], ...tags(9)]));
    assert.equal(tagsOf('lim').length, 10);
    const longKey = awsFail(env, putTags([['k'.repeat(129), 'v']]));
    assert.deepEqual([longKey.code, longKey.httpStatus], ['InvalidTag', 400]);
    assert.match(longKey.message, /TagKey/);
    for (const [ts, msg] of [
      [[['k', 'v'.repeat(257)]], /TagValue/],
      [[['k', '1'], ['k', '2']], /same key/],
      [[['a#b', '1']], /TagKey/],
      [[['', '1']], /TagKey/],
      [[['a', 'semi;colon']], /TagValue/],
    ] as [[string, string][], RegExp][]) {
      const r = await signedRequest(env, 'PUT', '/sub/lim', { tagging: '' }, tagsXml(ts));
      assert.deepEqual([r.status, errorCode(r.body)], [400, 'InvalidTag'], JSON.stringify(ts));
      assert.match(r.body, msg);
    }
    // A refused set leaves the stored one alone.
    assert.equal((await rawTags(env, 'sub', 'lim')).length, 10);
    // The header on PutObject obeys the same rules, and nothing is stored.
    const dup = awsFail(env, ['s3api', 'put-object', '--bucket', 'sub', '--key', 'lim-h', '--body', body, '--tagging', 'a=1&a=2']);
    assert.equal(dup.code, 'InvalidTag');
    assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'sub', '--key', 'lim-h']).httpStatus, 404);
    const bucketTooMany = awsFail(env, ['s3api', 'put-bucket-tagging', '--bucket', 'sub', '--tagging', tagSet(tags(51))]);
    assert.deepEqual([bucketTooMany.code, bucketTooMany.httpStatus], ['InvalidTag', 400]);
  });

  it('bad XML bodies get MalformedXML and leave the tags as they were', async () => {
    put('xml', '--tagging', 'keep=1');
    for (const doc of ['<Tagging><TagSet><Tag><Key>a</Key>', '<Other/>', '<Tagging/>', 'not xml']) {
      const r = await signedRequest(env, 'PUT', '/sub/xml', { tagging: '' }, doc);
      assert.equal(r.status, 400, doc);
      assert.equal(errorCode(r.body), 'MalformedXML', doc);
    }
    const acl = await signedRequest(env, 'PUT', '/sub', { acl: '' }, '<AccessControlPolicy><Owner>');
    assert.deepEqual([acl.status, errorCode(acl.body)], [400, 'MalformedXML']);
    assert.deepEqual(tagsOf('xml'), [['keep', '1']]);
  });

  it('bucket tags: NoSuchTagSet until set, 50 round-trip, delete-bucket-tagging removes them', () => {
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'btags']);
    const none = awsFail(env, ['s3api', 'get-bucket-tagging', '--bucket', 'btags']);
    assert.deepEqual([none.code, none.httpStatus], ['NoSuchTagSet', 404]);
    const fifty = Array.from({ length: 50 }, (_, i): [string, string] => [`team${i}`, `v${i}`]);
    awsOk(env, ['s3api', 'put-bucket-tagging', '--bucket', 'btags', '--tagging', tagSet(fifty)]);
    assert.deepEqual(pairs(awsOk(env, ['s3api', 'get-bucket-tagging', '--bucket', 'btags'])), fifty);
    awsOk(env, ['s3api', 'delete-bucket-tagging', '--bucket', 'btags']);
    assert.equal(awsFail(env, ['s3api', 'get-bucket-tagging', '--bucket', 'btags']).code, 'NoSuchTagSet');
  });

  it('ACL: the owner with FULL_CONTROL; private (header or the same policy back) accepted, anything else 400 AccessControlListNotSupported (as S3 with ACLs disabled)', async () => {
    const bucketAcl = awsOk(env, ['s3api', 'get-bucket-acl', '--bucket', 'sub']);
    const owner = { DisplayName: 'couchestor', ID: env.accessKeyId };
    assert.deepEqual(bucketAcl, { Owner: owner, Grants: [{ Grantee: { ...owner, Type: 'CanonicalUser' }, Permission: 'FULL_CONTROL' }] });
    put('acl');
    assert.deepEqual(awsOk(env, ['s3api', 'get-object-acl', '--bucket', 'sub', '--key', 'acl']), bucketAcl);
    awsOk(env, ['s3api', 'put-bucket-acl', '--bucket', 'sub', '--acl', 'private']);
    awsOk(env, ['s3api', 'put-object-acl', '--bucket', 'sub', '--key', 'acl', '--acl', 'private']);
    awsOk(env, ['s3api', 'put-bucket-acl', '--bucket', 'sub', '--access-control-policy', JSON.stringify(bucketAcl)]);
    for (const args of [
      ['put-bucket-acl', '--bucket', 'sub', '--acl', 'public-read'],
      ['put-bucket-acl', '--bucket', 'sub', '--grant-read', 'uri=http://acs.amazonaws.com/groups/global/AllUsers'],
      ['put-object', '--bucket', 'sub', '--key', 'acl-public', '--body', body, '--acl', 'public-read'],
    ]) {
      const r = awsFail(env, ['s3api', ...args]);
      // S3 with ObjectOwnership BucketOwnerEnforced answers so: a client error, not retried (a 501 is, by s3cmd for ~45 s).
      assert.deepEqual([r.code, r.httpStatus], ['AccessControlListNotSupported', 400], args.join(' '));
      assert.match(r.message, /^The bucket does not allow ACLs: .*CoucheStor/);
    }
    assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'sub', '--key', 'acl-public']).httpStatus, 404);
    const otherUser = `<AccessControlPolicy><Owner><ID>${env.accessKeyId}</ID></Owner><AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>someone-else</ID></Grantee><Permission>READ</Permission></Grant></AccessControlList></AccessControlPolicy>`;
    for (const [p, q, b, h] of [
      ['/sub/acl', { acl: '' }, '', { 'x-amz-acl': 'public-read-write' }],
      ['/sub', { acl: '' }, otherUser, {}],
      ['/sub/acl', { acl: '' }, '', {}], // neither a canned ACL nor a policy
    ] as [string, Record<string, string>, string, Record<string, string>][]) {
      const r = await signedRequest(env, 'PUT', p, q, b, h);
      assert.deepEqual([r.status, errorCode(r.body)], [400, b === '' && h['x-amz-acl'] === undefined ? 'MalformedXML' : 'AccessControlListNotSupported'], `${p} ${b} ${JSON.stringify(h)}`);
    }
    put('acl-private', '--acl', 'private');
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'acl-bucket', '--acl', 'private']);
  });

  it('bucket configurations: GET answers none configured (S3 code and status), DELETE 204 where S3 has one, PUT refused by name', async () => {
    const none: [string, string][] = [
      ['get-bucket-policy', 'NoSuchBucketPolicy'],
      ['get-bucket-cors', 'NoSuchCORSConfiguration'],
      ['get-bucket-lifecycle-configuration', 'NoSuchLifecycleConfiguration'],
      ['get-bucket-encryption', 'ServerSideEncryptionConfigurationNotFoundError'],
      ['get-bucket-website', 'NoSuchWebsiteConfiguration'],
      ['get-bucket-replication', 'ReplicationConfigurationNotFoundError'],
      ['get-object-lock-configuration', 'ObjectLockConfigurationNotFoundError'],
      ['get-bucket-ownership-controls', 'OwnershipControlsNotFoundError'],
      ['get-public-access-block', 'NoSuchPublicAccessBlockConfiguration'],
    ];
    for (const [cmd, code] of none) {
      const r = awsFail(env, ['s3api', cmd, '--bucket', 'sub']);
      assert.deepEqual([r.code, r.httpStatus], [code, 404], cmd);
    }
    assert.deepEqual(awsOk(env, ['s3api', 'get-bucket-request-payment', '--bucket', 'sub']), { Payer: 'BucketOwner' });
    for (const cmd of ['get-bucket-notification-configuration', 'get-bucket-logging', 'get-bucket-accelerate-configuration', 'get-bucket-versioning']) {
      assert.equal(awsOk(env, ['s3api', cmd, '--bucket', 'sub']), '', cmd); // an empty configuration: the cli prints nothing
    }
    for (const cmd of ['delete-bucket-policy', 'delete-bucket-cors', 'delete-public-access-block']) awsOk(env, ['s3api', cmd, '--bucket', 'sub']);
    for (const sub of ['policy', 'cors', 'lifecycle', 'encryption', 'website', 'replication', 'ownershipControls', 'publicAccessBlock', 'tagging']) {
      assert.equal((await signedRequest(env, 'DELETE', '/sub', { [sub]: '' })).status, 204, sub);
    }
    // A DELETE with a subresource S3 has no DELETE for is refused, never taken for DeleteBucket.
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'empty-one']);
    for (const sub of ['acl', 'notification', 'logging', 'versioning', 'object-lock', 'uploads', 'location']) {
      const r = await signedRequest(env, 'DELETE', '/empty-one', { [sub]: '' });
      assert.deepEqual([r.status, errorCode(r.body)], [405, 'MethodNotAllowed'], sub);
    }
    awsOk(env, ['s3api', 'head-bucket', '--bucket', 'empty-one']);
    const refused: [string[], RegExp][] = [
      [['put-bucket-policy', '--policy', '{"Version":"2012-10-17","Statement":[]}'], /does not support bucket policies/],
      [['put-bucket-cors', '--cors-configuration', '{"CORSRules":[{"AllowedMethods":["GET"],"AllowedOrigins":["*"]}]}'], /does not support CORS/],
      [['put-bucket-versioning', '--versioning-configuration', 'Status=Enabled'], /does not support object versioning/],
      [['put-bucket-logging', '--bucket-logging-status', '{"LoggingEnabled":{"TargetBucket":"sub","TargetPrefix":"log/"}}'], /does not support server access logging/],
    ];
    for (const [args, msg] of refused) {
      const r = awsFail(env, ['s3api', ...args.slice(0, 1), '--bucket', 'sub', ...args.slice(1)]);
      assert.deepEqual([r.code, r.httpStatus], ['NotImplemented', 501], args[0]);
      assert.match(r.message, msg);
    }
    for (const [sub, msg] of [
      ['lifecycle', /does not support lifecycle/],
      ['encryption', /does not support bucket encryption/],
      ['website', /does not support static website/],
      ['replication', /does not support bucket replication/],
      ['object-lock', /does not support object lock/],
      ['ownershipControls', /does not support object ownership/],
      ['publicAccessBlock', /does not support public access block/],
      ['requestPayment', /does not support requester pays/],
      ['accelerate', /does not support transfer acceleration/],
      ['notification', /does not support bucket event notifications/],
    ] as [string, RegExp][]) {
      const enabling = sub === 'requestPayment' ? '<RequestPaymentConfiguration><Payer>Requester</Payer></RequestPaymentConfiguration>' : sub === 'accelerate' ? '<AccelerateConfiguration><Status>Enabled</Status></AccelerateConfiguration>' : '<NotificationConfiguration><QueueConfiguration/></NotificationConfiguration>';
      const r = await signedRequest(env, 'PUT', '/sub', { [sub]: '' }, enabling);
      assert.deepEqual([r.status, errorCode(r.body)], [501, 'NotImplemented'], sub);
      assert.match(r.body, msg);
    }
    // A PUT that restates the default (what a disabling client sends) is accepted.
    awsOk(env, ['s3api', 'put-bucket-versioning', '--bucket', 'sub', '--versioning-configuration', 'Status=Suspended']);
    awsOk(env, ['s3api', 'put-bucket-notification-configuration', '--bucket', 'sub', '--notification-configuration', '{}']);
    awsOk(env, ['s3api', 'put-bucket-logging', '--bucket', 'sub', '--bucket-logging-status', '{}']);
  });

  it('unsupported subresources name themselves; a missing bucket is NoSuchBucket and a missing key NoSuchKey first', async () => {
    put('u');
    const cases: [string[], string, number][] = [
      [['get-object-torrent', '--bucket', 'sub', '--key', 'u', path.join(work, 'torrent')], 'NotImplemented', 501],
      [['get-object-retention', '--bucket', 'sub', '--key', 'u'], 'InvalidRequest', 400],
      [['restore-object', '--bucket', 'sub', '--key', 'u', '--restore-request', 'Days=1'], 'InvalidObjectState', 403],
      [['get-bucket-analytics-configuration', '--bucket', 'sub', '--id', 'x'], 'NotImplemented', 501],
    ];
    for (const [args, code, httpStatus] of cases) {
      const r = awsFail(env, ['s3api', ...args]);
      assert.deepEqual([r.code, r.httpStatus], [code, httpStatus], args[0]);
      assert.match(r.message, /not supported by CoucheStor/, args[0]);
    }
    for (const [method, p, sub, code, httpStatus] of [
      ['GET', '/sub/u', 'legal-hold', 'InvalidRequest', 400],
      ['GET', '/sub', 'inventory', 'NotImplemented', 501],
      ['GET', '/sub', 'metrics', 'NotImplemented', 501],
      ['GET', '/sub', 'intelligent-tiering', 'NotImplemented', 501],
      ['POST', '/sub/u', 'select', 'NotImplemented', 501],
    ] as [string, string, string, string, number][]) {
      const r = await signedRequest(env, method, p, { [sub]: '' });
      assert.deepEqual([r.status, errorCode(r.body)], [httpStatus, code], sub);
      assert.match(r.body, /not supported by CoucheStor/, sub);
    }
    for (const args of [['get-bucket-policy'], ['get-bucket-tagging'], ['list-object-versions']]) {
      const r = awsFail(env, ['s3api', args[0]!, '--bucket', 'no-such-bucket', ...args.slice(1)]);
      assert.deepEqual([r.code, r.httpStatus], ['NoSuchBucket', 404], args[0]);
    }
    for (const [method, sub] of [['GET', 'acl'], ['GET', 'analytics'], ['PUT', 'policy'], ['DELETE', 'tagging'], ['GET', 'cors']]) {
      const r = await signedRequest(env, method!, '/no-such-bucket', { [sub!]: '' });
      assert.deepEqual([r.status, errorCode(r.body)], [404, 'NoSuchBucket'], `${method} ${sub}`);
    }
    for (const args of [['get-object-tagging'], ['put-object-tagging', '--tagging', '{"TagSet":[]}']]) {
      const r = awsFail(env, ['s3api', args[0]!, '--bucket', 'sub', '--key', 'no-such-key', ...args.slice(1)]);
      assert.deepEqual([r.code, r.httpStatus], ['NoSuchKey', 404], args[0]);
    }
    for (const [method, sub] of [['DELETE', 'tagging'], ['GET', 'acl'], ['PUT', 'acl']]) {
      const r = await signedRequest(env, method!, '/sub/no-such-key', { [sub!]: '' }, '', { 'x-amz-acl': 'private' });
      assert.deepEqual([r.status, errorCode(r.body)], [404, 'NoSuchKey'], `${method} ${sub}`);
    }
  });

  it('list-object-versions: every object once, VersionId null and latest; prefix, delimiter, key-marker and max-keys page like list-objects-v2', () => {
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'vers']);
    const keys = ['a/1', 'a/2', 'b', 'c', 'd/x', 'e'];
    for (const k of keys) awsOk(env, ['s3api', 'put-object', '--bucket', 'vers', '--key', k, '--body', body]);
    const all = awsOk(env, ['s3api', 'list-object-versions', '--bucket', 'vers']);
    assert.deepEqual(all.Versions.map((v: { Key: string }) => v.Key), keys);
    const v2 = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'vers']);
    for (const [i, v] of all.Versions.entries()) {
      assert.equal(v.VersionId, 'null');
      assert.equal(v.IsLatest, true);
      assert.equal(v.ETag, v2.Contents[i].ETag);
      assert.equal(v.Size, v2.Contents[i].Size);
      assert.equal(v.LastModified, v2.Contents[i].LastModified);
    }
    // The cli's own paginator, two keys a page, follows NextKeyMarker/NextVersionIdMarker.
    assert.deepEqual(awsOk(env, ['s3api', 'list-object-versions', '--bucket', 'vers', '--page-size', '2']).Versions.map((v: { Key: string }) => v.Key), keys);
    const page = (...extra: string[]) => awsOk(env, ['s3api', 'list-object-versions', '--bucket', 'vers', '--no-paginate', '--delimiter', '/', '--max-keys', '2', ...extra]);
    const p1 = page();
    assert.deepEqual([p1.Versions.map((v: { Key: string }) => v.Key), p1.CommonPrefixes.map((p: { Prefix: string }) => p.Prefix), p1.IsTruncated, p1.NextKeyMarker, p1.NextVersionIdMarker], [['b'], ['a/'], true, 'b', 'null']);
    const p2 = page('--key-marker', p1.NextKeyMarker, '--version-id-marker', p1.NextVersionIdMarker);
    assert.deepEqual([p2.Versions.map((v: { Key: string }) => v.Key), p2.CommonPrefixes.map((p: { Prefix: string }) => p.Prefix), p2.IsTruncated, p2.NextKeyMarker], [['c'], ['d/'], true, 'd/']);
    const p3 = page('--key-marker', p2.NextKeyMarker);
    assert.deepEqual([p3.Versions.map((v: { Key: string }) => v.Key), p3.CommonPrefixes, p3.IsTruncated], [['e'], undefined, false]);
    assert.deepEqual(awsOk(env, ['s3api', 'list-object-versions', '--bucket', 'vers', '--prefix', 'a/']).Versions.map((v: { Key: string }) => v.Key), ['a/1', 'a/2']);
    assert.equal(awsFail(env, ['s3api', 'list-object-versions', '--bucket', 'vers', '--version-id-marker', 'null']).code, 'InvalidArgument');
    assert.equal(awsFail(env, ['s3api', 'list-object-versions', '--bucket', 'vers', '--key-marker', 'b', '--version-id-marker', '3']).code, 'InvalidArgument');
  });

  it('object and bucket tags survive a SIGKILL and restart; untagged objects stay untagged', async () => {
    put('persist', '--tagging', 'survives=yes&n=2');
    put('plain');
    awsOk(env, ['s3api', 'put-bucket-tagging', '--bucket', 'sub', '--tagging', tagSet([['owner', 'storage']])]);
    await env.daemon.kill(); // acknowledged = durable: no clean shutdown needed
    env.sdk.destroy();
    fs.rmSync(env.home, { recursive: true, force: true });
    env = await startS3({ dataDir });
    assert.deepEqual(tagsOf('persist'), [['survives', 'yes'], ['n', '2']]);
    assert.deepEqual(tagsOf('plain'), []);
    assert.deepEqual(pairs(awsOk(env, ['s3api', 'get-bucket-tagging', '--bucket', 'sub'])), [['owner', 'storage']]);
    assert.equal(getObject('persist').TagCount, 2);
    assert.equal(fs.readFileSync(path.join(work, 'out'), 'utf8'), 'tagged bytes');
  });
});
