// Ranges on an empty object and on objects in a cold (erasure-coded) bucket,
// with the real aws cli. A suffix range (bytes=-N, N > 0) of an empty object
// is satisfiable (RFC 9110 14.1.1: the whole representation when it is
// shorter) and S3 answers 200 with the empty body; tail readers (Trino's
// readTail, arrow object_store) rely on it. Before: 416 InvalidRange, so
// those readers failed on every empty object. bytes=0- and bytes=-0 of an
// empty object stay 416 with Content-Range bytes */0 (as S3), on GET and
// HEAD; a cold object's ranges answer as a hot one's.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { MANUAL_DESTAGE_CONFIG } from './helpers/cold.js';
import { killAndRemove, startEcS3 } from './helpers/damaged-record.js';
import { aws, awsOk, createColdBucket, type S3Env } from './helpers/s3-env.js';

/** Status, content-range and bytes written of the last response the cli logged (--debug) for a ranged get-object/head-object. */
function ranged(env: S3Env, op: 'get-object' | 'head-object', bucket: string, key: string, range: string) {
  const out = path.join(env.home, 'out');
  fs.rmSync(out, { force: true });
  const r = aws(env, ['s3api', op, '--bucket', bucket, '--key', key, '--range', range, ...(op === 'get-object' ? [out] : []), '--debug']);
  const statuses = [...r.stderr.matchAll(/HTTP\/1\.1" (\d{3}) /g)];
  const headers = [...r.stderr.matchAll(/Response headers: (\{.*\})/g)];
  const last = headers[headers.length - 1]?.[1] ?? '';
  return {
    exit: r.status,
    status: Number(statuses[statuses.length - 1]![1]),
    contentRange: /'content-range': '([^']*)'/.exec(last)?.[1],
    bytes: fs.existsSync(out) ? fs.readFileSync(out) : undefined,
  };
}

test('ranges of an empty object (suffix: 200 empty, as S3) and of cold objects', async (t) => {
  const { dataDir, env } = await startEcS3('review-s3-range-', MANUAL_DESTAGE_CONFIG);
  t.after(() => killAndRemove(env, dataDir));
  awsOk(env, ['s3api', 'create-bucket', '--bucket', 'hot']);
  await createColdBucket(env, 'cold');
  const hundred = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
  fs.writeFileSync(path.join(env.home, 'hundred'), hundred);
  fs.writeFileSync(path.join(env.home, 'empty'), Buffer.alloc(0));
  for (const bucket of ['hot', 'cold']) {
    for (const key of ['hundred', 'empty']) awsOk(env, ['s3api', 'put-object', '--bucket', bucket, '--key', key, '--body', path.join(env.home, key)]);
  }

  for (const bucket of ['hot', 'cold']) {
    for (const range of ['bytes=-1', 'bytes=-5', 'bytes=-1000']) {
      const get = ranged(env, 'get-object', bucket, 'empty', range);
      assert.deepEqual([get.exit, get.status, get.contentRange, get.bytes?.length], [0, 200, undefined, 0], `GET ${bucket}/empty ${range}: the empty object`);
      const head = ranged(env, 'head-object', bucket, 'empty', range);
      assert.deepEqual([head.exit, head.status, head.contentRange], [0, 200, undefined], `HEAD ${bucket}/empty ${range}`);
    }
    for (const [key, range, size] of [
      ['empty', 'bytes=0-', 0],
      ['empty', 'bytes=0-0', 0],
      ['empty', 'bytes=-0', 0],
      ['hundred', 'bytes=100-', 100],
      ['hundred', 'bytes=-0', 100],
    ] as const) {
      for (const op of ['get-object', 'head-object'] as const) {
        const r = ranged(env, op, bucket, key, range);
        assert.deepEqual([r.status, r.contentRange], [416, `bytes */${size}`], `${op} ${bucket}/${key} ${range}`);
      }
    }
    for (const [range, contentRange, start, end] of [
      ['bytes=-10', 'bytes 90-99/100', 90, 100],
      ['bytes=99-500', 'bytes 99-99/100', 99, 100],
      ['bytes=3-7', 'bytes 3-7/100', 3, 8],
    ] as const) {
      const r = ranged(env, 'get-object', bucket, 'hundred', range);
      assert.deepEqual([r.status, r.contentRange], [206, contentRange], `GET ${bucket}/hundred ${range}`);
      assert.ok(r.bytes?.equals(hundred.subarray(start, end)), `GET ${bucket}/hundred ${range}: the bytes`);
    }
  }
});
