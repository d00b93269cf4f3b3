// A degraded GET of a cold object queues its stripe for reconstruction
// however many other objects were opened since it: the read itself names the
// object (no window of recently opened objects, which a GET's own stripes
// could fall out of while it streams), and the queue, not a scrub or a pool
// rebuild, puts the damaged shard back.
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { decodeShardHeader, decodeShardRecord, recordLengthBytes, SHARD_HEADER_BYTES } from '../src/dataplane/ec/shard-record.js';
import type { TestDaemon } from './helpers/daemon.js';
import { COLD_POOLS, MiB, coldStatus, dropCache, losePool, segmentFiles, type ColdStatus } from './helpers/cold.js';
import { createColdBucket, startS3 } from './helpers/s3-env.js';

/** More distinct cold objects than the window of recent opens the queue used to look stripes up in (MAX_RECENT_OPENS, 4096). */
const OTHER_OBJECTS = 4097;
const CONCURRENCY = 16;
/**
 * 64 KiB stripes (16 KiB shards) instead of the default 1 MiB: a small
 * object takes one whole stripe, so the 4097 objects cost 0.4 GB of shard
 * records instead of 6 GB. Same code path, any stripe size.
 */
const STRIPE_BYTES = 64 * 1024;
const PART_BYTES = 16 * MiB; // 256 stripes per part
const PARTS = 3;

interface FoundRecord {
  pool: number;
  file: string;
  offsetBytes: number;
  lengthBytes: number;
  ownerHex: string;
}

/** Every record of chunk `chunkIndex`, shard `shardIndex`, in every cold pool, read from the segment files. */
function findRecords(d: TestDaemon, chunkIndex: number, shardIndex: number): FoundRecord[] {
  const out: FoundRecord[] = [];
  for (let pool = 0; pool < COLD_POOLS; pool++) {
    for (const file of segmentFiles(d, pool)) {
      const bytes = fs.readFileSync(file);
      for (let at = 0; at + SHARD_HEADER_BYTES <= bytes.length; ) {
        const header = decodeShardHeader(bytes.subarray(at, at + SHARD_HEADER_BYTES));
        const lengthBytes = recordLengthBytes(header);
        if (header.chunkIndex === chunkIndex && header.shardIndex === shardIndex) out.push({ pool, file, offsetBytes: at, lengthBytes, ownerHex: header.ownerId.toString('hex') });
        at += lengthBytes;
      }
    }
  }
  return out;
}

/** Resolves with the first line of the daemon's stderr from now on matching `re` (an event, not a poll). */
function nextStderrLine(d: TestDaemon, re: RegExp): Promise<string> {
  return new Promise((resolve) => {
    let partial = '';
    const onData = (b: Buffer) => {
      const lines = (partial + b.toString()).split('\n');
      partial = lines.pop()!;
      const hit = lines.find((l) => re.test(l));
      if (hit === undefined) return;
      d.proc.stderr!.off('data', onData);
      resolve(hit);
    };
    d.proc.stderr!.on('data', onData);
  });
}

async function inBatches(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < n) await fn(next++);
  }));
}

