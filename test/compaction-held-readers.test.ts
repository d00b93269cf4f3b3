// Segment compaction against readers that hold stripe references the index
// no longer has: a cold S3 GET that began before its object was overwritten
// (its version is pinned, its stripes freed only when the GET ends) reads the
// old bytes to the end although a compaction pass ran in the middle of it.
// Through real clients (the AWS SDK, the admin API); TCP back-pressure holds
// the GET part-way while the overwrite and the pass happen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { createColdBucket, startS3 } from './helpers/s3-env.js';
import { MiB, api, assertSameBytes, dropCache, patternBytes } from './helpers/cold.js';

/**
 * 1 MiB segments (three 256 KiB shard records): an object spans many sealed
 * segments. A segment is compacted once a third of it is dead: one record of
 * another object is enough.
 */
const config = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n    deadFraction: 0.3\n`;

test('a cold GET begun before its object was overwritten reads the old bytes to the end through a compaction pass', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-held-readers-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), config);
  const env = await startS3({ dataDir });
  t.after(() => env.cleanup());
  const d = env.daemon;
  await createColdBucket(env, 'cold');
  // Larger than what the sockets between the daemon and this client buffer,
  // so most of its stripes are still to be read when the GET stalls.
  const OBJECT_BYTES = 32 * MiB;
  const v1 = patternBytes(OBJECT_BYTES, 1);
  const v2 = patternBytes(OBJECT_BYTES, 2);
  // Uploaded side by side: their stripes interleave in the segments, so
  // deleting `z` leaves every segment of `o` part dead.
  await Promise.all([
    env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: v1 })),
    env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'z', Body: patternBytes(OBJECT_BYTES, 3) })),
  ]);
  await dropCache(d); // the GET reads the segment files, not the stripe cache
  const get = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o' }));
  const body = get.Body as Readable;
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const got: Buffer[] = [];
  let gotBytes = 0;
  while (gotBytes < MiB) {
    const r = await it.next();
    assert.equal(r.done, false);
    got.push(r.value);
    gotBytes += r.value.length;
  }
  // The GET now stalls (nothing reads it). Overwrite the object: v1's stripes
  // leave the index but stay for the GET. Delete `z`, then a pass.
  await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: v2 }));
  await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: 'z' }));
  const pass = await api<{ segmentsCompacted: number; copiedBytes: number }>(d, 'POST', '/v1/compact');
  t.diagnostic(`pass during the GET: ${JSON.stringify(pass)}`);
  assert.ok(pass.segmentsCompacted > 0, 'the pass compacted segments under the GET');
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    got.push(r.value);
  }
  assertSameBytes(Buffer.concat(got), v1, 'GET begun before the overwrite');
  // The GET has ended: v1 is freed; the object reads v2, before and after another pass.
  const now = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o' }));
  assertSameBytes(Buffer.from(await now.Body!.transformToByteArray()), v2, 'GET after the overwrite');
  await api<unknown>(d, 'POST', '/v1/compact');
  await dropCache(d);
  const after = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o' }));
  assertSameBytes(Buffer.from(await after.Body!.transformToByteArray()), v2, 'GET after the second pass');
  assert.equal(await d.stop(), 0);
  const f = d.cli('fsck');
  assert.equal(f.status, 0, `fsck: ${f.stdout}\n${f.stderr}`);
  const report = JSON.parse(f.stdout) as { stripes: { Degraded: number; Failed: number }; badShards: unknown[] };
  assert.deepEqual(report.badShards, []);
  assert.equal(report.stripes.Degraded + report.stripes.Failed, 0);
});
