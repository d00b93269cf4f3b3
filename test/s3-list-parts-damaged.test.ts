// ListParts of an upload one of whose part records is damaged (stored as
// null, written through LMDB with the daemon stopped). Before: 500
// InternalError "try again" for the whole listing (the server read
// partNumber of null), so no part of the upload could be listed. Now the
// intact parts are listed, the damaged one is left out and said (the
// x-couchestor-damaged-parts header, an error log line naming the upload),
// paging by max-parts still visits every intact part once and ends, and
// uploading the part again replaces the damaged record, after which the
// upload lists whole and completes byte-exact. The real aws cli.
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

test('ListParts lists the intact parts of an upload with a part record damaged into null, says so, and the part can be uploaded again', async (t) => {
  let env = await startS3();
  const dataDir = env.daemon.dataDir;
  // The part files outlive the restart (which replaces the aws HOME).
  const files = fs.mkdtempSync(path.join(os.tmpdir(), 's3-parts-damaged-'));
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

  const listParts = (...extra: string[]) => awsOk(env, ['s3api', 'list-parts', '--bucket', B, '--key', 'k', '--upload-id', uploadId, ...extra]);
  assert.deepEqual(listParts().Parts.map((p: { PartNumber: number; ETag: string }) => [p.PartNumber, p.ETag]), [[1, etags[0]], [3, etags[2]]]);
  const debug = aws(env, ['s3api', 'list-parts', '--bucket', B, '--key', 'k', '--upload-id', uploadId, '--debug']);
  assert.match(debug.stderr, /'x-couchestor-damaged-parts': '1'/, 'the damage is said in the answer');
  await waitForLog(env.daemon, /ListParts left out damaged part records.*the record is null/);

  // One part a page: the page after part 1 starts at the damaged record and must still reach part 3, then end.
  const page1 = listParts('--max-parts', '1', '--no-paginate');
  assert.deepEqual([page1.Parts.map((p: { PartNumber: number }) => p.PartNumber), page1.IsTruncated, page1.NextPartNumberMarker], [[1], true, 1]);
  const page2 = listParts('--max-parts', '1', '--part-number-marker', '1', '--no-paginate');
  assert.deepEqual([page2.Parts.map((p: { PartNumber: number }) => p.PartNumber), page2.IsTruncated, page2.NextPartNumberMarker], [[3], false, 3]);
  assert.deepEqual(listParts('--page-size', '1').Parts.map((p: { PartNumber: number }) => p.PartNumber), [1, 3], 'the cli paginator ends');

  // Uploaded again, the part replaces the damaged record: the upload lists whole and completes.
  etags[1] = awsOk(env, ['s3api', 'upload-part', '--bucket', B, '--key', 'k', '--upload-id', uploadId, '--part-number', '2', '--body', partFiles[1]!]).ETag as string;
  const after = aws(env, ['s3api', 'list-parts', '--bucket', B, '--key', 'k', '--upload-id', uploadId, '--debug']);
  assert.doesNotMatch(after.stderr, /x-couchestor-damaged-parts/);
  assert.deepEqual(listParts().Parts.map((p: { PartNumber: number }) => p.PartNumber), [1, 2, 3]);
  const parts = { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) };
  awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', B, '--key', 'k', '--upload-id', uploadId, '--multipart-upload', JSON.stringify(parts)]);
  const out = path.join(env.home, 'got');
  awsOk(env, ['s3api', 'get-object', '--bucket', B, '--key', 'k', out]);
  assert.ok(fs.readFileSync(out).equals(Buffer.concat(bodies)), 'the object is the three parts');
});
