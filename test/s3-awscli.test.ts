// The S3 front end driven by the real aws cli (Debian's awscli v2): the
// high-level `aws s3` commands and one `aws s3api` call per operation.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aws, awsOk, errorCode, startS3, type S3Env } from './helpers/s3-env.js';

const md5hex = (b: Buffer) => createHash('md5').update(b).digest('hex');

describe('s3 with the aws cli', () => {
  let env: S3Env;
  let work: string;
  before(async () => {
    env = await startS3();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-awscli-'));
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('aws s3 mb/cp/ls/rm round-trips single-part and multipart objects byte-exact', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-basic']);
    const small = randomBytes(1024 * 1024 + 3);
    const large = randomBytes(20 * 1024 * 1024 + 11); // above the cli's 8 MiB multipart threshold
    fs.writeFileSync(path.join(work, 'small'), small);
    fs.writeFileSync(path.join(work, 'large'), large);
    awsOk(env, ['s3', 'cp', '--only-show-errors', path.join(work, 'small'), 's3://cli-basic/small']);
    awsOk(env, ['s3', 'cp', '--only-show-errors', path.join(work, 'large'), 's3://cli-basic/dir/large']);
    const ls = awsOk(env, ['s3', 'ls', '--recursive', 's3://cli-basic']) as string;
    assert.match(ls, new RegExp(`\\s${small.length} small$`, 'm'));
    assert.match(ls, new RegExp(`\\s${large.length} dir/large$`, 'm'));
    const headSmall = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-basic', '--key', 'small']);
    assert.equal(headSmall.ETag, `"${md5hex(small)}"`);
    const headLarge = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-basic', '--key', 'dir/large']);
    assert.match(headLarge.ETag, /^"[0-9a-f]{32}-3"$/);
    assert.equal(headLarge.ContentLength, large.length);
    awsOk(env, ['s3', 'cp', '--only-show-errors', 's3://cli-basic/small', path.join(work, 'small.back')]);
    awsOk(env, ['s3', 'cp', '--only-show-errors', 's3://cli-basic/dir/large', path.join(work, 'large.back')]);
    assert.ok(fs.readFileSync(path.join(work, 'small.back')).equals(small));
    assert.ok(fs.readFileSync(path.join(work, 'large.back')).equals(large));
    awsOk(env, ['s3', 'rm', '--only-show-errors', '--recursive', 's3://cli-basic']);
    assert.equal(awsOk(env, ['s3', 'ls', '--recursive', 's3://cli-basic']), '');
    awsOk(env, ['s3', 'rb', 's3://cli-basic']);
    const buckets = awsOk(env, ['s3api', 'list-buckets']);
    assert.ok(!buckets.Buckets.some((b: { Name: string }) => b.Name === 'cli-basic'));
  });

  it('aws s3 sync round-trips a tree whose names have spaces, unicode, +, % and ~', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-sync']);
    const src = path.join(work, 'tree');
    const names = ['space name.txt', 'unicodé ✓ 日本.bin', 'plus+sign', 'percent%20literal', 'tilde~and(paren)', 'deep/er/still/x', "quote'dq\"", 'star*hash#amp&eq=q?'];
    const files = new Map<string, Buffer>();
    for (const n of names) {
      const p = path.join(src, n);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      const data = randomBytes(1000 + n.length);
      fs.writeFileSync(p, data);
      files.set(n, data);
    }
    awsOk(env, ['s3', 'sync', '--only-show-errors', src, 's3://cli-sync/t']);
    const listed = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-sync']);
    assert.deepEqual(listed.Contents.map((c: { Key: string }) => c.Key).sort(), names.map((n) => `t/${n}`).sort());
    const dst = path.join(work, 'tree.back');
    awsOk(env, ['s3', 'sync', '--only-show-errors', 's3://cli-sync/t', dst]);
    for (const [n, data] of files) assert.ok(fs.readFileSync(path.join(dst, n)).equals(data), n);
    // A second sync has nothing to do: sizes and times listed back match.
    const again = aws(env, ['s3', 'sync', '--dryrun', src, 's3://cli-sync/t']);
    assert.equal(again.status, 0);
    assert.equal(again.stdout.trim(), '');
  });

  it('keys with ../ and odd characters are opaque strings, never paths', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-keys']);
    const body = path.join(work, 'keybody');
    fs.writeFileSync(body, 'opaque');
    const keys = ['../escape', '../../../../../../tmp/s3-escape-probe', 'a/./b/../c', '/leading', 'trailing/', '%2F%25', ' lead-space', 'ü/ñ/€', 'x'.repeat(1024)];
    for (const key of keys) awsOk(env, ['s3api', 'put-object', '--bucket', 'cli-keys', '--key', key, '--body', body]);
    const listed = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-keys']);
    // Listing is in UTF-8 byte order, which for these keys is JS code-unit order.
    assert.deepEqual(listed.Contents.map((c: { Key: string }) => c.Key), [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    for (const key of keys) {
      const out = path.join(work, 'keyout');
      awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-keys', '--key', key, out]);
      assert.equal(fs.readFileSync(out, 'utf8'), 'opaque', key);
    }
    assert.ok(!fs.existsSync('/tmp/s3-escape-probe'));
    // Bytes live only as numbered segment files under the pool's objects dir.
    const poolObjects = path.join(env.daemon.dataDir, 'pools', 'hot-0', 'objects');
    for (const sub of fs.readdirSync(poolObjects)) {
      for (const f of fs.readdirSync(path.join(poolObjects, sub))) assert.match(f, /^[0-9a-f]{12}\.obj$/);
    }
    const tooLong = aws(env, ['s3api', 'put-object', '--bucket', 'cli-keys', '--key', 'x'.repeat(1025), '--body', body]);
    assert.notEqual(tooLong.status, 0);
    assert.match(tooLong.stderr, /KeyTooLongError/);
  });

  it('s3api object operations: metadata and content headers, ranges, copy, delete-objects', () => {
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'cli-ops']);
    awsOk(env, ['s3api', 'head-bucket', '--bucket', 'cli-ops']);
    const data = randomBytes(300_000);
    const file = path.join(work, 'ops');
    fs.writeFileSync(file, data);
    const md5b64 = createHash('md5').update(data).digest('base64');
    const put = awsOk(env, [
      's3api', 'put-object', '--bucket', 'cli-ops', '--key', 'doc.bin', '--body', file, '--content-md5', md5b64,
      '--content-type', 'application/x-test', '--content-disposition', 'attachment; filename="d.bin"', '--cache-control', 'max-age=60',
      '--content-language', 'fr', '--metadata', 'color=blue,owner=team-a',
    ]);
    assert.equal(put.ETag, `"${md5hex(data)}"`);
    const head = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-ops', '--key', 'doc.bin']);
    assert.deepEqual(head.Metadata, { color: 'blue', owner: 'team-a' });
    assert.equal(head.ContentType, 'application/x-test');
    assert.equal(head.ContentDisposition, 'attachment; filename="d.bin"');
    assert.equal(head.CacheControl, 'max-age=60');
    assert.equal(head.ContentLanguage, 'fr');
    assert.equal(head.ContentLength, data.length);

    const out = path.join(work, 'range');
    const ranged = awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-ops', '--key', 'doc.bin', '--range', 'bytes=1000-2999', out]);
    assert.equal(ranged.ContentRange, `bytes 1000-2999/${data.length}`);
    assert.ok(fs.readFileSync(out).equals(data.subarray(1000, 3000)));
    awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-ops', '--key', 'doc.bin', '--range', 'bytes=-10', out]);
    assert.ok(fs.readFileSync(out).equals(data.subarray(data.length - 10)));

    const copied = awsOk(env, ['s3api', 'copy-object', '--bucket', 'cli-ops', '--key', 'copy.bin', '--copy-source', 'cli-ops/doc.bin']);
    assert.equal(copied.CopyObjectResult.ETag, `"${md5hex(data)}"`);
    const headCopy = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-ops', '--key', 'copy.bin']);
    assert.deepEqual(headCopy.Metadata, { color: 'blue', owner: 'team-a' });
    assert.equal(headCopy.ContentType, 'application/x-test');
    awsOk(env, ['s3api', 'copy-object', '--bucket', 'cli-ops', '--key', 'copy.bin', '--copy-source', 'cli-ops/copy.bin', '--metadata-directive', 'REPLACE', '--metadata', 'color=red', '--content-type', 'text/plain']);
    const headReplaced = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-ops', '--key', 'copy.bin']);
    assert.deepEqual(headReplaced.Metadata, { color: 'red' });
    assert.equal(headReplaced.ContentType, 'text/plain');
    const selfCopy = aws(env, ['s3api', 'copy-object', '--bucket', 'cli-ops', '--key', 'copy.bin', '--copy-source', 'cli-ops/copy.bin']);
    assert.match(selfCopy.stderr, /InvalidRequest/);

    const del = awsOk(env, ['s3api', 'delete-objects', '--bucket', 'cli-ops', '--delete', JSON.stringify({ Objects: [{ Key: 'copy.bin' }, { Key: 'never-existed' }] })]);
    assert.deepEqual(del.Deleted.map((d: { Key: string }) => d.Key).sort(), ['copy.bin', 'never-existed']);
    const missing = aws(env, ['s3api', 'head-object', '--bucket', 'cli-ops', '--key', 'copy.bin']);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /404/);
    awsOk(env, ['s3api', 'delete-object', '--bucket', 'cli-ops', '--key', 'doc.bin']);
    awsOk(env, ['s3api', 'delete-bucket', '--bucket', 'cli-ops']);
    assert.match(aws(env, ['s3api', 'head-bucket', '--bucket', 'cli-ops']).stderr, /404/);
  });

  it('list-objects v1 and v2: prefix, delimiter, max-keys pages, start-after', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-list']);
    const body = path.join(work, 'lbody');
    fs.writeFileSync(body, 'x');
    const keys = ['a/1', 'a/2', 'a/b/3', 'b/1', 'c', 'd/e/f', 'e'];
    for (const k of keys) awsOk(env, ['s3api', 'put-object', '--bucket', 'cli-list', '--key', k, '--body', body]);
    const v2 = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-list', '--delimiter', '/']);
    assert.deepEqual(v2.Contents.map((c: { Key: string }) => c.Key), ['c', 'e']);
    assert.deepEqual(v2.CommonPrefixes.map((c: { Prefix: string }) => c.Prefix), ['a/', 'b/', 'd/']);
    const inA = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-list', '--prefix', 'a/', '--delimiter', '/']);
    assert.deepEqual(inA.Contents.map((c: { Key: string }) => c.Key), ['a/1', 'a/2']);
    assert.deepEqual(inA.CommonPrefixes.map((c: { Prefix: string }) => c.Prefix), ['a/b/']);
    // --page-size makes the cli follow continuation tokens; the union must be every item once.
    for (const api of ['list-objects-v2', 'list-objects']) {
      const paged = awsOk(env, ['s3api', api, '--bucket', 'cli-list', '--delimiter', '/', '--page-size', '2']);
      assert.deepEqual(paged.Contents.map((c: { Key: string }) => c.Key), ['c', 'e'], api);
      assert.deepEqual(paged.CommonPrefixes.map((c: { Prefix: string }) => c.Prefix), ['a/', 'b/', 'd/'], api);
      const flat = awsOk(env, ['s3api', api, '--bucket', 'cli-list', '--page-size', '3']);
      assert.deepEqual(flat.Contents.map((c: { Key: string }) => c.Key), keys, api);
    }
    const one = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-list', '--max-keys', '1', '--no-paginate']);
    assert.equal(one.KeyCount, 1);
    assert.equal(one.IsTruncated, true);
    assert.ok(one.NextContinuationToken);
    const startAfter = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'cli-list', '--start-after', 'b/1']);
    assert.deepEqual(startAfter.Contents.map((c: { Key: string }) => c.Key), ['c', 'd/e/f', 'e']);
  });

  it('s3api multipart: create, upload-part, list-parts, list-multipart-uploads, complete, abort', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-mpu']);
    const create = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'cli-mpu', '--key', 'mp obj', '--metadata', 'k=v', '--content-type', 'video/x-test']);
    const uploadId: string = create.UploadId;
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(5 * 1024 * 1024 + 1), randomBytes(12345)];
    const etags: string[] = [];
    parts.forEach((p, i) => {
      const f = path.join(work, `part${i}`);
      fs.writeFileSync(f, p);
      const r = awsOk(env, ['s3api', 'upload-part', '--bucket', 'cli-mpu', '--key', 'mp obj', '--upload-id', uploadId, '--part-number', String(i + 1), '--body', f]);
      assert.equal(r.ETag, `"${md5hex(p)}"`);
      etags.push(r.ETag);
    });
    const listed = awsOk(env, ['s3api', 'list-parts', '--bucket', 'cli-mpu', '--key', 'mp obj', '--upload-id', uploadId]);
    assert.deepEqual(listed.Parts.map((p: { PartNumber: number; Size: number }) => [p.PartNumber, p.Size]), parts.map((p, i) => [i + 1, p.length]));
    const uploads = awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', 'cli-mpu']);
    assert.deepEqual(uploads.Uploads.map((u: { Key: string; UploadId: string }) => [u.Key, u.UploadId]), [['mp obj', uploadId]]);
    const done = awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'cli-mpu', '--key', 'mp obj', '--upload-id', uploadId, '--multipart-upload', JSON.stringify({ Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) })]);
    const expectedEtag = createHash('md5').update(Buffer.concat(parts.map((p) => createHash('md5').update(p).digest()))).digest('hex') + '-3';
    assert.equal(done.ETag, `"${expectedEtag}"`);
    const out = path.join(work, 'mp.back');
    const got = awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-mpu', '--key', 'mp obj', out]);
    assert.equal(got.ContentType, 'video/x-test');
    assert.deepEqual(got.Metadata, { k: 'v' });
    assert.ok(fs.readFileSync(out).equals(Buffer.concat(parts)));
    assert.equal(awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', 'cli-mpu']).Uploads, undefined);

    const aborted = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'cli-mpu', '--key', 'gone']).UploadId;
    awsOk(env, ['s3api', 'upload-part', '--bucket', 'cli-mpu', '--key', 'gone', '--upload-id', aborted, '--part-number', '1', '--body', path.join(work, 'part2')]);
    awsOk(env, ['s3api', 'abort-multipart-upload', '--bucket', 'cli-mpu', '--key', 'gone', '--upload-id', aborted]);
    assert.match(aws(env, ['s3api', 'list-parts', '--bucket', 'cli-mpu', '--key', 'gone', '--upload-id', aborted]).stderr, /NoSuchUpload/);
    assert.match(aws(env, ['s3api', 'head-object', '--bucket', 'cli-mpu', '--key', 'gone']).stderr, /404/);
  });

  it('get-object and head-object by --part-number: each part of a multipart object, a single-PUT object as one part', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-partget']);
    const whole = randomBytes(20 * 1024 * 1024 + 11); // the cli uploads 8 MiB parts: 8 + 8 + 4 MiB + 11
    fs.writeFileSync(path.join(work, 'partget'), whole);
    awsOk(env, ['s3', 'cp', '--only-show-errors', path.join(work, 'partget'), 's3://cli-partget/mp']);
    const partBytes = 8 * 1024 * 1024;
    const bounds = [0, partBytes, 2 * partBytes, whole.length];
    for (let n = 1; n <= 3; n++) {
      const out = path.join(work, `partget.${n}`);
      const got = awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-partget', '--key', 'mp', '--part-number', String(n), out]);
      const [start, end] = [bounds[n - 1]!, bounds[n]!];
      assert.equal(got.PartsCount, 3);
      assert.equal(got.ContentLength, end - start);
      assert.equal(got.ContentRange, `bytes ${start}-${end - 1}/${whole.length}`);
      assert.ok(fs.readFileSync(out).equals(whole.subarray(start, end)), `part ${n} bytes`);
      const head = awsOk(env, ['s3api', 'head-object', '--bucket', 'cli-partget', '--key', 'mp', '--part-number', String(n)]);
      assert.equal(head.ContentLength, end - start);
      assert.equal(head.PartsCount, 3);
    }
    assert.match(aws(env, ['s3api', 'get-object', '--bucket', 'cli-partget', '--key', 'mp', '--part-number', '4', path.join(work, 'x')]).stderr, /InvalidPartNumber/);
    assert.match(aws(env, ['s3api', 'get-object', '--bucket', 'cli-partget', '--key', 'mp', '--part-number', '10001', path.join(work, 'x')]).stderr, /InvalidArgument/);
    assert.match(aws(env, ['s3api', 'get-object', '--bucket', 'cli-partget', '--key', 'mp', '--part-number', '1', '--range', 'bytes=0-9', path.join(work, 'x')]).stderr, /InvalidRequest/);

    const single = randomBytes(3000);
    fs.writeFileSync(path.join(work, 'partget.single'), single);
    awsOk(env, ['s3api', 'put-object', '--bucket', 'cli-partget', '--key', 'one', '--body', path.join(work, 'partget.single')]);
    const out = path.join(work, 'partget.one');
    const one = awsOk(env, ['s3api', 'get-object', '--bucket', 'cli-partget', '--key', 'one', '--part-number', '1', out]);
    assert.equal(one.ContentRange, `bytes 0-${single.length - 1}/${single.length}`);
    assert.ok(fs.readFileSync(out).equals(single));
    assert.match(aws(env, ['s3api', 'head-object', '--bucket', 'cli-partget', '--key', 'one', '--part-number', '2']).stderr, /416/);
  });

  it('aws s3 presign URLs work for a plain HTTP client; tampered or expired ones are refused', async () => {
    awsOk(env, ['s3', 'mb', 's3://cli-presign']);
    const file = path.join(work, 'presigned');
    fs.writeFileSync(file, 'presigned content');
    awsOk(env, ['s3', 'cp', '--only-show-errors', file, 's3://cli-presign/a b+c']);
    const url = (awsOk(env, ['s3', 'presign', 's3://cli-presign/a b+c', '--expires-in', '300']) as string).trim();
    assert.match(url, /X-Amz-Signature=/);
    const ok = await fetch(url);
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), 'presigned content');
    const tampered = await fetch(url.replace('X-Amz-Expires=300', 'X-Amz-Expires=301'));
    assert.equal(tampered.status, 403);
    assert.equal(errorCode(await tampered.text()), 'SignatureDoesNotMatch');
    const otherKey = await fetch(url.replace('a%20b%2Bc', 'other'));
    assert.equal(otherKey.status, 403);
    const expired = (awsOk(env, ['s3', 'presign', 's3://cli-presign/a b+c', '--expires-in', '0']) as string).trim();
    const refused = await fetch(expired);
    assert.equal(refused.status, 403);
    const xml = await refused.text();
    assert.equal(errorCode(xml), 'AccessDenied');
    assert.match(xml, /Request has expired/);
  });

  it('errors come back as S3 codes the cli understands', () => {
    awsOk(env, ['s3', 'mb', 's3://cli-errs']);
    assert.match(aws(env, ['s3api', 'create-bucket', '--bucket', 'cli-errs']).stderr, /BucketAlreadyOwnedByYou/);
    assert.match(aws(env, ['s3api', 'get-object', '--bucket', 'cli-errs', '--key', 'nope', path.join(work, 'nope')]).stderr, /NoSuchKey/);
    assert.match(aws(env, ['s3api', 'list-objects-v2', '--bucket', 'no-such-bucket-here']).stderr, /NoSuchBucket/);
    assert.match(aws(env, ['s3api', 'create-bucket', '--bucket', 'Bad_Name']).stderr, /InvalidBucketName/);
    const body = path.join(work, 'ebody');
    fs.writeFileSync(body, 'x');
    awsOk(env, ['s3api', 'put-object', '--bucket', 'cli-errs', '--key', 'k', '--body', body]);
    assert.match(aws(env, ['s3api', 'delete-bucket', '--bucket', 'cli-errs']).stderr, /BucketNotEmpty/);
    assert.match(aws(env, ['s3api', 'put-object', '--bucket', 'cli-errs', '--key', 'k2', '--body', body, '--content-md5', createHash('md5').update('y').digest('base64')]).stderr, /BadDigest/);
    assert.match(aws(env, ['s3api', 'head-object', '--bucket', 'cli-errs', '--key', 'k2']).stderr, /404/);
    assert.match(aws(env, ['s3api', 'get-object', '--bucket', 'cli-errs', '--key', 'k', '--range', 'bytes=5-9', path.join(work, 'r')]).stderr, /InvalidRange/);
    const wrong = { ...env, secretAccessKey: 'wrong-secret-wrong-secret-wrong' };
    assert.match(aws(wrong, ['s3api', 'list-buckets']).stderr, /SignatureDoesNotMatch/);
    const unknown = { ...env, accessKeyId: 'AKIDNOTKNOWNTOUS000' };
    assert.match(aws(unknown, ['s3api', 'list-buckets']).stderr, /InvalidAccessKeyId/);
  });
});
