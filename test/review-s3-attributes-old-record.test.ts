// Review of 48025ef: a multipart object's index record written before part
// numbers were kept (no partNumbers field) still reads, lists and answers
// GetObjectAttributes with its parts (numbered by position since edc0de3, so
// the record's numbers are not needed); the record is rewritten in the
// daemon's own LMDB while it is stopped, as an older build left it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { open } from 'lmdb';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { awsOk, startS3, type S3Env } from './helpers/s3-env.js';

describe('review: GetObjectAttributes on a multipart record from before part numbers were kept', () => {
  let env: S3Env;
  let dataDir: string;
  const part1 = randomBytes(5 * 1024 * 1024);
  const part3 = randomBytes(1234);

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-s3-attr-old-'));
    env = await startS3({ dataDir });
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'old']);
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'old', Key: 'mp' }));
    const e1 = (await env.sdk.send(new UploadPartCommand({ Bucket: 'old', Key: 'mp', UploadId, PartNumber: 1, Body: part1 }))).ETag;
    const e3 = (await env.sdk.send(new UploadPartCommand({ Bucket: 'old', Key: 'mp', UploadId, PartNumber: 3, Body: part3 }))).ETag;
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'old', Key: 'mp', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1 }, { PartNumber: 3, ETag: e3 }] } }));
  });
  after(async () => {
    await env.cleanup();
  });

  it('answers its parts by position, and the object reads whole and by part', async () => {
    const now = awsOk(env, ['s3api', 'get-object-attributes', '--bucket', 'old', '--key', 'mp', '--object-attributes', 'ObjectParts', 'ObjectSize']);
    // Uploaded as 1 and 3, listed as 1 and 2: the numbers GetObject ?partNumber reads them by.
    assert.deepEqual(now.ObjectParts.Parts.map((p: { PartNumber: number; Size: number }) => [p.PartNumber, p.Size]), [[1, part1.length], [2, part3.length]]);

    assert.equal(await env.daemon.stop(), 0);
    env.sdk.destroy();
    const root = open({ path: path.join(dataDir, 'meta'), maxDbs: 64, mapSize: 4 * 1024 ** 3 });
    const objects = root.openDB<Record<string, unknown>, Buffer>({ name: 's3-objects' });
    let rewritten = 0;
    // Index keys start with 0x01 (store.ts ALL_KEYS): a range from there reads them all.
    for (const { key, value } of objects.getRange({ start: Buffer.from([1]) })) {
      if (value.key !== 'mp') continue;
      assert.deepEqual(value.partNumbers, [1, 3]);
      const { partNumbers: _dropped, ...older } = value;
      await objects.put(Buffer.from(key as Buffer), older);
      rewritten++;
    }
    await root.close();
    assert.equal(rewritten, 1);
    fs.rmSync(env.home, { recursive: true, force: true });
    env = await startS3({ dataDir });

    const old = awsOk(env, ['s3api', 'get-object-attributes', '--bucket', 'old', '--key', 'mp', '--object-attributes', 'ObjectParts', 'ObjectSize', 'ETag']);
    assert.equal(old.ObjectSize, part1.length + part3.length);
    assert.match(old.ETag, /^[0-9a-f]{32}-2$/);
    assert.equal(old.ObjectParts.TotalPartsCount, 2);
    assert.deepEqual(old.ObjectParts.Parts.map((p: { PartNumber: number; Size: number }) => [p.PartNumber, p.Size]), [[1, part1.length], [2, part3.length]]);
    const whole = await env.sdk.send(new GetObjectCommand({ Bucket: 'old', Key: 'mp' }));
    assert.ok(Buffer.from(await whole.Body!.transformToByteArray()).equals(Buffer.concat([part1, part3])));
    const second = await env.sdk.send(new GetObjectCommand({ Bucket: 'old', Key: 'mp', PartNumber: 2 }));
    assert.ok(Buffer.from(await second.Body!.transformToByteArray()).equals(part3));
    const listed = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'old']);
    assert.deepEqual(listed.Contents.map((c: { Key: string; Size: number }) => [c.Key, c.Size]), [['mp', part1.length + part3.length]]);
  });
});
