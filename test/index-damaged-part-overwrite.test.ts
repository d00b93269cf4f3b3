// Re-uploading (UploadPart over) a multipart part whose stored record is
// damaged frees nothing the damaged record names, as DELETE of a damaged
// object key: here the damaged part's hot segment names another object's
// file (its fileId) with a garbled length. Before the fix the overwrite freed
// that segment, deleting the other object's file: GET of 'kept' then failed.
// Real daemon, aws cli for every S3 call; the record rewritten through LMDB
// with the daemon stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OBJECTS_DB, PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { awsDownload, readRecord, rewriteRecord, s3ForTest } from './helpers/damaged-record.js';
import { aws, awsOk, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
type Seg = { kind: string; pool?: string; fileId?: unknown; lengthBytes?: unknown; chunkCrc32c?: unknown };

function awsGet(env: S3Env, key: string): Buffer {
  return awsDownload(env, (file) => ['s3', 'cp', `s3://hot/${key}`, file], `aws s3 cp ${key}`);
}

function bodyFile(env: S3Env, name: string, bytes: Buffer): string {
  const file = path.join(env.home, name);
  fs.writeFileSync(file, bytes);
  return file;
}

test("re-uploading a damaged multipart part frees nothing the damaged record names: another object's file it names survives", async (t) => {
  const s3 = await s3ForTest(t);
  let { env } = s3;
  const { dataDir } = s3;
  awsOk(env, ['s3api', 'create-bucket', '--bucket', 'hot']);
  const kept = crypto.randomBytes(MiB);
  awsOk(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', 'kept', '--body', bodyFile(env, 'kept', kept)]);
  const { UploadId } = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'hot', '--key', 'mp']) as { UploadId: string };
  awsOk(env, ['s3api', 'upload-part', '--bucket', 'hot', '--key', 'mp', '--upload-id', UploadId, '--part-number', '1', '--body', bodyFile(env, 'p1', crypto.randomBytes(MiB))]);

  assert.equal(await env.daemon.stop(), 0);
  const keptRec = await readRecord<{ key: string; segments: Seg[] }>(dataDir, OBJECTS_DB, (v) => v.key === 'kept');
  const keptSeg = keptRec.value.segments[0]!;
  assert.equal(keptSeg.kind, 'hot');
  // The part's segment damaged (its length garbled) and naming kept's file.
  await rewriteRecord<{ segment: Seg }>(dataDir, PARTS_DB, () => true, (v) => ({ ...v, segment: { ...keptSeg, lengthBytes: 'garbled' } }), 'the part record');
  env = await s3.restart();

  const again = crypto.randomBytes(MiB);
  awsOk(env, ['s3api', 'upload-part', '--bucket', 'hot', '--key', 'mp', '--upload-id', UploadId, '--part-number', '1', '--body', bodyFile(env, 'p1b', again)]);
  assert.ok(awsGet(env, 'kept').equals(kept), "kept's file was not freed by the overwrite");
  // The log line is written before the answer; spawnSync held this process's event loop, so poll for its pipe.
  const deadline = Date.now() + 10_000;
  while (!/WARN object store: replaced a damaged part record without freeing what it names/.test(env.daemon.stderr) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  assert.match(env.daemon.stderr, /WARN object store: replaced a damaged part record without freeing what it names .*partNumber=1/);

  // The new part is a good one: the upload completes and reads back.
  const parts = awsOk(env, ['s3api', 'list-parts', '--bucket', 'hot', '--key', 'mp', '--upload-id', UploadId]) as { Parts: { PartNumber: number; ETag: string }[] };
  const doc = bodyFile(env, 'complete.json', Buffer.from(JSON.stringify({ Parts: parts.Parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) })));
  awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'hot', '--key', 'mp', '--upload-id', UploadId, '--multipart-upload', `file://${doc}`]);
  assert.ok(awsGet(env, 'mp').equals(again));
  // And after a restart (the start-up sweep is on again: no damaged record left), kept still reads back.
  assert.equal(await env.daemon.stop(), 0);
  env = await s3.restart();
  assert.ok(awsGet(env, 'kept').equals(kept));
});
