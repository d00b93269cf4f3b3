// Review of fc25093's DeleteBucket hunk: it skipped damaged PART records, but
// an UPLOAD record damaged into null still threw (TypeError reading uploadId
// of null) inside the bucket's LMDB transaction, which lmdb-js does not roll
// back: the uploads before it were dropped with their parts (nothing freed),
// the bucket stayed, every retry answered 500, and neither fsck nor
// --quarantine-damaged (objects and parts only) names such a record, so there
// was no way out. Now DeleteBucket takes each upload's id from its index key
// (uploadKey: the object key, 0, the 32-character id), so a damaged upload
// record is dropped with its parts. Real daemon, aws cli; the upload record
// rewritten through LMDB with the daemon stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { PARTS_DB, UPLOADS_DB } from '../src/dataplane/objects/cold-segments.js';
import { fsckCli, hotFiles, s3ForTest } from './helpers/damaged-record.js';
import { aws, awsFail, awsOk } from './helpers/s3-env.js';

test('DeleteBucket with an open upload whose upload record is damaged into null drops every upload and part, and the bucket', async (t) => {
  const s3 = await s3ForTest(t);
  let { env } = s3;
  const { dataDir } = s3;
  awsOk(env, ['s3api', 'create-bucket', '--bucket', 'hot']);
  const partFile = path.join(env.home, 'p');
  fs.writeFileSync(partFile, Buffer.alloc(256 * 1024, 9));
  const ids: string[] = [];
  for (const key of ['a', 'z']) {
    const { UploadId } = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'hot', '--key', key]) as { UploadId: string };
    awsOk(env, ['s3api', 'upload-part', '--bucket', 'hot', '--key', key, '--upload-id', UploadId, '--part-number', '1', '--body', partFile]);
    ids.push(UploadId);
  }
  assert.equal(await env.daemon.stop(), 0);
  assert.equal(hotFiles(dataDir).size, 2);
  // The second upload's record (key 'z') damaged into null.
  let meta = MetaStore.open(dataDir);
  try {
    const uploads = meta.openDB<unknown, Buffer>(UPLOADS_DB);
    const keys = [...uploads.getKeys({ start: Buffer.from([1]) })].map((k) => Buffer.from(k as Buffer));
    assert.equal(keys.length, 2);
    const z = keys.find((k) => k.toString('latin1').endsWith(ids[1]!))!;
    await uploads.put(z, null);
  } finally {
    await meta.close();
  }
  env = await s3.restart();
  const r = aws(env, ['s3api', 'delete-bucket', '--bucket', 'hot']);
  assert.equal(r.status, 0, `delete-bucket: ${r.stderr}`);
  assert.equal(awsFail(env, ['s3api', 'head-bucket', '--bucket', 'hot']).httpStatus, 404, 'the bucket is gone');
  assert.equal(await env.daemon.stop(), 0);
  meta = MetaStore.open(dataDir);
  try {
    assert.equal([...meta.openDB<unknown, Buffer>(UPLOADS_DB).getKeys({ start: Buffer.from([1]) })].length, 0, 'no upload record left');
    assert.equal([...meta.openDB<unknown, Buffer>(PARTS_DB).getKeys({ start: Buffer.from([1]) })].length, 0, 'no part record left');
  } finally {
    await meta.close();
  }
  assert.equal(hotFiles(dataDir).size, 0, "both parts' files freed by the delete (their records were good)");
  assert.equal(fsckCli(dataDir).status, 0);
  // And a restart on it serves.
  env = await s3.restart();
  assert.equal(hotFiles(dataDir).size, 0);
  awsOk(env, ['s3api', 'create-bucket', '--bucket', 'hot']);
});
