// ListMultipartUploads with a delimiter, paging and encoding-type=url, with
// the real aws cli. Before: the delimiter (and encoding-type) were ignored:
// every upload under every "directory" was listed, no CommonPrefixes, and
// keys came back unencoded whatever the client asked for.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { awsOk, startS3, type S3Env } from './helpers/s3-env.js';

interface Listing {
  Uploads?: { Key: string; UploadId: string }[];
  CommonPrefixes?: { Prefix: string }[];
  IsTruncated?: boolean;
  NextKeyMarker?: string;
  NextUploadIdMarker?: string;
}

describe('s3 ListMultipartUploads: delimiter, paging, encoding-type', () => {
  let env: S3Env;
  const B = 'mpu-list';
  // Two uploads on a/2; keys in UTF-8 byte order: a/1, a/2, b/x/1, c, "d e/+%é".
  const keys = ['a/1', 'a/2', 'a/2', 'b/x/1', 'c', 'd e/+%é'];
  const ids = new Map<string, string[]>();
  const list = (...args: string[]): Listing => awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', B, ...args]) || {};

  before(async () => {
    env = await startS3();
    awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
    for (const k of keys) ids.set(k, [...(ids.get(k) ?? []), awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', B, '--key', k]).UploadId]);
  });
  after(async () => {
    await env.cleanup();
  });

  it('a delimiter rolls keys up into CommonPrefixes, after the prefix', () => {
    const all = list('--delimiter', '/');
    assert.deepEqual(all.Uploads?.map((u) => u.Key), ['c']);
    assert.deepEqual(all.CommonPrefixes?.map((p) => p.Prefix), ['a/', 'b/', 'd e/']);
    const underB = list('--delimiter', '/', '--prefix', 'b/');
    assert.equal(underB.Uploads, undefined);
    assert.deepEqual(underB.CommonPrefixes?.map((p) => p.Prefix), ['b/x/']);
    const underA = list('--delimiter', '/', '--prefix', 'a/');
    assert.deepEqual(underA.Uploads?.map((u) => u.Key), ['a/1', 'a/2', 'a/2']);
    assert.equal(underA.CommonPrefixes, undefined);
  });

  it('one entry a page: a common prefix counts once, its NextKeyMarker skips it, every entry comes once', () => {
    const seen: string[] = [];
    let markers: string[] = [];
    for (let pages = 0; ; pages++) {
      assert.ok(pages < 10, `paging does not end: ${seen}`);
      const page = list('--delimiter', '/', '--max-uploads', '1', '--no-paginate', ...markers);
      seen.push(...(page.Uploads ?? []).map((u) => u.Key), ...(page.CommonPrefixes ?? []).map((p) => p.Prefix));
      if (!page.IsTruncated) break;
      markers = ['--key-marker', page.NextKeyMarker!, '--upload-id-marker', page.NextUploadIdMarker ?? ''];
    }
    assert.deepEqual(seen, ['a/', 'b/', 'c', 'd e/']);
    const paginated = list('--delimiter', '/', '--page-size', '1');
    assert.deepEqual([paginated.Uploads?.map((u) => u.Key), paginated.CommonPrefixes?.map((p) => p.Prefix)], [['c'], ['a/', 'b/', 'd e/']]);
  });

  it('without a delimiter every upload is listed once, paged by key and upload id', () => {
    const paginated = list('--page-size', '2');
    assert.deepEqual(paginated.Uploads?.map((u) => u.Key), keys);
    assert.deepEqual(new Set(paginated.Uploads?.map((u) => u.UploadId)), new Set([...ids.values()].flat()));
  });

  it('max-uploads 0 and max-parts 0 ask for nothing: nothing, not truncated (as max-keys 0)', () => {
    const none = list('--max-uploads', '0', '--no-paginate');
    assert.deepEqual([none.Uploads, none.IsTruncated, none.NextKeyMarker], [undefined, false, undefined]);
    const uploadId = ids.get('c')![0]!;
    const body = `${env.home}/one-part`;
    fs.writeFileSync(body, 'part');
    awsOk(env, ['s3api', 'upload-part', '--bucket', B, '--key', 'c', '--upload-id', uploadId, '--part-number', '1', '--body', body]);
    const parts = awsOk(env, ['s3api', 'list-parts', '--bucket', B, '--key', 'c', '--upload-id', uploadId, '--max-parts', '0', '--no-paginate']);
    assert.deepEqual([parts.Parts, parts.IsTruncated], [undefined, false]);
  });

  it('encoding-type=url encodes keys and common prefixes (the cli does not decode this call)', () => {
    assert.deepEqual(list('--delimiter', '/', '--encoding-type', 'url').CommonPrefixes?.map((p) => p.Prefix), ['a/', 'b/', 'd%20e/']);
    assert.deepEqual(list('--prefix', 'd', '--encoding-type', 'url').Uploads?.map((u) => u.Key), ['d%20e/%2B%25%C3%A9']);
  });
});
