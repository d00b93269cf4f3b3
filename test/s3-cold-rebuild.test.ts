// Cold S3 objects' stripes (single-PUT objects, completed multipart objects,
// parts of an upload in progress) are rebuilt by a pool rebuild, checked by
// scrub and repaired by the reconstruction queue after a degraded GET; an
// object overwritten while its stripes are rebuilt keeps its new bytes.
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createColdBucket, startS3, type S3Env } from './helpers/s3-env.js';
import { MiB, coldStatus, dropCache, loseAndReplacePool, losePool, rebuildPool, scrub, type PoolRebuildResult } from './helpers/cold.js';

async function get(env: S3Env, key: string): Promise<Buffer> {
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

function assertSame(got: Buffer, want: Buffer, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  assert.ok(got.equals(want), `${what}: bytes differ`);
}

type Report = PoolRebuildResult & { objectStripesChecked: number };

test('pool rebuild and scrub cover cold objects and multipart parts; byte-exact with two more pools lost', async () => {
  const env = await startS3();
  try {
    await createColdBucket(env, 'cold');
    // 3 stripes (1 MiB each, the last 1 byte).
    const single = randomBytes(2 * MiB + 1);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'single', Body: single }));
    // Completed multipart: 5 + 2 stripes.
    const parts = [randomBytes(5 * MiB), randomBytes(MiB + 7)];
    const mp = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
    const etags: string[] = [];
    for (const [i, p] of parts.entries()) etags.push((await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId: mp.UploadId, PartNumber: i + 1, Body: p }))).ETag!);
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId: mp.UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    // An upload in progress: its part (5 + 1 stripes) lives only in the parts index until completed.
    const pending = [randomBytes(5 * MiB), randomBytes(3)];
    const up = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'pending' }));
    const pendingEtags: string[] = [];
    for (const [i, p] of pending.entries()) pendingEtags.push((await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'pending', UploadId: up.UploadId, PartNumber: i + 1, Body: p }))).ETag!);
    const objectStripes = 3 + 7 + 6;

    loseAndReplacePool(env.daemon, 2);
    const report = (await rebuildPool(env.daemon, 2)) as Report;
    // Each 4+2 stripe has one shard on each of the six pools.
    assert.equal(report.objectStripesChecked, objectStripes, `rebuild ${JSON.stringify(report)}`);
    assert.ok(report.stripesChecked >= objectStripes);
    assert.equal(report.stripesRebuilt, report.stripesChecked, `rebuild ${JSON.stringify(report)}`);
    assert.equal(report.notRebuilt, 0);
    assert.equal(report.stripes.Degraded + report.stripes.Failed + report.stripes.Reconstructing, 0);

    const s = await scrub(env.daemon);
    assert.ok(s.stripesChecked >= objectStripes, `scrub ${JSON.stringify(s)}`);
    assert.equal(s.badStripes, 0, `scrub ${JSON.stringify(s)}`);
    assert.ok(s.stripes.Healthy >= objectStripes);
    assert.equal(s.stripes.Degraded + s.stripes.Failed + s.stripes.Reconstructing, 0);

    // Two other pools: with cold-2's shards back, 4 of 6 remain for every stripe.
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    await dropCache(env.daemon).catch(() => 0); // no cache configured is fine: reads go to the shards
    assertSame(await get(env, 'single'), single, 'single');
    assertSame(await get(env, 'mp'), Buffer.concat(parts), 'mp');
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'pending', UploadId: up.UploadId, MultipartUpload: { Parts: pendingEtags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    assertSame(await get(env, 'pending'), Buffer.concat(pending), 'pending');
  } finally {
    await env.cleanup();
  }
});

test('a degraded GET queues its stripes and the queue rebuilds them', async () => {
  const env = await startS3();
  try {
    await createColdBucket(env, 'cold');
    const data = randomBytes(3 * MiB + 5); // 4 stripes
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: data }));
    loseAndReplacePool(env.daemon, 3);
    const before = await coldStatus(env.daemon);
    await dropCache(env.daemon).catch(() => 0);
    assertSame(await get(env, 'o'), data, 'degraded GET');
    // The queue pass runs as soon as a stripe is queued; nothing reports its end, so the status is polled (bounded).
    const deadline = Date.now() + 60_000;
    for (;;) {
      const st = await coldStatus(env.daemon);
      const rebuilt = st.shardsRebuilt - before.shardsRebuilt;
      if (rebuilt >= 4 && st.unhealthy.length === 0) break;
      assert.ok(Date.now() < deadline, `queue did not rebuild the object's 4 stripes in 60 s: ${rebuilt} shards rebuilt, unhealthy ${JSON.stringify(st.unhealthy)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok((await coldStatus(env.daemon)).degradedReads >= 4);
    // No pool rebuild, no scrub: only the queue can have put cold-3's shards back.
    losePool(env.daemon, 1);
    losePool(env.daemon, 4);
    await dropCache(env.daemon).catch(() => 0);
    assertSame(await get(env, 'o'), data, 'GET with cold-1 and cold-4 lost');
  } finally {
    await env.cleanup();
  }
});

test('an object overwritten while its stripes are rebuilt keeps the new bytes', async () => {
  const env = await startS3();
  try {
    await createColdBucket(env, 'cold');
    const old = randomBytes(24 * MiB);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: old }));
    loseAndReplacePool(env.daemon, 2);
    const fresh = randomBytes(24 * MiB + 3);
    // The overwrite races the rebuild's per-stripe flips (their CAS skips stripes of the replaced version).
    const [report] = await Promise.all([rebuildPool(env.daemon, 2) as Promise<Report>, env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: fresh }))]);
    // Whichever version it listed, nothing is left missing a cold-2 shard.
    assert.equal(report.notRebuilt, 0, `rebuild ${JSON.stringify(report)}`);
    assertSame(await get(env, 'o'), fresh, 'after the race');
    const s = await scrub(env.daemon);
    assert.equal(s.badStripes, 0, `scrub ${JSON.stringify(s)}`);
    assert.equal(s.stripes.Degraded + s.stripes.Failed + s.stripes.Reconstructing, 0);
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    await dropCache(env.daemon).catch(() => 0);
    assertSame(await get(env, 'o'), fresh, 'with cold-0 and cold-5 lost');
  } finally {
    await env.cleanup();
  }
});
