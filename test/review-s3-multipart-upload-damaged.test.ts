// A damaged multipart UPLOAD record while the daemon runs (quarantine.ts
// uploadDamage: one damaged into null, one whose stored bytes no longer
// decode), with the real aws cli. Before (d95f5da handled it offline only):
// every ListMultipartUploads of the bucket answered 500 (the torn one kept
// the daemon from starting at all) and AbortMultipartUpload answered
// NoSuchUpload, so the upload's parts held their files for ever. Now the
// listing shows every upload, a damaged one under the key and upload id of
// its index key (Initiated 1970-01-01, said by x-couchestor-damaged-uploads
// and a log line), also across pages; UploadPart to it is NoSuchUpload naming
// the damage; AbortMultipartUpload removes it with its parts (their files
// freed; the upload record names none).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { UPLOADS_DB } from '../src/dataplane/objects/cold-segments.js';
import { waitForLog } from './helpers/control-loop.js';
import { hotFiles, killAndRemove, rewriteRecord, tearRecord } from './helpers/damaged-record.js';
import { aws, awsFail, awsOk, restartS3, startS3, type S3Env } from './helpers/s3-env.js';

interface Listed {
  Key: string;
  UploadId: string;
  Initiated: string;
}

const B = 'mpu';

function listUploads(env: S3Env, ...extra: string[]): Listed[] {
  return ((awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', B, ...extra]) as { Uploads?: Listed[] }).Uploads ?? []);
}

test('damaged multipart upload records are listed under their index key and aborted with their parts; the others list as before', async (t) => {
  let env = await startS3();
  const dataDir = env.daemon.dataDir;
  const files = fs.mkdtempSync(path.join(os.tmpdir(), 'review-s3-mpu-damaged-'));
  t.after(async () => {
    await killAndRemove(env, dataDir);
    fs.rmSync(files, { recursive: true, force: true });
  });
  awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
  const body = path.join(files, 'part');
  fs.writeFileSync(body, randomBytes(64 * 1024));
  const ids = new Map<string, string>();
  for (const key of ['a/null', 'b/torn', 'c/ok']) {
    const id = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', B, '--key', key]).UploadId as string;
    ids.set(key, id);
    for (const n of ['1', '2']) awsOk(env, ['s3api', 'upload-part', '--bucket', B, '--key', key, '--upload-id', id, '--part-number', n, '--body', body]);
  }
  assert.equal(hotFiles(dataDir).size, 6);

  assert.equal(await env.daemon.stop(), 0);
  await rewriteRecord<{ key: string } | null>(dataDir, UPLOADS_DB, (v) => v?.key === 'a/null', () => null, 'upload a/null');
  await tearRecord<{ key: string } | null>(dataDir, UPLOADS_DB, (v) => v?.key === 'b/torn', 'upload b/torn');
  env = await restartS3(env);

  const want = [...ids].map(([key, id]) => [key, id]);
  assert.deepEqual(listUploads(env).map((u) => [u.Key, u.UploadId]), want, 'every upload listed, the damaged ones under their index key');
  assert.deepEqual(listUploads(env, '--page-size', '1').map((u) => [u.Key, u.UploadId]), want, 'also page by page (markers pass the damaged ones)');
  const listed = listUploads(env);
  assert.equal(listed[0]!.Initiated.slice(0, 10), '1970-01-01');
  assert.notEqual(listed[2]!.Initiated.slice(0, 10), '1970-01-01');
  await waitForLog(env.daemon, /ListMultipartUploads listed multipart uploads whose record is damaged.*a\/null upload [0-9a-f]{32}: the record is null.*b\/torn upload [0-9a-f]{32}: the stored bytes do not decode/);

  // Not usable: its content headers and metadata are gone. NoSuchUpload, naming the damage.
  const put = awsFail(env, ['s3api', 'upload-part', '--bucket', B, '--key', 'a/null', '--upload-id', ids.get('a/null')!, '--part-number', '3', '--body', body]);
  assert.equal(put.httpStatus, 404);
  assert.equal(put.code, 'NoSuchUpload');

  // Abort removes each damaged upload and its parts (their files freed).
  for (const key of ['a/null', 'b/torn']) {
    const r = aws(env, ['s3api', 'abort-multipart-upload', '--bucket', B, '--key', key, '--upload-id', ids.get(key)!]);
    assert.equal(r.status, 0, `abort ${key}: ${r.stderr}`);
  }
  await waitForLog(env.daemon, /aborted a multipart upload whose record is damaged[^\n]*key=b\/torn/);
  assert.equal(hotFiles(dataDir).size, 2, "the damaged uploads' parts freed, c/ok's kept");
  assert.deepEqual(listUploads(env).map((u) => [u.Key, u.UploadId]), [['c/ok', ids.get('c/ok')]]);

  // The good upload completes as before.
  const parts = (awsOk(env, ['s3api', 'list-parts', '--bucket', B, '--key', 'c/ok', '--upload-id', ids.get('c/ok')!]) as { Parts: { PartNumber: number; ETag: string }[] }).Parts;
  const done = aws(env, ['s3api', 'complete-multipart-upload', '--bucket', B, '--key', 'c/ok', '--upload-id', ids.get('c/ok')!, '--multipart-upload', JSON.stringify({ Parts: parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) })]);
  // Parts under 5 MiB but the last: EntityTooSmall is S3's answer, reached only past the upload's record.
  assert.match(done.stderr, /EntityTooSmall/, done.stderr);
  assert.equal(env.daemon.proc.exitCode, null);
});
