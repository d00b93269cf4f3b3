// Review of fsck --quarantine-damaged (f7b8734): a multipart UPLOAD record
// damaged (into null here) was no damage to fsck (exit 0) nor to the
// quarantine, while every ListMultipartUploads of its bucket answered 500,
// AbortMultipartUpload answered NoSuchUpload and its parts held their files
// for ever: no way out short of DeleteBucket of an empty bucket. Now fsck
// reports it ("bucket/key upload ID", exit 1) and --quarantine-damaged moves
// it together with every part of its upload (no S3 call reaches a part whose
// upload is gone); at the next start their files are swept, the bucket's
// other upload lists and completes. Real daemon, real couchestor CLI, aws cli.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { UPLOADS_DB } from '../src/dataplane/objects/cold-segments.js';
import { awsDownload, fsckCli, hotFiles, s3WithKeptAndVictim } from './helpers/damaged-record.js';
import { aws, awsOk, type S3Env } from './helpers/s3-env.js';

function awsGet(env: S3Env, key: string): Buffer {
  return awsDownload(env, (file) => ['s3api', 'get-object', '--bucket', 'hot', '--key', key, file], `get-object ${key}`);
}

test('a damaged upload record: fsck reports it, --quarantine-damaged moves it with its parts, the bucket lists its uploads again and their files are swept', async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  awsOk(env, ['s3api', 'delete-object', '--bucket', 'hot', '--key', 'victim']);
  const partBytes = crypto.randomBytes(256 * 1024);
  const partFile = path.join(env.home, 'p');
  fs.writeFileSync(partFile, partBytes);
  const ids = new Map<string, string>();
  for (const [key, parts] of [['a', 1], ['z', 2]] as const) {
    const { UploadId } = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'hot', '--key', key]) as { UploadId: string };
    for (let n = 1; n <= parts; n++) awsOk(env, ['s3api', 'upload-part', '--bucket', 'hot', '--key', key, '--upload-id', UploadId, '--part-number', String(n), '--body', partFile]);
    ids.set(key, UploadId);
  }
  assert.equal(await env.daemon.stop(), 0);
  assert.equal(hotFiles(dataDir).size, 4, 'kept and three part files');
  const meta = MetaStore.open(dataDir);
  try {
    const uploads = meta.openDB<unknown, Buffer>(UPLOADS_DB);
    const z = [...uploads.getKeys({ start: Buffer.from([1]) })].map((k) => Buffer.from(k as Buffer)).find((k) => k.toString('latin1').endsWith(ids.get('z')!))!;
    await uploads.put(z, null);
  } finally {
    await meta.close();
  }
  const zName = `hot/z upload "${ids.get('z')}"`;

  const before = fsckCli(dataDir);
  assert.equal(before.status, 1, `fsck reports the damaged upload record: ${before.stderr}`);
  const report = JSON.parse(before.stdout) as { damagedRecordCount: number; damagedRecords: { db: string; record: string; problem: string }[] };
  assert.equal(report.damagedRecordCount, 1, before.stdout);
  assert.deepEqual(report.damagedRecords[0], { db: 'uploads', record: zName, problem: 'the record is null, not an object' });

  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.ok(q.stderr.includes(`quarantined damaged S3 index record (uploads) ${zName}: the record is null, not an object`), q.stderr);
  for (const n of [1, 2]) assert.ok(q.stderr.includes(`(parts) upload "${ids.get('z')}" part ${n}: its upload's record is damaged`), q.stderr);
  assert.match(q.stderr, /fsck: 3 record\(s\) quarantined/);
  assert.equal((JSON.parse(q.stdout) as { damagedRecordCount: number }).damagedRecordCount, 0);

  env = await s3.restart();
  assert.equal(hotFiles(dataDir).size, 2, "z's two part files swept; kept's and a's part's kept");
  const listed = awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', 'hot']) as { Uploads: { Key: string; UploadId: string }[] };
  assert.deepEqual(listed.Uploads.map((u) => [u.Key, u.UploadId]), [['a', ids.get('a')]]);
  const parts = awsOk(env, ['s3api', 'list-parts', '--bucket', 'hot', '--key', 'a', '--upload-id', ids.get('a')!]) as { Parts: { PartNumber: number; ETag: string }[] };
  const doc = path.join(env.home, 'complete.json');
  fs.writeFileSync(doc, JSON.stringify({ Parts: parts.Parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) }));
  awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'hot', '--key', 'a', '--upload-id', ids.get('a')!, '--multipart-upload', `file://${doc}`]);
  assert.ok(awsGet(env, 'a').equals(partBytes), 'the good upload completes byte-exact');
  assert.ok(awsGet(env, 'kept').equals(kept));
});
