// Conditional writes (S3: If-None-Match: * and If-Match on PutObject,
// CopyObject, CompleteMultipartUpload) on the real daemon through
// @aws-sdk/client-s3 (the Debian aws cli 2.9 has no --if-none-match), on a
// hot and a cold bucket. The condition is judged in the index transaction that
// installs the object: of N racing conditional writers of one key exactly one
// wins and its bytes are what is stored; a refused body leaves no data file
// (hot) and no stripe in use (cold). Refused multipart completions keep
// the upload. Combinations S3 does not implement are 501, never applied
// unconditionally. Conditional deletes: s3-conditional-deletes.test.ts.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { readRecord, rewriteRecord, s3WithKeptAndVictim } from './helpers/damaged-record.js';
import { coldLiveBytes, hotObjectFiles, outcome, signedRequest, startS3HotAndCold, type S3Env } from './helpers/s3-env.js';

const KiB = 1024;
/** Inline (in the index record), one hot data file / a few stripes, several stripes. */
const SIZES = [3 * KiB, 300 * KiB, 2 * 1024 * KiB + 123];
const INLINE_MAX_BYTES = 16 * KiB;
const RACERS = 6;
const BUCKETS = ['hot', 'cold'] as const;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const quoted = (etag: string) => `"${etag}"`;

