// Conditional deletes (S3 since 2025): If-Match (an ETag list or *) on
// DeleteObject, x-amz-if-match-size and x-amz-if-match-last-modified-time, and
// DeleteObjects' per-object ETag, Size and LastModifiedTime, and
// AbortMultipartUpload's x-amz-if-match-initiated-time, on a hot and a
// cold bucket, through @aws-sdk/client-s3 (the Debian aws cli 2.9 has no
// delete-object --if-match; aws-cli 1.45 answered the same by hand). The
// condition is judged inside the index transaction that removes the key: of
// conditional deletes and conditional overwrites racing on one version
// exactly one wins, and the key ends as that winner left it.
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { coldLiveBytes, hotObjectFiles, outcome, signedRequest, startS3HotAndCold, type S3Env } from './helpers/s3-env.js';

const BUCKETS = ['hot', 'cold'] as const;
const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');
const quoted = (etag: string) => `"${etag}"`;
const OTHER_ETAG = quoted('0123456789abcdef0123456789abcdef');

/** Polls a state the daemon settles in on its own (freed data), bounded: never a transient one. */
async function settles(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 5_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await cond()); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
  }
}

describe('s3 conditional deletes: If-Match, size and last-modified conditions, judged in the transaction that deletes', () => {
  let env: S3Env;
  const put = (bucket: string, key: string, body: Buffer | string) => env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  const del = (bucket: string, key: string, cond: { IfMatch?: string; IfMatchSize?: number; IfMatchLastModifiedTime?: Date } = {}) => env.sdk.send(new DeleteObjectCommand({ Bucket: bucket, Key: key, ...cond }));
  const exists = async (bucket: string, key: string) => (await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))))[0] === 200;

  before(async () => {
    env = await startS3HotAndCold();
  });
  after(async () => {
    await env.cleanup();
  });

  for (const bucket of BUCKETS) {
    it(`${bucket}: DeleteObject If-Match: another ETag is 412 and the object kept; its ETag or * deletes; no object is 404 NoSuchKey`, async () => {
      await put(bucket, 'd', 'kept');
      assert.deepEqual(await outcome(del(bucket, 'd', { IfMatch: OTHER_ETAG })), [412, 'PreconditionFailed']);
      assert.ok(await exists(bucket, 'd'), 'a refused conditional delete deleted');
      assert.deepEqual(await outcome(del(bucket, 'd', { IfMatch: `${OTHER_ETAG}, ${quoted(md5('kept'))}` })), [200, 'OK']);
      assert.equal(await exists(bucket, 'd'), false);
      assert.deepEqual(await outcome(del(bucket, 'd', { IfMatch: '*' })), [404, 'NoSuchKey']);
      assert.deepEqual(await outcome(del(bucket, 'd', { IfMatch: quoted(md5('kept')) })), [404, 'NoSuchKey']);
      await put(bucket, 'd', 'again');
      assert.deepEqual(await outcome(del(bucket, 'd', { IfMatch: '*' })), [200, 'OK']);
      assert.equal(await exists(bucket, 'd'), false);
    });

    it(`${bucket}: x-amz-if-match-size and x-amz-if-match-last-modified-time: a mismatch is 412, a match deletes, with If-Match all must hold; no object is 204`, async () => {
      await put(bucket, 's', 'twelve bytes');
      const { LastModified } = await env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: 's' }));
      const other = new Date(LastModified!.getTime() - 3_600_000);
      for (const cond of [{ IfMatchSize: 11 }, { IfMatchLastModifiedTime: other }, { IfMatchSize: 12, IfMatchLastModifiedTime: other }, { IfMatchSize: 12, IfMatch: OTHER_ETAG }]) {
        assert.deepEqual(await outcome(del(bucket, 's', cond)), [412, 'PreconditionFailed'], JSON.stringify(cond));
      }
      assert.ok(await exists(bucket, 's'));
      assert.deepEqual(await outcome(del(bucket, 's', { IfMatchSize: 12, IfMatchLastModifiedTime: LastModified!, IfMatch: quoted(md5('twelve bytes')) })), [200, 'OK']);
      assert.equal(await exists(bucket, 's'), false);
      // As S3 documents: without If-Match, a key with no object is a 204.
      assert.deepEqual(await outcome(del(bucket, 's', { IfMatchSize: 12 })), [200, 'OK']);
      await put(bucket, 's', 'twelve bytes');
      assert.deepEqual(await outcome(del(bucket, 's', { IfMatchLastModifiedTime: (await env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: 's' }))).LastModified! })), [200, 'OK']);
      assert.equal(await exists(bucket, 's'), false);
    });

    it(`${bucket}: DeleteObjects judges each Object's ETag, Size and LastModifiedTime: mismatches are PreconditionFailed entries and kept`, async () => {
      for (const k of ['a', 'b', 'c', 'e']) await put(bucket, `m-${k}`, `body ${k}`);
      const { LastModified } = await env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: 'm-e' }));
      const r = await env.sdk.send(
        new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: {
            Objects: [
              { Key: 'm-a', ETag: quoted(md5('body a')) },
              { Key: 'm-b', ETag: OTHER_ETAG },
              { Key: 'm-c', Size: 99 },
              { Key: 'm-e', Size: 6, LastModifiedTime: LastModified },
              { Key: 'm-absent', ETag: OTHER_ETAG },
            ],
          },
        }),
      );
      assert.deepEqual(r.Deleted?.map((x) => x.Key).sort(), ['m-a', 'm-e']);
      assert.deepEqual(r.Errors?.map((x) => [x.Key, x.Code]).sort(), [
        ['m-absent', 'NoSuchKey'],
        ['m-b', 'PreconditionFailed'],
        ['m-c', 'PreconditionFailed'],
      ]);
      assert.deepEqual([await exists(bucket, 'm-a'), await exists(bucket, 'm-b'), await exists(bucket, 'm-c'), await exists(bucket, 'm-e')], [false, true, true, false]);
    });

    it(`${bucket}: conditional deletes and If-Match overwrites racing on one version: exactly one wins, the key ends as it left it, losers leave no data`, async () => {
      const RACERS = 4;
      for (let round = 0; round < 4; round++) {
        const key = `race-${round}`;
        const first = randomBytes(300 * 1024);
        await put(bucket, key, first);
        const files = hotObjectFiles(env.daemon.dataDir).length;
        const live = await coldLiveBytes(env);
        const cond = { IfMatch: quoted(md5(first)) };
        const bodies = Array.from({ length: RACERS }, () => randomBytes(300 * 1024));
        const results = await Promise.all([
          ...Array.from({ length: RACERS }, () => outcome(del(bucket, key, cond))),
          ...bodies.map((b) => outcome(env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: b, ...cond })))),
        ]);
        const winners = results.flatMap((r, i) => (r[0] === 200 ? [i] : []));
        assert.equal(winners.length, 1, `round ${round}: ${JSON.stringify(results)}`);
        for (const r of results) assert.ok(r[0] === 200 || (r[0] === 412 && r[1] === 'PreconditionFailed') || (r[0] === 404 && r[1] === 'NoSuchKey'), JSON.stringify(r));
        const w = winners[0]!;
        if (w < RACERS) {
          assert.equal(await exists(bucket, key), false, `round ${round}: a delete won, the key must be gone`);
          if (bucket === 'hot') await settles(`round ${round}: the deleted version's file freed, no loser's left`, () => hotObjectFiles(env.daemon.dataDir).length === files - 1);
        } else {
          const got = await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
          assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(bodies[w - RACERS]!), `round ${round}: the stored bytes are the winning overwrite's`);
          if (bucket === 'hot') await settles(`round ${round}: one file replaced by one, no loser's left`, () => hotObjectFiles(env.daemon.dataDir).length === files);
        }
        if (bucket === 'cold') await settles(`round ${round}: no loser's stripes left in use`, async () => (await coldLiveBytes(env)) <= live);
      }
    });
  }

  it('AbortMultipartUpload x-amz-if-match-initiated-time: another time is 412 and the upload kept, its own aborts it, no upload is 204; If-Match on an abort is 501', async () => {
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'up' }));
    const listed = async () => (await env.sdk.send(new ListMultipartUploadsCommand({ Bucket: 'cold', Prefix: 'up' }))).Uploads ?? [];
    const initiated = (await listed()).find((u) => u.UploadId === UploadId)!.Initiated!;
    const abort = (at: Date) => env.sdk.send(new AbortMultipartUploadCommand({ Bucket: 'cold', Key: 'up', UploadId, IfMatchInitiatedTime: at }));
    assert.deepEqual(await outcome(abort(new Date(initiated.getTime() - 60_000))), [412, 'PreconditionFailed']);
    const matched = await signedRequest(env, 'DELETE', '/cold/up', { uploadId: UploadId! }, '', { 'if-match': '*' });
    assert.equal(matched.status, 501, matched.body);
    assert.deepEqual((await listed()).map((u) => u.UploadId), [UploadId], 'a refused abort dropped the upload');
    assert.deepEqual(await outcome(abort(initiated)), [200, 'OK']);
    assert.deepEqual(await listed(), []);
    assert.deepEqual(await outcome(abort(initiated)), [200, 'OK'], 'no such upload, with the condition: 204 (as S3)');
    assert.deepEqual(await outcome(env.sdk.send(new AbortMultipartUploadCommand({ Bucket: 'cold', Key: 'up', UploadId }))), [404, 'NoSuchUpload']);
  });

  it('a time that is not an HTTP-date or an ISO 8601 time with a zone is 400 (DeleteObjects: MalformedXML; an abort: 400), never judged as some other time; each such form is taken', async () => {
    await put('hot', 't', 'timed');
    const lm = (await env.sdk.send(new HeadObjectCommand({ Bucket: 'hot', Key: 't' }))).LastModified!;
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'hot', Key: 't-up' }));
    const at = new Date(lm);
    const pad = (n: number) => String(n).padStart(2, '0');
    // V8's Date.parse reads each of these as a date: "1" as 2001-01-01, a date with junk after it as another day.
    for (const bad of ['1', '12', '2026', `${at.toUTCString()} junk`, `${at.toUTCString()}, ${at.toUTCString()}`, '11/28/2026', at.toISOString().replace('Z', ''), at.toISOString().slice(0, 10)]) {
      const r = await signedRequest(env, 'DELETE', '/hot/t', {}, '', { 'x-amz-if-match-last-modified-time': bad });
      assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${r.body}`);
      assert.match(r.body, /<Code>InvalidArgument<\/Code>/);
      const abort = await signedRequest(env, 'DELETE', '/hot/t-up', { uploadId: UploadId! }, '', { 'x-amz-if-match-initiated-time': bad });
      assert.equal(abort.status, 400, `abort ${JSON.stringify(bad)}: ${abort.body}`);
      const xml = `<Delete><Object><Key>t</Key><LastModifiedTime>${bad}</LastModifiedTime></Object></Delete>`;
      const many = await signedRequest(env, 'POST', '/hot', { delete: '' }, xml, { 'content-md5': createHash('md5').update(xml).digest('base64') });
      assert.equal(many.status, 400, `DeleteObjects ${JSON.stringify(bad)}: ${many.body}`);
      assert.match(many.body, /<Code>MalformedXML<\/Code>/);
    }
    assert.ok(await exists('hot', 't'), 'a refused DELETE deleted');
    assert.equal(((await env.sdk.send(new ListMultipartUploadsCommand({ Bucket: 'hot', Prefix: 't-up' }))).Uploads ?? []).length, 1, 'a refused abort dropped the upload');
    // Every HTTP-date form (IMF-fixdate, also with a 1-digit day or a numeric zone as RFC 1123 allows; RFC 850;
    // asctime) and ISO 8601 with a zone, each naming the Last-Modified of a version PUT for it.
    const forms = (when: Date) => {
      const [day, mon] = [when.toUTCString().slice(0, 3), when.toUTCString().slice(8, 11)];
      const [d, y] = [when.getUTCDate(), when.getUTCFullYear()];
      const hms = `${pad(when.getUTCHours())}:${pad(when.getUTCMinutes())}:${pad(when.getUTCSeconds())}`;
      const longDay = { Mon: 'Monday', Tue: 'Tuesday', Wed: 'Wednesday', Thu: 'Thursday', Fri: 'Friday', Sat: 'Saturday', Sun: 'Sunday' }[day]!;
      return [
        when.toUTCString(),
        `${day}, ${d} ${mon} ${y} ${hms} GMT`,
        `${day}, ${pad(d)} ${mon} ${y} ${hms} +0000`,
        `${longDay}, ${pad(d)}-${mon}-${String(y).slice(2)} ${hms} GMT`,
        `${day} ${mon} ${String(d).padStart(2, ' ')} ${hms} ${y}`,
        when.toISOString(),
        when.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        `${new Date(when.getTime() + 3_600_000).toISOString().slice(0, 19)}+01:00`,
      ];
    };
    for (let i = 0; i < forms(lm).length; i++) {
      await put('hot', 't', 'timed');
      const when = forms((await env.sdk.send(new HeadObjectCommand({ Bucket: 'hot', Key: 't' }))).LastModified!)[i]!;
      const r = await signedRequest(env, 'DELETE', '/hot/t', {}, '', { 'x-amz-if-match-last-modified-time': when });
      assert.equal(r.status, 204, `${JSON.stringify(when)}: ${r.body}`);
      assert.equal(await exists('hot', 't'), false, `${JSON.stringify(when)} did not delete`);
    }
  });

  it('If-None-Match on a DELETE (S3 defines none) stays 501 NotImplemented, a size that is not a number 400 InvalidArgument: nothing deleted', async () => {
    await put('hot', 'kept', 'kept');
    const none = await signedRequest(env, 'DELETE', '/hot/kept', {}, '', { 'if-none-match': '*' });
    assert.equal(none.status, 501, none.body);
    assert.match(none.body, /<Code>NotImplemented<\/Code>/);
    const bad = await signedRequest(env, 'DELETE', '/hot/kept', {}, '', { 'x-amz-if-match-size': 'ten' });
    assert.equal(bad.status, 400, bad.body);
    assert.match(bad.body, /<Code>InvalidArgument<\/Code>/);
    const badTime = await signedRequest(env, 'DELETE', '/hot/kept', {}, '', { 'x-amz-if-match-last-modified-time': 'yesterday' });
    assert.equal(badTime.status, 400, badTime.body);
    assert.ok(await exists('hot', 'kept'), 'a refused DELETE deleted');
  });
});
