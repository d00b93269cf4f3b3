// GetObjectAttributes (GET /bucket/key?attributes) driven by the real aws cli:
// ETag, ObjectSize, StorageClass, a multipart object's parts numbered as
// GetObject ?partNumber reads them (by position) and paging, no invented
// checksum, versionId "null" only.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { awsFail, awsOk, errorCode, signedRequest, startS3, type S3Env } from './helpers/s3-env.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest();
const ALL = ['--object-attributes', 'ETag', 'Checksum', 'ObjectParts', 'StorageClass', 'ObjectSize'];
type PartsOut = { TotalPartsCount?: number; PartNumberMarker?: number | string; NextPartNumberMarker?: number | string; MaxParts?: number; IsTruncated?: boolean; Parts?: { PartNumber: number; Size: number }[] };

const partPairs = (p: PartsOut) => (p.Parts ?? []).map((x) => [x.PartNumber, x.Size]);

describe('GetObjectAttributes with the aws cli', () => {
  let env: S3Env;
  let dataDir: string;
  let work: string;
  const single = randomBytes(3000);
  const part1 = randomBytes(5 * 1024 * 1024);
  const part3 = randomBytes(1234);
  let multipartEtag: string;

  const attrs = (key: string, ...extra: string[]) => awsOk(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', key, ...ALL, ...extra]);

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 's3-attr-data-'));
    env = await startS3({ dataDir });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-attr-'));
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'attr']);
    fs.writeFileSync(path.join(work, 'single'), single);
    awsOk(env, ['s3api', 'put-object', '--bucket', 'attr', '--key', 'single', '--body', path.join(work, 'single')]);
    // Parts 1 and 3 completed, part 2 uploaded and left out: the answer numbers them 1 and 2, the numbers GetObject reads them by.
    const uploadId = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'attr', '--key', 'mp']).UploadId as string;
    const etags: Record<number, string> = {};
    for (const [n, bytes] of [[1, part1], [2, randomBytes(100)], [3, part3]] as [number, Buffer][]) {
      const f = path.join(work, `part${n}`);
      fs.writeFileSync(f, bytes);
      etags[n] = awsOk(env, ['s3api', 'upload-part', '--bucket', 'attr', '--key', 'mp', '--upload-id', uploadId, '--part-number', String(n), '--body', f]).ETag;
    }
    awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'attr', '--key', 'mp', '--upload-id', uploadId, '--multipart-upload', JSON.stringify({ Parts: [1, 3].map((n) => ({ PartNumber: n, ETag: etags[n] })) })]);
    multipartEtag = `${createHash('md5').update(Buffer.concat([md5(part1), md5(part3)])).digest('hex')}-2`;
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('a single-PUT object: unquoted ETag, size, STANDARD, Last-Modified; no ObjectParts and no Checksum', () => {
    const a = attrs('single');
    assert.equal(a.ETag, md5(single).toString('hex'));
    assert.equal(a.ObjectSize, single.length);
    assert.equal(a.StorageClass, 'STANDARD');
    assert.equal(a.ObjectParts, undefined);
    assert.equal(a.Checksum, undefined);
    const head = awsOk(env, ['s3api', 'head-object', '--bucket', 'attr', '--key', 'single']);
    assert.equal(a.LastModified, head.LastModified);
    // Only what was asked for.
    const sizeOnly = awsOk(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', 'single', '--object-attributes', 'ObjectSize']);
    assert.deepEqual(Object.keys(sizeOnly).sort(), ['LastModified', 'ObjectSize']);
  });

  it('an object uploaded with a CRC32 checksum: the checksum was verified but is not kept, so none is answered', () => {
    fs.writeFileSync(path.join(work, 'summed'), 'checksummed bytes');
    const put = awsOk(env, ['s3api', 'put-object', '--bucket', 'attr', '--key', 'summed', '--body', path.join(work, 'summed'), '--checksum-algorithm', 'CRC32']);
    assert.ok(put.ETag);
    const a = attrs('summed');
    assert.equal(a.ObjectSize, 'checksummed bytes'.length);
    assert.equal(a.Checksum, undefined);
  });

  it('a multipart object completed from parts 1 and 3: part count, parts numbered 1 and 2 (what get-object --part-number reads) with their sizes, the multipart ETag', () => {
    const a = attrs('mp');
    assert.equal(a.ETag, multipartEtag);
    assert.equal(a.ObjectSize, part1.length + part3.length);
    assert.equal(a.Checksum, undefined);
    const p = a.ObjectParts as PartsOut;
    assert.equal(p.TotalPartsCount, 2);
    assert.deepEqual(partPairs(p), [[1, part1.length], [2, part3.length]]);
    assert.equal(p.IsTruncated, false);
    assert.equal(p.MaxParts, 1000);
    assert.equal(Number(p.PartNumberMarker), 0);
    assert.equal(Number(p.NextPartNumberMarker), 2);
    // GetObject ?partNumber=2 is the second part (the parts in order), the bytes of part 3.
    const out = path.join(work, 'second');
    awsOk(env, ['s3api', 'get-object', '--bucket', 'attr', '--key', 'mp', '--part-number', '2', out]);
    assert.ok(fs.readFileSync(out).equals(part3));
  });

  it('ObjectParts pages with --max-parts and --part-number-marker', () => {
    const first = attrs('mp', '--max-parts', '1').ObjectParts as PartsOut;
    assert.deepEqual(partPairs(first), [[1, part1.length]]);
    assert.equal(first.IsTruncated, true);
    assert.equal(first.MaxParts, 1);
    assert.equal(Number(first.NextPartNumberMarker), 1);
    assert.equal(first.TotalPartsCount, 2);
    const second = attrs('mp', '--max-parts', '1', '--part-number-marker', String(first.NextPartNumberMarker)).ObjectParts as PartsOut;
    assert.deepEqual(partPairs(second), [[2, part3.length]]);
    assert.equal(second.IsTruncated, false);
    assert.equal(Number(second.PartNumberMarker), 1);
    assert.equal(Number(second.NextPartNumberMarker), 2);
    // At or past the last there is nothing left.
    assert.deepEqual(partPairs(attrs('mp', '--part-number-marker', '2').ObjectParts), []);
    const past = attrs('mp', '--part-number-marker', '3').ObjectParts as PartsOut;
    assert.deepEqual(partPairs(past), []);
    assert.equal(past.IsTruncated, false);
    assert.equal(past.TotalPartsCount, 2);
  });

  it('an `aws s3 cp` multipart upload (8 MiB parts) reports parts 1..3 with their sizes', () => {
    const whole = randomBytes(20 * 1024 * 1024 + 11);
    fs.writeFileSync(path.join(work, 'big'), whole);
    awsOk(env, ['s3', 'cp', '--only-show-errors', path.join(work, 'big'), 's3://attr/big']);
    const a = attrs('big');
    const mib8 = 8 * 1024 * 1024;
    assert.equal(a.ObjectSize, whole.length);
    assert.equal(a.ObjectParts.TotalPartsCount, 3);
    assert.deepEqual(partPairs(a.ObjectParts), [[1, mib8], [2, mib8], [3, whole.length - 2 * mib8]]);
    assert.match(a.ETag, /^[0-9a-f]{32}-3$/);
  });

  it('parts uploaded as 1, 3 and 7: get-object and head-object --part-number 1..3 read them in order, as get-object-attributes numbers them; 4 is InvalidPartNumber', () => {
    const sizes = [5 * 1024 * 1024, 5 * 1024 * 1024 + 17, 4321];
    const bytes = sizes.map((n) => randomBytes(n));
    const uploadId = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'attr', '--key', 'sparse']).UploadId as string;
    const parts = [1, 3, 7].map((partNumber, i) => {
      const f = path.join(work, `sparse-${partNumber}`);
      fs.writeFileSync(f, bytes[i]!);
      return { PartNumber: partNumber, ETag: awsOk(env, ['s3api', 'upload-part', '--bucket', 'attr', '--key', 'sparse', '--upload-id', uploadId, '--part-number', String(partNumber), '--body', f]).ETag as string };
    });
    awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'attr', '--key', 'sparse', '--upload-id', uploadId, '--multipart-upload', JSON.stringify({ Parts: parts })]);
    const listed = attrs('sparse').ObjectParts as PartsOut;
    assert.equal(listed.TotalPartsCount, 3);
    assert.deepEqual(partPairs(listed), sizes.map((n, i) => [i + 1, n]));
    let offset = 0;
    for (const [i, p] of (listed.Parts ?? []).entries()) {
      const out = path.join(work, `sparse-get-${p.PartNumber}`);
      const got = awsOk(env, ['s3api', 'get-object', '--bucket', 'attr', '--key', 'sparse', '--part-number', String(p.PartNumber), out]);
      assert.ok(fs.readFileSync(out).equals(bytes[i]!), `get-object --part-number ${p.PartNumber} is the part listed as ${p.PartNumber}`);
      assert.equal(got.ContentLength, p.Size);
      assert.equal(got.PartsCount, 3);
      assert.equal(got.ContentRange, `bytes ${offset}-${offset + p.Size - 1}/${sizes.reduce((a, b) => a + b, 0)}`);
      const head = awsOk(env, ['s3api', 'head-object', '--bucket', 'attr', '--key', 'sparse', '--part-number', String(p.PartNumber)]);
      // (This cli's HeadObject output has no ContentRange.)
      assert.deepEqual([head.ContentLength, head.PartsCount, head.ETag], [p.Size, 3, got.ETag]);
      offset += p.Size;
    }
    // The uploaded number 7 names no fourth part: refused, never another part's bytes.
    for (const n of ['4', '7']) {
      const past = awsFail(env, ['s3api', 'get-object', '--bucket', 'attr', '--key', 'sparse', '--part-number', n, path.join(work, 'past')]);
      assert.deepEqual([past.code, past.httpStatus], ['InvalidPartNumber', 416], `--part-number ${n}`);
    }
  });

  it('refusals: unknown attribute, missing key or bucket, a version other than null; versionId null is the object', async () => {
    const bad = awsFail(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', 'single', '--object-attributes', 'ETag', 'Owner']);
    assert.deepEqual([bad.code, bad.httpStatus], ['InvalidArgument', 400]);
    assert.match(bad.message, /Invalid attribute name/);
    const noKey = awsFail(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', 'nope', ...ALL]);
    assert.deepEqual([noKey.code, noKey.httpStatus], ['NoSuchKey', 404]);
    const noBucket = awsFail(env, ['s3api', 'get-object-attributes', '--bucket', 'no-such-bucket', '--key', 'single', ...ALL]);
    assert.deepEqual([noBucket.code, noBucket.httpStatus], ['NoSuchBucket', 404]);
    const version = awsFail(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', 'single', '--version-id', '3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY', ...ALL]);
    assert.deepEqual([version.code, version.httpStatus], ['InvalidArgument', 400]);
    assert.equal(attrs('single', '--version-id', 'null').ObjectSize, single.length);
    const badMax = awsFail(env, ['s3api', 'get-object-attributes', '--bucket', 'attr', '--key', 'mp', '--max-parts', '-1', ...ALL]);
    assert.deepEqual([badMax.code, badMax.httpStatus], ['InvalidArgument', 400]);
    // No header at all (the cli always sends one): InvalidArgument, not an object GET.
    const none = await signedRequest(env, 'GET', '/attr/single', { attributes: '' });
    assert.deepEqual([none.status, errorCode(none.body)], [400, 'InvalidArgument']);
    // ?attributes never writes, deletes or lists.
    for (const [method, p] of [['PUT', '/attr/single'], ['DELETE', '/attr/single'], ['POST', '/attr/single'], ['GET', '/attr'], ['PUT', '/attr'], ['DELETE', '/attr']]) {
      const r = await signedRequest(env, method!, p!, { attributes: '' }, method === 'PUT' ? 'not the object' : '');
      assert.deepEqual([r.status, errorCode(r.body)], [405, 'MethodNotAllowed'], `${method} ${p}`);
    }
    assert.equal(attrs('single').ETag, md5(single).toString('hex'));
    assert.equal(awsOk(env, ['s3api', 'head-bucket', '--bucket', 'attr']), '');
  });

  it('the parts are in the index: the same answer after a SIGKILL and restart', async () => {
    const before = attrs('mp');
    await env.daemon.kill();
    env.sdk.destroy();
    fs.rmSync(env.home, { recursive: true, force: true });
    env = await startS3({ dataDir });
    const after = attrs('mp');
    assert.deepEqual(partPairs(after.ObjectParts), [[1, part1.length], [2, part3.length]]);
    assert.deepEqual({ ...after, LastModified: undefined }, { ...before, LastModified: undefined });
  });
});