/** Polls a condition the daemon reaches on its own (a reader's pin let go frees a replaced version), bounded. */
async function settles(what: string, cond: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function get2(env: S3Env, key: string) {
  const r = await env.sdk.send(new GetObjectCommand({ Bucket: 'hot', Key: key }));
  return { etag: r.ETag!.replaceAll('"', ''), bytes: Buffer.from(await r.Body!.transformToByteArray()) };
}

describe('s3 conditional writes: If-None-Match: * and If-Match, judged when the object is installed', () => {
  let env: S3Env;
  const get = async (bucket: string, key: string) => {
    const r = await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return { etag: r.ETag!.replaceAll('"', ''), bytes: Buffer.from(await r.Body!.transformToByteArray()) };
  };
  const put = (bucket: string, key: string, body: Buffer | string, cond: { IfNoneMatch?: string; IfMatch?: string } = {}) => env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...cond }));

  before(async () => {
    env = await startS3HotAndCold();
  });
  after(async () => {
    await env.cleanup();
  });

  for (const bucket of BUCKETS) {
    it(`${bucket}: If-None-Match: * creates a missing key; on an existing key 412 PreconditionFailed, the object kept and no data left`, async () => {
      for (const size of SIZES) {
        const key = `create-${size}`;
        const first = randomBytes(size);
        const liveBefore = await coldLiveBytes(env);
        assert.deepEqual(await outcome(put(bucket, key, first, { IfNoneMatch: '*' })), [200, 'OK']);
        const files = hotObjectFiles(env.daemon.dataDir);
        const live = await coldLiveBytes(env);
        const oneVersionBytes = live - liveBefore;
        assert.deepEqual(await outcome(put(bucket, key, randomBytes(size), { IfNoneMatch: '*' })), [412, 'PreconditionFailed'], `size ${size}`);
        const got = await get(bucket, key);
        assert.equal(got.etag, md5(first));
        assert.ok(got.bytes.equals(first), `size ${size}: the stored bytes changed`);
        assert.deepEqual(hotObjectFiles(env.daemon.dataDir), files, `size ${size}: the refused body left a data file`);
        if (bucket === 'cold') assert.ok((await coldLiveBytes(env)) - live < oneVersionBytes / 2, `size ${size}: the refused body's stripes are still in use`);
      }
    });

    it(`${bucket}: If-Match with the current ETag (quoted, bare, in a list) replaces; another ETag is 412; a missing key is 404 NoSuchKey`, async () => {
      const key = 'cas';
      let current = randomBytes(300 * KiB);
      await put(bucket, key, current);
      for (const form of [(e: string) => quoted(e), (e: string) => e, (e: string) => `"0123456789abcdef0123456789abcdef", ${quoted(e)}`]) {
        const next = randomBytes(300 * KiB);
        assert.deepEqual(await outcome(put(bucket, key, next, { IfMatch: form(md5(current)) })), [200, 'OK']);
        current = next;
      }
      assert.deepEqual(await outcome(put(bucket, key, randomBytes(5 * KiB), { IfMatch: '"0123456789abcdef0123456789abcdef"' })), [412, 'PreconditionFailed']);
      assert.ok((await get(bucket, key)).bytes.equals(current));
      assert.deepEqual(await outcome(put(bucket, 'never-written', 'x', { IfMatch: quoted(md5(current)) })), [404, 'NoSuchKey']);
      assert.deepEqual(await outcome(get(bucket, 'never-written')), [404, 'NoSuchKey']);
    });

    for (const size of SIZES) {
      it(`${bucket}: ${RACERS} racing PUTs of ${size} bytes with If-None-Match: *: exactly one 200, its bytes stored; then ${RACERS} racing If-Match: exactly one`, async () => {
        const key = `race-${size}`;
        // What one stored version of this size holds on the cold tier (0 on a hot bucket).
        const liveBefore = await coldLiveBytes(env);
        await put(bucket, `race-${size}-baseline`, randomBytes(size));
        const live = await coldLiveBytes(env);
        const oneVersionBytes = live - liveBefore;
        const files = hotObjectFiles(env.daemon.dataDir);
        const bodies = Array.from({ length: RACERS }, () => randomBytes(size));
        const creates = await Promise.all(bodies.map((b) => outcome(put(bucket, key, b, { IfNoneMatch: '*' }))));
        const winners = creates.flatMap((o, i) => (o[0] === 200 ? [i] : []));
        assert.equal(winners.length, 1, `creates answered ${JSON.stringify(creates)}`);
        assert.equal(creates.filter((o) => o[0] === 412 && o[1] === 'PreconditionFailed').length, RACERS - 1, JSON.stringify(creates));
        const won = bodies[winners[0]!]!;
        let got = await get(bucket, key);
        assert.equal(got.etag, md5(won));
        assert.ok(got.bytes.equals(won), 'the stored bytes are not the winner\'s');
        // One data file (hot) or one version's stripes (cold) for the one version stored: the losers' bodies are gone.
        const oneMore = hotObjectFiles(env.daemon.dataDir).length;
        assert.equal(oneMore, files.length + (bucket === 'hot' && size > INLINE_MAX_BYTES ? 1 : 0));
        if (bucket === 'cold') await settles('the refused bodies\' stripes to be freed', async () => (await coldLiveBytes(env)) - live < 1.5 * oneVersionBytes);

        // Compare-and-swap: every racer read the same ETag; one replaces it, the others find it changed.
        const swaps = Array.from({ length: RACERS }, () => randomBytes(size));
        const answers = await Promise.all(swaps.map((b) => outcome(put(bucket, key, b, { IfMatch: quoted(md5(won)) }))));
        const swapped = answers.flatMap((o, i) => (o[0] === 200 ? [i] : []));
        assert.equal(swapped.length, 1, `If-Match PUTs answered ${JSON.stringify(answers)}`);
        assert.equal(answers.filter((o) => o[0] === 412).length, RACERS - 1);
        got = await get(bucket, key);
        assert.ok(got.bytes.equals(swaps[swapped[0]!]!), 'the stored bytes are not the compare-and-swap winner\'s');
        await settles('the replaced and the refused versions\' data to be freed', async () => hotObjectFiles(env.daemon.dataDir).length === oneMore && (bucket === 'hot' || (await coldLiveBytes(env)) - live < 1.5 * oneVersionBytes));
      });
    }

    it(`${bucket}: CompleteMultipartUpload If-None-Match: * / If-Match: 412 and 404 keep the upload and its parts; completed again it installs`, async () => {
      const key = 'mp';
      const original = randomBytes(10 * KiB);
      await put(bucket, key, original);
      const partBody = randomBytes(700 * KiB);
      const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      const { ETag } = await env.sdk.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: partBody }));
      const complete = (cond: object) => env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] }, ...cond }));
      assert.deepEqual(await outcome(complete({ IfNoneMatch: '*' })), [412, 'PreconditionFailed']);
      assert.deepEqual(await outcome(complete({ IfMatch: '"0123456789abcdef0123456789abcdef"' })), [412, 'PreconditionFailed']);
      assert.ok((await get(bucket, key)).bytes.equals(original));
      const parts = await env.sdk.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId }));
      assert.deepEqual(parts.Parts?.map((p) => [p.PartNumber, p.ETag]), [[1, ETag]]);
      assert.deepEqual(await outcome(complete({ IfMatch: quoted(md5(original)) })), [200, 'OK']);
      assert.ok((await get(bucket, key)).bytes.equals(partBody));

      // If-Match on a key with no object: 404 NoSuchKey, the upload kept (aborted here).
      const { UploadId: other } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'mp-none' }));
      const p = await env.sdk.send(new UploadPartCommand({ Bucket: bucket, Key: 'mp-none', UploadId: other, PartNumber: 1, Body: 'x' }));
      const noKey = env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: 'mp-none', UploadId: other, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.ETag }] }, IfMatch: quoted(md5(original)) }));
      assert.deepEqual(await outcome(noKey), [404, 'NoSuchKey']);
      assert.deepEqual(await outcome(env.sdk.send(new ListPartsCommand({ Bucket: bucket, Key: 'mp-none', UploadId: other }))), [200, 'OK']);
      await env.sdk.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'mp-none', UploadId: other }));
    });

    it(`${bucket}: racing CompleteMultipartUpload If-None-Match: * of one key: one object, the loser's upload kept`, async () => {
      const key = 'mp-race';
      const uploads = await Promise.all(
        Array.from({ length: 3 }, async () => {
          const body = randomBytes(200 * KiB);
          const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
          const { ETag } = await env.sdk.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: body }));
          return { body, UploadId: UploadId!, ETag: ETag! };
        }),
      );
      const answers = await Promise.all(
        uploads.map((u) => outcome(env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: u.ETag }] }, IfNoneMatch: '*' })))),
      );
      const won = answers.flatMap((o, i) => (o[0] === 200 ? [i] : []));
      assert.equal(won.length, 1, JSON.stringify(answers));
      assert.equal(answers.filter((o) => o[0] === 412).length, uploads.length - 1, JSON.stringify(answers));
      assert.ok((await get(bucket, key)).bytes.equals(uploads[won[0]!]!.body));
      for (const [i, u] of uploads.entries()) {
        if (i === won[0]) continue;
        const parts = await env.sdk.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId }));
        assert.deepEqual(parts.Parts?.map((p) => p.ETag), [u.ETag], 'a refused completion lost its upload');
        await env.sdk.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId }));
      }
    });

    it(`${bucket}: CopyObject If-None-Match: * onto an existing key is 412, onto a new one copies; If-Match judges the destination`, async () => {
      const src = randomBytes(40 * KiB);
      const dst = randomBytes(40 * KiB);
      await put(bucket, 'copy-src', src);
      await put(bucket, 'copy-dst', dst);
      const copy = (to: string, cond: object) => env.sdk.send(new CopyObjectCommand({ Bucket: bucket, Key: to, CopySource: `${bucket}/copy-src`, ...cond }));
      assert.deepEqual(await outcome(copy('copy-dst', { IfNoneMatch: '*' })), [412, 'PreconditionFailed']);
      assert.deepEqual(await outcome(copy('copy-dst', { IfMatch: quoted(md5(src)) })), [412, 'PreconditionFailed']);
      assert.ok((await get(bucket, 'copy-dst')).bytes.equals(dst));
      assert.deepEqual(await outcome(copy('copy-new', { IfNoneMatch: '*' })), [200, 'OK']);
      assert.ok((await get(bucket, 'copy-new')).bytes.equals(src));
      assert.deepEqual(await outcome(copy('copy-dst', { IfMatch: quoted(md5(dst)) })), [200, 'OK']);
      assert.ok((await get(bucket, 'copy-dst')).bytes.equals(src));
    });
  }

  it('combinations S3 does not implement (If-None-Match with an ETag, both headers, x-amz-if-match-size on a PUT) are 501 NotImplemented; nothing written', async () => {
    await put('hot', 'combo', 'original');
    const etag = quoted(md5(Buffer.from('original')));
    for (const cond of [{ IfNoneMatch: etag }, { IfNoneMatch: '"0123456789abcdef0123456789abcdef"' }, { IfMatch: etag, IfNoneMatch: '*' }]) {
      assert.deepEqual(await outcome(put('hot', 'combo', 'overwritten', cond)), [501, 'NotImplemented'], JSON.stringify(cond));
      assert.deepEqual(await outcome(put('hot', 'combo-new', 'created', cond)), [501, 'NotImplemented'], JSON.stringify(cond));
    }
    const sized = await signedRequest(env, 'PUT', '/hot/combo', {}, 'overwritten', { 'x-amz-if-match-size': '8' });
    assert.equal(sized.status, 501, sized.body);
    assert.equal((await get('hot', 'combo')).bytes.toString(), 'original');
    assert.deepEqual(await outcome(get('hot', 'combo-new')), [404, 'NoSuchKey']);
  });

  it('a damaged index record exists for If-None-Match: * and matches no If-Match, even by its stored ETag: 412, the record left for fsck', async (t) => {
    const run = await s3WithKeptAndVictim(t);
    const victim = await get2(run.env, 'victim');
    await run.env.daemon.kill();
    await rewriteRecord<{ key: string }>(run.dataDir, 's3-objects', (v) => v.key === 'victim', (v) => ({ ...v, segments: 'torn' }), 'the victim record');
    const env2 = await run.restart();
    for (const cond of [{ IfNoneMatch: '*' }, { IfMatch: quoted(victim.etag) }, { IfMatch: '*' }]) {
      assert.deepEqual(await outcome(env2.sdk.send(new PutObjectCommand({ Bucket: 'hot', Key: 'victim', Body: 'replacement', ...cond }))), [412, 'PreconditionFailed'], JSON.stringify(cond));
    }
    assert.ok((await get2(env2, 'kept')).bytes.equals(run.kept));
    await env2.daemon.kill();
    const stored = await readRecord<{ key: string; segments: unknown }>(run.dataDir, 's3-objects', (v) => v.key === 'victim', 'the victim record');
    assert.equal(stored.value.segments, 'torn', 'a refused write replaced the damaged record');
  });
});