test('a degraded GET queues its stripe after more than 4096 other objects were opened, and the queue rebuilds it', async (t) => {
  const startedMs = Date.now();
  // The queue's "stripe reconstructed" line is a debug event; the daemon inherits this environment.
  process.env.COUCHESTOR_LOG_LEVEL = 'debug';
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-s3-queue-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${STRIPE_BYTES}`);
  assert.notEqual(policy, DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), policy);
  const env = await startS3({ dataDir });
  delete process.env.COUCHESTOR_LOG_LEVEL;
  try {
    await createColdBucket(env, 'cold');
    // The object read degraded: a completed multipart upload, so the damaged stripe is a part's.
    const parts = Array.from({ length: PARTS }, () => randomBytes(PART_BYTES));
    const up = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'big' }));
    const etags: string[] = [];
    for (const [i, p] of parts.entries()) etags.push((await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'big', UploadId: up.UploadId, PartNumber: i + 1, Body: p }))).ETag!);
    await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'big', UploadId: up.UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    const want = Buffer.concat(parts);
    // Other cold objects, one stripe each (a distinct segment owner each).
    t.diagnostic(`multipart object written: ${Date.now() - startedMs} ms`);
    await inBatches(OTHER_OBJECTS, (i) => env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `small-${i}`, Body: randomBytes(1024) })));

    t.diagnostic(`${OTHER_OBJECTS} objects written: ${Date.now() - startedMs} ms`);
    // The last stripe of the last part: chunk 255 of the part written last (segment ids grow), data shard 0.
    const lastChunk = PART_BYTES / STRIPE_BYTES - 1;
    const candidates = findRecords(env.daemon, lastChunk, 0);
    assert.equal(candidates.length, PARTS, `one shard 0 record of chunk ${lastChunk} per part`);
    const victim = candidates.sort((a, b) => (a.ownerHex < b.ownerHex ? -1 : 1)).at(-1)!;
    // Damage its payload: the record stays in place, its CRC fails.
    const fd = fs.openSync(victim.file, 'r+');
    try {
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, victim.offsetBytes + SHARD_HEADER_BYTES + 100);
      b[0] = b[0]! ^ 0xff;
      fs.writeSync(fd, b, 0, 1, victim.offsetBytes + SHARD_HEADER_BYTES + 100);
    } finally {
      fs.closeSync(fd);
    }
    await dropCache(env.daemon).catch(() => 0); // no cache configured is fine: reads go to the shards
    const before = await coldStatus(env.daemon);

    // Open the object and take its first bytes; the client reads no further yet, so the
    // server (backpressured) has not come to the damaged last stripe.
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'big' }));
    const body = got.Body as Readable;
    const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const chunks: Buffer[] = [];
    const first = await it.next();
    assert.equal(first.done, false);
    chunks.push(first.value);
    // Every other object opened while the GET is in flight (HEAD opens an object like GET does).
    await inBatches(OTHER_OBJECTS, (i) => env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: `small-${i}` })));
    t.diagnostic(`${OTHER_OBJECTS} objects opened: ${Date.now() - startedMs} ms`);
    const mid = await coldStatus(env.daemon);
    assert.equal(mid.degradedReads, before.degradedReads, 'the damaged stripe must not have been read before the other opens (else this test proves nothing)');

    const rebuilt = nextStderrLine(env.daemon, new RegExp(`stripe reconstructed stripe=s3:o/[0-9a-f]+/${victim.ownerHex}/${lastChunk}$`));
    for (let r = await it.next(); !r.done; r = await it.next()) chunks.push(r.value);
    t.diagnostic(`degraded GET done: ${Date.now() - startedMs} ms`);
    const bytes = Buffer.concat(chunks);
    assert.equal(bytes.length, want.length, 'degraded GET: length');
    assert.ok(bytes.equals(want), 'degraded GET: bytes differ');
    // Queued (or already rebuilt) by the time the GET has ended: fails at once where the read could not name its holder.
    const queued = await coldStatus(env.daemon);
    const holderKey = new RegExp(`^s3:o/[0-9a-f]+/${victim.ownerHex}/${lastChunk}$`);
    assert.ok(
      queued.shardsRebuilt > before.shardsRebuilt || (queued.unhealthy as { holder?: string }[]).some((u) => u.holder !== undefined && holderKey.test(u.holder)),
      `the degraded stripe was neither queued nor rebuilt: ${JSON.stringify(queued)}`,
    );
    // A bound on a broken queue, not a synchronisation: the wait ends on the daemon's event.
    await Promise.race([rebuilt, new Promise((_, reject) => setTimeout(() => reject(new Error('no "stripe reconstructed" event for the stripe in 120 s')), 120_000).unref())]);

    t.diagnostic(`rebuilt: ${Date.now() - startedMs} ms`);
    const after = (await coldStatus(env.daemon)) as ColdStatus & { lastScrub: unknown };
    assert.equal(after.degradedReads - before.degradedReads, 1, 'one stripe was read degraded');
    assert.equal(after.shardsRebuilt - before.shardsRebuilt, 1, 'the queue rebuilt the one bad shard');
    assert.equal(after.lastScrub, null, 'no scrub ran: the queue did the rebuild');
    assert.deepEqual(after.unhealthy, []);
    // The shard record is back: a whole record of that owner, chunk and shard on the pool that lost it.
    const back = findRecords(env.daemon, lastChunk, 0).filter((r) => r.ownerHex === victim.ownerHex && r.pool === victim.pool && !(r.file === victim.file && r.offsetBytes === victim.offsetBytes));
    assert.equal(back.length, 1, 'one rebuilt record beside the damaged one');
    const record = fs.readFileSync(back[0]!.file).subarray(back[0]!.offsetBytes, back[0]!.offsetBytes + back[0]!.lengthBytes);
    assert.doesNotThrow(() => decodeShardRecord(record), 'the rebuilt record passes its CRC');
    // And it serves: with two other pools lost, the damaged record alone would leave 3 of 6 shards.
    // Every other stripe reads degraded too and is queued with no pool to land on: it waits for
    // the retry timer (before cold-queue-no-pool-backoff, each read's pass retried all of them and
    // this GET took about 100 s; 1.8 s after).
    const others = Array.from({ length: COLD_POOLS }, (_, i) => i).filter((i) => i !== victim.pool).slice(0, 2);
    for (const p of others) losePool(env.daemon, p);
    await dropCache(env.daemon).catch(() => 0);
    const getStartedMs = Date.now();
    const again = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'big' }));
    const bytesAgain = Buffer.from(await again.Body!.transformToByteArray());
    t.diagnostic(`whole GET with two pools lost: ${Date.now() - getStartedMs} ms`);
    assert.ok(bytesAgain.equals(want), `GET with cold-${others.join(' and cold-')} lost: bytes differ`);
  } finally {
    await env.cleanup();
  }
});
