// Review of 5a768fc: PutObjectTagging (setObjectTags, one read-modify-write
// transaction on the current record) racing each operation that replaces or
// removes the record: PutObject, CopyObject onto the key,
// CompleteMultipartUpload, DeleteObject, DeleteObjects; and PutBucketTagging
// racing DeleteBucket. The tags end on the version that is current when they
// land (never the replaced version's tags on the new bytes), a deleted key or
// bucket is never brought back. Real daemon, aws SDK, hot and cold buckets.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketTaggingCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadBucketCommand,
  PutBucketTaggingCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { startS3HotAndCold, type S3Env } from './helpers/s3-env.js';
import { MiB, patternBytes } from './helpers/cold.js';

const ROUNDS = 12;
type Tags = string[][];
const tagging = (tags: Tags) => ({ TagSet: tags.map(([Key, Value]) => ({ Key: Key!, Value: Value! })) });
const header = (tags: Tags) => tags.map(([k, v]) => `${k}=${v}`).join('&');
const errName = (err: unknown) => (err as { name?: string }).name;

describe('review: object and bucket tags racing overwrites, copies, completions and deletes', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3HotAndCold();
  });
  after(async () => {
    await env.cleanup();
  });

  const body = async (bucket: string, key: string) => Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  const tagsOf = async (bucket: string, key: string): Promise<Tags> => ((await env.sdk.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }))).TagSet ?? []).map((t) => [t.Key!, t.Value!]);
  /** PutObjectTagging; on a key deleted meanwhile NoSuchKey is a right answer too. */
  const putTags = async (bucket: string, key: string, tags: Tags): Promise<'set' | 'gone'> => {
    try {
      await env.sdk.send(new PutObjectTaggingCommand({ Bucket: bucket, Key: key, Tagging: tagging(tags) }));
      return 'set';
    } catch (err) {
      if (errName(err) === 'NoSuchKey') return 'gone';
      throw err;
    }
  };
  const gone = async (bucket: string, key: string) => env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key })).then(
    () => false,
    (err: unknown) => (errName(err) === 'NoSuchKey' ? true : Promise.reject(err)),
  );

  for (const bucket of ['hot', 'cold']) {
    // Sizes: inline (3 KiB), one stripe / hot segment (300 KiB), several stripes (2 MiB + 1).
    const sizes = [3 * 1024, 300 * 1024, 2 * MiB + 1];

    it(`${bucket}: tags racing PutObject, CopyObject and CompleteMultipartUpload end on the new version: its own tags or the racing ones, never the old version's`, async (t) => {
      const outcomes = new Map<string, number>();
      const src = patternBytes(sizes[1]!, 0x5500);
      await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'src', Body: src, Tagging: 'from=src' }));
      for (let round = 0; round < ROUNDS; round++) {
        const size = sizes[round % sizes.length]!;
        for (const op of ['put', 'copy', 'complete'] as const) {
          const key = `race-${op}`;
          const oldBytes = patternBytes(size, round);
          await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: oldBytes, Tagging: 'old=1' }));
          const raced: Tags = [['raced', String(round)]];
          let newBytes: Buffer;
          let own: Tags;
          let replace: () => Promise<unknown>;
          if (op === 'put') {
            newBytes = patternBytes(size, 1000 + round);
            own = [['new', String(round)]];
            replace = () => env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: newBytes, Tagging: header(own) }));
          } else if (op === 'copy') {
            newBytes = src;
            own = [['from', 'src']];
            replace = () => env.sdk.send(new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: `${bucket}/src` }));
          } else {
            newBytes = patternBytes(size, 2000 + round);
            own = [['upload', String(round)]];
            const up = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, Tagging: header(own) }));
            const part = await env.sdk.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: up.UploadId, PartNumber: 1, Body: newBytes }));
            replace = () => env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: up.UploadId, MultipartUpload: { Parts: [{ ETag: part.ETag, PartNumber: 1 }] } }));
          }
          const [, tagged] = await Promise.all([replace(), putTags(bucket, key, raced)]);
          assert.equal(tagged, 'set', `${op} round ${round}: the key existed throughout`);
          assert.ok((await body(bucket, key)).equals(newBytes), `${op} round ${round}: the new bytes`);
          const now = await tagsOf(bucket, key);
          const which = JSON.stringify(now) === JSON.stringify(own) ? 'own' : JSON.stringify(now) === JSON.stringify(raced) ? 'raced' : `unexpected ${JSON.stringify(now)}`;
          assert.ok(which === 'own' || which === 'raced', `${op} round ${round}: tags ${JSON.stringify(now)}, expected ${JSON.stringify(own)} or ${JSON.stringify(raced)}`);
          outcomes.set(`${op} ${which}`, (outcomes.get(`${op} ${which}`) ?? 0) + 1);
        }
      }
      // Which side won is the scheduler's; both are right. Reported, not asserted.
      t.diagnostic(`${bucket}: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    });

    it(`${bucket}: tags racing DeleteObject and DeleteObjects never bring the key back`, async () => {
      for (let round = 0; round < ROUNDS; round++) {
        for (const op of ['delete', 'deleteObjects'] as const) {
          const key = `gone-${op}`;
          await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: patternBytes(sizes[round % sizes.length]!, round) }));
          const remove = op === 'delete' ? env.sdk.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })) : env.sdk.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: key }] } }));
          await Promise.all([remove, putTags(bucket, key, [['late', String(round)]])]);
          assert.ok(await gone(bucket, key), `${op} round ${round}: the key stays deleted`);
          assert.equal(await putTags(bucket, key, [['after', 'delete']]), 'gone');
        }
      }
    });
  }

  it('PutBucketTagging racing DeleteBucket never re-creates the bucket', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const name = `tagged-${round}`;
      await env.sdk.send(new CreateBucketCommand({ Bucket: name }));
      const put = env.sdk.send(new PutBucketTaggingCommand({ Bucket: name, Tagging: tagging([['r', String(round)]]) })).then(
        () => 'set',
        (err: unknown) => (errName(err) === 'NoSuchBucket' ? 'gone' : Promise.reject(err)),
      );
      await Promise.all([env.sdk.send(new DeleteBucketCommand({ Bucket: name })), put]);
      await assert.rejects(env.sdk.send(new HeadBucketCommand({ Bucket: name })), (e: unknown) => errName(e) === 'NotFound' || errName(e) === 'NoSuchBucket');
      // Created again: a new bucket, without the old one's tags.
      await env.sdk.send(new CreateBucketCommand({ Bucket: name }));
      await assert.rejects(env.sdk.send(new GetBucketTaggingCommand({ Bucket: name })), (e: unknown) => errName(e) === 'NoSuchTagSet');
      await env.sdk.send(new DeleteBucketCommand({ Bucket: name }));
    }
  });
});
