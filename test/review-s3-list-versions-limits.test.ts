// Review of 5a768fc (ListObjectVersions on the ListObjects walk), real daemon,
// aws SDK: max-keys 0 and above 1000, 1001 keys paged by
// NextKeyMarker/NextVersionIdMarker with and without a delimiter, a key
// marker naming a common prefix, encoding-type=url markers.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, ListObjectVersionsCommand, ListObjectsV2Command, PutObjectCommand, type ListObjectVersionsCommandOutput } from '@aws-sdk/client-s3';
import { startS3, type S3Env } from './helpers/s3-env.js';

const KEYS = 1001;
/** 1001 keys: 900 top level, 101 under "dir/" (one common prefix with "/"), one key with a space and a plus. */
const keyOf = (i: number) => (i < 900 ? `k${String(i).padStart(4, '0')}` : i === 900 ? 'k 0900+x' : `dir/${String(i).padStart(4, '0')}`);

describe('review: ListObjectVersions limits and paging', () => {
  let env: S3Env;
  const all: string[] = [];
  before(async () => {
    env = await startS3();
    await env.sdk.send(new CreateBucketCommand({ Bucket: 'listvers' }));
    for (let i = 0; i < KEYS; i++) all.push(keyOf(i));
    all.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    // Eight writers at a time: inline objects, a few seconds in all.
    for (let i = 0; i < all.length; i += 8) await Promise.all(all.slice(i, i + 8).map((Key) => env.sdk.send(new PutObjectCommand({ Bucket: 'listvers', Key, Body: Key }))));
  });
  after(async () => {
    await env.cleanup();
  });

  const list = (extra: Partial<ConstructorParameters<typeof ListObjectVersionsCommand>[0]> = {}) => env.sdk.send(new ListObjectVersionsCommand({ Bucket: 'listvers', ...extra }));
  const keys = (r: ListObjectVersionsCommandOutput) => (r.Versions ?? []).map((v) => v.Key!);

  it('max-keys 0: nothing, not truncated; above 1000: 1000 a page, as ListObjectsV2', async () => {
    const zero = await list({ MaxKeys: 0 });
    assert.deepEqual([keys(zero), zero.CommonPrefixes ?? [], zero.IsTruncated, zero.MaxKeys], [[], [], false, 0]);
    const big = await list({ MaxKeys: 5000 });
    assert.equal(big.MaxKeys, 1000);
    assert.deepEqual(keys(big), all.slice(0, 1000));
    assert.equal(big.IsTruncated, true);
    assert.equal(big.NextKeyMarker, all[999]);
    assert.equal(big.NextVersionIdMarker, 'null');
    const v2 = await env.sdk.send(new ListObjectsV2Command({ Bucket: 'listvers', MaxKeys: 5000 }));
    assert.deepEqual(keys(big), (v2.Contents ?? []).map((c) => c.Key));
    const rest = await list({ KeyMarker: big.NextKeyMarker, VersionIdMarker: big.NextVersionIdMarker });
    assert.deepEqual([keys(rest), rest.IsTruncated], [all.slice(1000), false]);
  });

  it('paging by NextKeyMarker/NextVersionIdMarker returns every key once, with a delimiter each common prefix once, also url-encoded', async () => {
    for (const [pageKeys, delimiter, encoding] of [[7, undefined, undefined], [333, '/', undefined], [50, '/', 'url']] as const) {
      const seenKeys: string[] = [];
      const seenPrefixes: string[] = [];
      let marker: { KeyMarker?: string; VersionIdMarker?: string } = {};
      for (let pages = 0; ; pages++) {
        assert.ok(pages <= KEYS, 'paging ends');
        const r = await list({ MaxKeys: pageKeys, Delimiter: delimiter, EncodingType: encoding, ...marker });
        const dec = (s: string) => (encoding === 'url' ? decodeURIComponent(s) : s);
        seenKeys.push(...keys(r).map(dec));
        seenPrefixes.push(...(r.CommonPrefixes ?? []).map((p) => dec(p.Prefix!)));
        assert.ok(keys(r).length + (r.CommonPrefixes ?? []).length <= pageKeys);
        if (!r.IsTruncated) break;
        // The marker goes back as the answer gave it (encoded when url): the SDK's paginator does the same.
        marker = { KeyMarker: dec(r.NextKeyMarker!), VersionIdMarker: r.NextVersionIdMarker };
      }
      const want = delimiter ? all.filter((k) => !k.includes('/')) : all;
      assert.deepEqual(seenKeys, want, `keys, page ${pageKeys}, delimiter ${delimiter}, encoding ${encoding}`);
      assert.deepEqual(seenPrefixes, delimiter ? ['dir/'] : [], `prefixes, page ${pageKeys}`);
    }
  });

  it('a key marker naming a common prefix skips that whole prefix', async () => {
    const r = await list({ Delimiter: '/', KeyMarker: 'dir/' });
    assert.deepEqual(r.CommonPrefixes ?? [], []);
    assert.deepEqual(keys(r), all.filter((k) => !k.includes('/') && k > 'dir/'));
  });
});
