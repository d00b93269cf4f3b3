// x-amz-storage-class as AWS S3 answers it: a class S3 defines is taken on
// PutObject, CopyObject and CreateMultipartUpload and recorded with the object
// (it picks no tier: docs/s3.md); a class S3 does not define is 400
// InvalidStorageClass with nothing written; HEAD/GET send x-amz-storage-class
// for every class but STANDARD; ListObjectsV2, ListObjects,
// ListObjectVersions, ListParts, ListMultipartUploads and GetObjectAttributes
// give the object's (or upload's) class; a copy takes the class asked for,
// STANDARD if none; the class survives a restart; a record with no class
// (STANDARD, or written before the class was kept) reads as STANDARD. Before,
// every class was accepted and dropped. The real aws cli for the calls a user
// makes (each spawn costs ~0.5 s, so the exhaustive loops use
// @aws-sdk/client-s3). One daemon for the file, hot and cold buckets.
import {
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectAttributesCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type StorageClass,
} from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { awsFail, awsOk, outcome, restartS3, startS3HotAndCold, type S3Env } from './helpers/s3-env.js';

const CLASSES = ['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'OUTPOSTS', 'EXPRESS_ONEZONE', 'SNOW'];

describe('x-amz-storage-class', () => {
  let env: S3Env;
  let work: string;
  let body: string;
  before(async () => {
    env = await startS3HotAndCold();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-class-'));
    body = path.join(work, 'body');
    fs.writeFileSync(body, 'classy bytes');
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const head = (bucket: string, key: string) => awsOk(env, ['s3api', 'head-object', '--bucket', bucket, '--key', key]);
  const sdkClass = async (bucket: string, key: string) => (await env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).StorageClass;
  const listed = async (bucket: string, prefix = '') => Object.fromEntries(((await env.sdk.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map((c) => [c.Key!, c.StorageClass]));

  it('aws s3api put-object / copy-object: the class is given back by HEAD, GET, the three listings and GetObjectAttributes; an unknown one is 400 InvalidStorageClass', async () => {
    const started = Date.now();
    awsOk(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', 'glacier', '--body', body, '--storage-class', 'GLACIER']);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'hot', Key: 'plain', Body: 'x' }));
    assert.equal(head('hot', 'glacier').StorageClass, 'GLACIER', 'HEAD');
    assert.deepEqual((awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'hot']).Contents as { StorageClass: string }[]).map((c) => c.StorageClass), ['GLACIER', 'STANDARD'], 'list-objects-v2');
    const bad = awsFail(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', 'bad', '--body', body, '--storage-class', 'GLACIERS']);
    assert.deepEqual([bad.httpStatus, bad.code], [400, 'InvalidStorageClass'], JSON.stringify(bad));
    awsOk(env, ['s3api', 'copy-object', '--bucket', 'cold', '--key', 'copy-deep', '--copy-source', 'hot/glacier', '--storage-class', 'DEEP_ARCHIVE']);
    console.log(`# aws cli part: ${Date.now() - started} ms`);
    assert.equal(await sdkClass('hot', 'plain'), undefined, 'STANDARD is not sent, as S3');
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'hot', Key: 'glacier' }));
    assert.equal(got.StorageClass, 'GLACIER', 'GET');
    assert.equal(await got.Body!.transformToString(), 'classy bytes', 'read at once: no restore');
    assert.deepEqual((await env.sdk.send(new ListObjectsCommand({ Bucket: 'hot' }))).Contents!.map((c) => c.StorageClass), ['GLACIER', 'STANDARD'], 'ListObjects');
    assert.deepEqual((await env.sdk.send(new ListObjectVersionsCommand({ Bucket: 'hot' }))).Versions!.map((c) => c.StorageClass), ['GLACIER', 'STANDARD'], 'ListObjectVersions');
    assert.equal((await env.sdk.send(new GetObjectAttributesCommand({ Bucket: 'hot', Key: 'glacier', ObjectAttributes: ['StorageClass'] }))).StorageClass, 'GLACIER');
    assert.equal((await env.sdk.send(new GetObjectAttributesCommand({ Bucket: 'hot', Key: 'plain', ObjectAttributes: ['StorageClass'] }))).StorageClass, 'STANDARD');
    assert.equal(await sdkClass('cold', 'copy-deep'), 'DEEP_ARCHIVE', 'the copy has the class asked for');
    // Changing only the class is a legal copy onto itself (S3: "without changing ... storage class").
    await env.sdk.send(new CopyObjectCommand({ Bucket: 'hot', Key: 'glacier', CopySource: 'hot/glacier', StorageClass: 'ONEZONE_IA' }));
    assert.equal(await sdkClass('hot', 'glacier'), 'ONEZONE_IA');
    console.log(`# ${Date.now() - started} ms`);
  });

  it('every class S3 defines is taken on hot and cold buckets; others and other cases are refused, nothing written; a copy without a class is STANDARD; an overwrite keeps no class', async () => {
    const started = Date.now();
    for (const bucket of ['hot', 'cold']) {
      for (const c of CLASSES) await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: `all/${c}`, Body: 'x', StorageClass: c as StorageClass }));
      assert.deepEqual(await listed(bucket, 'all/'), Object.fromEntries(CLASSES.map((c) => [`all/${c}`, c])), bucket);
      for (const c of ['glacier', 'Standard', 'ARCHIVE', 'GLACIER_DEEP']) {
        for (const command of [
          new PutObjectCommand({ Bucket: bucket, Key: 'bad', Body: 'x', StorageClass: c as StorageClass }),
          new CopyObjectCommand({ Bucket: bucket, Key: 'bad', CopySource: `${bucket}/all/SNOW`, StorageClass: c as StorageClass }),
          new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'bad', StorageClass: c as StorageClass }),
        ]) {
          assert.deepEqual(await outcome(env.sdk.send(command as PutObjectCommand)), [400, 'InvalidStorageClass'], `${bucket} ${command.constructor.name} ${JSON.stringify(c)}`);
        }
      }
      assert.deepEqual(await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: 'bad' }))), [404, 'NotFound'], 'nothing written');
      // A copy's class is the one asked for, else STANDARD (not the source's), as S3.
      await env.sdk.send(new CopyObjectCommand({ Bucket: bucket, Key: 'copy', CopySource: `${bucket}/all/GLACIER` }));
      assert.equal(await sdkClass(bucket, 'copy'), undefined);
      // The class belongs to the version: an overwrite without one is STANDARD.
      await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'all/SNOW', Body: 'y' }));
      assert.equal((await listed(bucket, 'all/SNOW'))['all/SNOW'], 'STANDARD');
    }
    console.log(`# ${Date.now() - started} ms`);
  });

  it('aws s3api create-multipart-upload: the class is the upload\'s (list-multipart-uploads, list-parts) and the completed object\'s, kept across a restart', async () => {
    const started = Date.now();
    const { UploadId } = awsOk(env, ['s3api', 'create-multipart-upload', '--bucket', 'cold', '--key', 'mp', '--storage-class', 'STANDARD_IA']);
    const { UploadId: plainId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp-plain' }));
    const uploads = awsOk(env, ['s3api', 'list-multipart-uploads', '--bucket', 'cold']).Uploads as { Key: string; StorageClass: string }[];
    assert.deepEqual(Object.fromEntries(uploads.map((u) => [u.Key, u.StorageClass])), { mp: 'STANDARD_IA', 'mp-plain': 'STANDARD' }, 'list-multipart-uploads');
    const { ETag } = await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId, PartNumber: 1, Body: 'part' }));
    assert.equal(awsOk(env, ['s3api', 'list-parts', '--bucket', 'cold', '--key', 'mp', '--upload-id', UploadId]).StorageClass, 'STANDARD_IA', 'list-parts');
    assert.equal((await env.sdk.send(new ListPartsCommand({ Bucket: 'cold', Key: 'mp-plain', UploadId: plainId }))).StorageClass, 'STANDARD');
    awsOk(env, ['s3api', 'complete-multipart-upload', '--bucket', 'cold', '--key', 'mp', '--upload-id', UploadId, '--multipart-upload', JSON.stringify({ Parts: [{ PartNumber: 1, ETag }] })]);
    assert.equal(head('cold', 'mp').StorageClass, 'STANDARD_IA', 'the completed object');
    // Kept in the index: the same answers after a restart (SIGKILL).
    await env.daemon.kill();
    env = await restartS3(env);
    assert.equal(await sdkClass('cold', 'mp'), 'STANDARD_IA');
    assert.equal(await sdkClass('cold', 'copy-deep'), 'DEEP_ARCHIVE');
    assert.equal((await listed('hot', 'glacier')).glacier, 'ONEZONE_IA');
    console.log(`# ${Date.now() - started} ms`);
  });
});
