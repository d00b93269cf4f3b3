// ListParts and CompleteMultipartUpload of an upload one of whose part
// records is damaged (stored as null, written through LMDB with the daemon
// stopped), with the real aws cli. The damaged part is listed under its part
// number with the ETag "damaged-part-record" (and said by the
// x-couchestor-damaged-parts header and a log line); completing with the
// parts listed, or with the part's real ETag, is 400 InvalidPart naming the
// damage and builds nothing. Before (d52df98): the damaged part was left out
// of the listing, so `list-parts` then `complete-multipart-upload` with the
// listed parts built an object silently missing part 2 (S3 allows gaps), and
// completing with its real ETag was a 500 the cli retried. Uploading the part
// again replaces the record: the upload lists whole and completes byte-exact.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { waitForLog } from './helpers/control-loop.js';
import { killAndRemove, rewriteRecord } from './helpers/damaged-record.js';
import { aws, awsOk, restartS3, startS3 } from './helpers/s3-env.js';

interface Part {
  PartNumber: number;
  ETag: string;
  Size: number;
}

test('a damaged part record is listed under its number with an ETag CompleteMultipartUpload refuses, loudly', async (t) => {
  let env = await startS3();
  const dataDir = env.daemon.dataDir;
  // The part files outlive the restart (which replaces the aws HOME).
  const files = fs.mkdtempSync(path.join(os.tmpdir(), 'review-s3-parts-damaged-'));
  t.after(async () => {
    await killAndRemove(env, dataDir);
    fs.rmSync(files, { recursive: true, force: true });
  });
  const B = 'parts-damaged';
  awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
  const uploadId = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', B, '--key', 'k']).UploadId as string;
  const bodies = [randomBytes(5 * 1024 * 1024), randomBytes(5 * 1024 * 1024), randomBytes(777)];
  const partFiles = bodies.map((b, i) => {
    const f = path.join(files, `part${i + 1}`);
    fs.writeFileSync(f, b);
    return f;
  });
  const etags = partFiles.map((f, i) => awsOk(env, ['s3api', 'upload-part', '--bucket', B, '--key', 'k', '--upload-id', uploadId, '--part-number', String(i + 1), '--body', f]).ETag as string);

  await env.daemon.kill();
  await rewriteRecord<{ partNumber: number }>(dataDir, PARTS_DB, (v) => v?.partNumber === 2, () => null, 'part 2');
  env = await restartS3(env);

  const s3api = (op: string, ...extra: string[]) => ['s3api', op, '--bucket', B, '--key', 'k', '--upload-id', uploadId, ...extra];
  const listed = awsOk(env, s3api('list-parts')).Parts as Part[];
  assert.deepEqual(
    listed.map((p) => [p.PartNumber, p.ETag]),
    [
      [1, etags[0]],
      [2, '"damaged-part-record"'],
      [3, etags[2]],
    ],
    'the damaged part is listed under its number',
  );
  const debug = aws(env, [...s3api('list-parts'), '--debug']);
  assert.match(debug.stderr, /'x-couchestor-damaged-parts': '1'/, 'the damage is said in the answer');
  await waitForLog(env.daemon, /ListParts listed damaged part records.*part 2: the record is null/);

  // One part a page: every part once, the damaged one included, and the paging ends.
  let marker = '0';
  const paged: number[] = [];
  for (let pages = 0; ; pages++) {
    assert.ok(pages < 5, `paging does not end: ${paged}`);
    const page = awsOk(env, s3api('list-parts', '--max-parts', '1', '--part-number-marker', marker, '--no-paginate'));
    paged.push(...(page.Parts as Part[]).map((p) => p.PartNumber));
    if (!page.IsTruncated) break;
    marker = String(page.NextPartNumberMarker);
  }
  assert.deepEqual(paged, [1, 2, 3]);

  // Completing with the parts listed, or with part 2's real ETag: 400 InvalidPart naming the damage, once (no retries), nothing built.
  const complete = (parts: { PartNumber: number; ETag: string }[]) => aws(env, [...s3api('complete-multipart-upload', '--multipart-upload', JSON.stringify({ Parts: parts })), '--debug']);
  for (const parts of [listed.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })), etags.map((ETag, i) => ({ PartNumber: i + 1, ETag }))]) {
    const r = complete(parts);
    assert.notEqual(r.status, 0, 'completion naming the damaged part fails');
    assert.match(r.stderr, /InvalidPart.*Part 2 cannot be used: its stored record is damaged \(the record is null, not an object\). Upload part 2 again or abort the upload/);
    assert.equal([...r.stderr.matchAll(/HTTP\/1\.1" (\d{3}) /g)].map((m) => m[1]).join(','), '400', 'one 400 answer, not retried 500s');
  }
  const head = aws(env, ['s3api', 'head-object', '--bucket', B, '--key', 'k']);
  assert.notEqual(head.status, 0, 'no object was built');
  assert.equal(awsOk(env, s3api('list-parts')).Parts.length, 3, 'the upload is untouched');

  // Uploaded again, the part replaces the damaged record: the upload lists whole and completes byte-exact.
  etags[1] = awsOk(env, s3api('upload-part', '--part-number', '2', '--body', partFiles[1]!)).ETag as string;
  const after = aws(env, [...s3api('list-parts'), '--debug']);
  assert.doesNotMatch(after.stderr, /x-couchestor-damaged-parts/);
  const whole = awsOk(env, s3api('list-parts')).Parts as Part[];
  assert.deepEqual(
    whole.map((p) => [p.PartNumber, p.ETag, p.Size]),
    etags.map((e, i) => [i + 1, e, bodies[i]!.length]),
  );
  awsOk(env, s3api('complete-multipart-upload', '--multipart-upload', JSON.stringify({ Parts: whole.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })) })));
  const out = path.join(env.home, 'got');
  awsOk(env, ['s3api', 'get-object', '--bucket', B, '--key', 'k', out]);
  assert.ok(fs.readFileSync(out).equals(Buffer.concat(bodies)), 'the object is the three parts');
});
