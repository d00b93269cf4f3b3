// Review: conditional writes and deletes (If-None-Match / If-Match on PutObject,
// CompleteMultipartUpload, CopyObject, DeleteObject) are not evaluated by CoucheStor;
// ignored, they would overwrite or delete unconditionally. Real daemon, @aws-sdk/client-s3
// (the Debian aws cli 2.9 has no --if-none-match).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3ServiceException,
} from '@aws-sdk/client-s3';
import { awsOk, startS3, type S3Env } from './helpers/s3-env.js';

describe('review: conditional writes and deletes are refused, never applied unconditionally', () => {
  let env: S3Env;
  const B = 'review-conditional';
  const body = async (key: string) => (await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: key })).then((r) => r.Body!.transformToString()));
  const refused = async (p: Promise<unknown>) => {
    const err = (await p.then(() => undefined, (e: unknown) => e)) as S3ServiceException | undefined;
    assert.ok(err, 'the conditional request was applied');
    assert.deepEqual([err.$metadata.httpStatusCode, err.name], [501, 'NotImplemented'], String(err));
  };

  before(async () => {
    env = await startS3();
    awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
  });
  after(async () => {
    await env.cleanup();
  });

  it('PutObject If-None-Match: * (create only) on an existing key, and If-Match with another ETag: refused, the object kept', async () => {
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'k', Body: 'original' }));
    await refused(env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'k', Body: 'overwritten', IfNoneMatch: '*' })));
    await refused(env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'k', Body: 'overwritten', IfMatch: '"0123456789abcdef0123456789abcdef"' })));
    await refused(env.sdk.send(new CopyObjectCommand({ Bucket: B, Key: 'k', CopySource: `${B}/k`, MetadataDirective: 'REPLACE', IfNoneMatch: '*' } as never)));
    assert.equal(await body('k'), 'original');
  });

  it('CompleteMultipartUpload If-None-Match: * on an existing key: refused, the object and the upload kept', async () => {
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'mp', Body: 'original' }));
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: B, Key: 'mp' }));
    const { ETag } = await env.sdk.send(new UploadPartCommand({ Bucket: B, Key: 'mp', UploadId, PartNumber: 1, Body: 'part one' }));
    const complete = (extra: object) => env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: B, Key: 'mp', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] }, ...extra }));
    await refused(complete({ IfNoneMatch: '*' }));
    assert.equal(await body('mp'), 'original');
    const parts = await env.sdk.send(new ListPartsCommand({ Bucket: B, Key: 'mp', UploadId }));
    assert.deepEqual(parts.Parts?.map((p) => p.PartNumber), [1]);
    await complete({});
    assert.equal(await body('mp'), 'part one');
  });

  it('DeleteObject If-Match with another ETag: refused, the object kept', async () => {
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'd', Body: 'kept' }));
    await refused(env.sdk.send(new DeleteObjectCommand({ Bucket: B, Key: 'd', IfMatch: '"0123456789abcdef0123456789abcdef"' })));
    assert.equal(await body('d'), 'kept');
  });
});
