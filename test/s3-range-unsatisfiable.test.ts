// GET/HEAD with a Range the object cannot satisfy: 416 InvalidRange with
// Content-Range: bytes */SIZE (RFC 9110 14.4, 15.5.17; S3 sends it), so the
// client learns the current length. Satisfiable ranges (suffix, open-ended,
// clamped past the end) are 206 with their Content-Range; a multi-range or
// unparseable one is ignored (200, the whole object), as S3. The real aws cli.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aws, awsOk, startS3, type S3Env } from './helpers/s3-env.js';

/** The status and content-range of the last response the cli logged (--debug). */
function ranged(env: S3Env, op: 'get-object' | 'head-object', key: string, range: string): { status: number; contentRange: string | undefined; bytes: number | undefined } {
  const out = path.join(env.home, 'out');
  fs.rmSync(out, { force: true });
  const r = aws(env, ['s3api', op, '--bucket', 'rng', '--key', key, '--range', range, ...(op === 'get-object' ? [out] : []), '--debug']);
  const statuses = [...r.stderr.matchAll(/HTTP\/1\.1" (\d{3}) /g)];
  const headers = [...r.stderr.matchAll(/Response headers: (\{.*\})/g)];
  const last = headers[headers.length - 1]?.[1] ?? '';
  return {
    status: Number(statuses[statuses.length - 1]![1]),
    contentRange: /'content-range': '([^']*)'/.exec(last)?.[1],
    bytes: fs.existsSync(out) ? fs.statSync(out).size : undefined,
  };
}

describe('s3 ranges: unsatisfiable ones say the object length', () => {
  let env: S3Env;
  before(async () => {
    env = await startS3();
    awsOk(env, ['s3api', 'create-bucket', '--bucket', 'rng']);
    fs.writeFileSync(path.join(env.home, 'hundred'), Buffer.alloc(100, 7));
    fs.writeFileSync(path.join(env.home, 'empty'), Buffer.alloc(0));
    awsOk(env, ['s3api', 'put-object', '--bucket', 'rng', '--key', 'hundred', '--body', path.join(env.home, 'hundred')]);
    awsOk(env, ['s3api', 'put-object', '--bucket', 'rng', '--key', 'empty', '--body', path.join(env.home, 'empty')]);
  });
  after(async () => {
    await env.cleanup();
  });

  it('416 with Content-Range bytes */SIZE on GET and HEAD: start at or past the end, bytes=-0, a start-end range of an empty object (a suffix one is 200: review-s3-range-empty-cold)', () => {
    for (const [key, range, size] of [
      ['hundred', 'bytes=100-', 100],
      ['hundred', 'bytes=200-300', 100],
      ['hundred', 'bytes=-0', 100],
      ['empty', 'bytes=0-', 0],
      ['empty', 'bytes=-0', 0],
    ] as const) {
      for (const op of ['get-object', 'head-object'] as const) {
        const r = ranged(env, op, key, range);
        assert.deepEqual([r.status, r.contentRange], [416, `bytes */${size}`], `${op} ${key} ${range}`);
      }
    }
  });

  it('satisfiable ranges are 206 with their Content-Range; multi-range and unparseable ones are the whole object', () => {
    for (const [range, status, contentRange, bytes] of [
      ['bytes=-10', 206, 'bytes 90-99/100', 10],
      ['bytes=-1000', 206, 'bytes 0-99/100', 100],
      ['bytes=90-', 206, 'bytes 90-99/100', 10],
      ['bytes=99-500', 206, 'bytes 99-99/100', 1],
      ['bytes=0-1,5-6', 200, undefined, 100],
      ['bytes=5-2', 200, undefined, 100],
      ['items=0-1', 200, undefined, 100],
    ] as const) {
      assert.deepEqual(ranged(env, 'get-object', 'hundred', range), { status, contentRange, bytes }, range);
    }
  });
});
