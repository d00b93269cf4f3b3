// Segment compaction with a damaged S3 object record in the index (one cold
// segment's kind garbled to 'c0ld' through LMDB while the daemon is stopped;
// read as it is, the record's stripes look unreferenced): a real daemon's
// POST /v1/compact refuses, naming the record, and deletes no segment file;
// every other object reads back; once the record is restored, offline fsck
// finds every stripe Healthy and the next pass compacts. Before the fix the
// pass reclaimed the segments and fsck found the victim's stripes Failed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompleteMultipartUploadCommand, CreateBucketCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB, PARTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { COLD_POOLS, MiB, api, fsck, patternBytes, segmentFiles } from './helpers/cold.js';
import { rewriteRecord, startEcS3 } from './helpers/damaged-record.js';
import { createColdBucket, restartS3, type S3Env } from './helpers/s3-env.js';

const OBJECTS = 24;
const VICTIM = 'o1';
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

async function get(env: S3Env, key: string): Promise<Buffer> {
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

function allSegmentFiles(env: S3Env): string[] {
  return Array.from({ length: COLD_POOLS }, (_, i) => segmentFiles(env.daemon, i)).flat();
}

type Rec = { key: string; segments: { kind: string; stripes?: unknown[] }[] };

/** Rewrites the victim's record with the daemon stopped: `edit` gets the stored value, returns the one to store. */
function rewriteVictim(dataDir: string, edit: (v: Rec) => unknown): Promise<Rec> {
  return rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === VICTIM, edit, 'the victim record');
}

test("compaction with an object record whose segment kind is damaged deletes no segment, names the record, and every stripe is Healthy once it is restored", async (t) => {
  const started = await startEcS3('compaction-damaged-record-', CONFIG);
  const dataDir = started.dataDir;
  let env = started.env;
  t.after(() => env.cleanup());
  await createColdBucket(env, 'cold');
  const model = new Map<string, Buffer>();
  for (let i = 0; i < OBJECTS; i++) {
    const bytes = patternBytes(MiB, 0x0c00 + i);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: bytes }));
    model.set(`o${i}`, bytes);
  }
  // Every other object deleted: their records are dead, so their segments are compaction candidates.
  for (let i = 0; i < OBJECTS; i += 2) {
    await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));
    model.delete(`o${i}`);
  }
  assert.ok(model.has(VICTIM));

  assert.equal(await env.daemon.stop(), 0);
  const original = await rewriteVictim(dataDir, (v) => {
    const cold = v.segments.filter((s) => s.kind === 'cold');
    assert.ok(cold.length > 0 && cold.every((s) => (s.stripes?.length ?? 0) > 0), `the victim has cold stripes: ${JSON.stringify(v.segments).slice(0, 200)}`);
    for (const s of cold) s.kind = 'c0ld';
    return v;
  });
  const victimStripes = original.segments.reduce((n, s) => n + (s.kind === 'cold' ? s.stripes!.length : 0), 0);
  env = await restartS3(env);
  const filesBefore = allSegmentFiles(env);
  assert.ok(filesBefore.length > 0);

  // Twice: the second pass refuses as well while the record is damaged (no recount result lets it through).
  for (let pass = 1; pass <= 2; pass++) {
    const res = await fetch(`http://${env.daemon.info.api.host}:${env.daemon.info.api.port}/v1/compact`, { method: 'POST' });
    const body = (await res.json()) as { error?: string; message?: string };
    assert.equal(res.status, 500, JSON.stringify(body));
    assert.equal(body.error, 'CompactionRefused', JSON.stringify(body));
    assert.match(body.message ?? '', /cold\/o1: segments\[\d+\]\.kind is "c0ld"/, 'names the record and what is wrong');
    assert.deepEqual(allSegmentFiles(env), filesBefore, `pass ${pass}: no segment file deleted`);
  }
  const stats = await api<{ segmentsCompactedTotal: number; passesRefusedDamagedRecord: number }>(env.daemon, 'GET', '/v1/compaction');
  assert.equal(stats.segmentsCompactedTotal, 0);
  assert.equal(stats.passesRefusedDamagedRecord, 2);
  const logged = env.daemon.stderr.split('\n').filter((l) => l.includes('segment compaction refused'));
  assert.equal(logged.length, 1, `one error line for two refusals on the same record:\n${env.daemon.stderr}`);
  assert.match(logged[0]!, /ERROR .* db=objects record=cold\/o1 problem=segments\[\d+\]\.kind is "c0ld"/, 'names the record');
  for (const [key, bytes] of model) if (key !== VICTIM) assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact`);

  // Restored: every stripe (the victim's included) is whole on disk.
  assert.equal(await env.daemon.stop(), 0);
  await rewriteVictim(dataDir, () => original);
  const { report, stdout } = fsck(env.daemon);
  assert.equal(report.stripes.Failed, 0, stdout);
  assert.equal(report.stripes.Degraded, 0, stdout);
  assert.deepEqual(report.badShards, [], stdout);
  assert.ok(report.stripes.Healthy >= victimStripes + (model.size - 1), stdout);

  // And compaction goes on: the next pass reclaims the dead segments, every object (the victim too) reads back.
  env = await restartS3(env);
  const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
  assert.ok(r.segmentsCompacted > 0, JSON.stringify(r));
  for (const [key, bytes] of model) assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact after the pass`);
});

test('compaction with a multipart part record whose segment kind is damaged deletes no segment; restored, the upload completes and reads back', async (t) => {
  const started = await startEcS3('compaction-damaged-part-', CONFIG);
  const dataDir = started.dataDir;
  let env = started.env;
  t.after(() => env.cleanup());
  await createColdBucket(env, 'cold');
  const partBytes = patternBytes(MiB, 0x0d00);
  const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
  const { ETag } = await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId, PartNumber: 1, Body: partBytes }));
  // Dead space around the part's stripes: objects written, then deleted.
  for (let i = 0; i < 12; i++) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `d${i}`, Body: patternBytes(MiB, 0x0e00 + i) }));
  for (let i = 0; i < 12; i++) await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `d${i}` }));

  assert.equal(await env.daemon.stop(), 0);
  type Part = { segment: { kind: string; stripes?: unknown[] } };
  const rewritePart = async (edit: (v: Part) => Part): Promise<Part> => {
    const meta = MetaStore.open(dataDir);
    try {
      const parts = meta.openDB<Part, Buffer>(PARTS_DB);
      const all = [...parts.getRange({ start: Buffer.from([1]) })];
      assert.equal(all.length, 1, 'one part record');
      await parts.put(Buffer.from(all[0]!.key), edit(structuredClone(all[0]!.value)));
      return all[0]!.value;
    } finally {
      await meta.close();
    }
  };
  const original = await rewritePart((v) => {
    assert.equal(v.segment.kind, 'cold', 'the part is on the cold tier');
    return { ...v, segment: { ...v.segment, kind: 'c0ld' } };
  });
  env = await restartS3(env);
  const filesBefore = allSegmentFiles(env);
  const res = await fetch(`http://${env.daemon.info.api.host}:${env.daemon.info.api.port}/v1/compact`, { method: 'POST' });
  const body = (await res.json()) as { error?: string; message?: string };
  assert.equal(res.status, 500, JSON.stringify(body));
  assert.equal(body.error, 'CompactionRefused');
  assert.match(body.message ?? '', new RegExp(`upload "${UploadId}" part 1: segment\\.kind is "c0ld"`), body.message);
  assert.deepEqual(allSegmentFiles(env), filesBefore, 'no segment file deleted');

  assert.equal(await env.daemon.stop(), 0);
  await rewritePart(() => original);
  const { report, stdout } = fsck(env.daemon);
  assert.equal(report.stripes.Failed + report.stripes.Degraded, 0, stdout);
  env = await restartS3(env);
  await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] } }));
  assert.ok((await get(env, 'mp')).equals(partBytes), 'the completed upload reads back byte-exact');
});

test('a hot-bucket record whose damage names no cold stripe (a hot segment fileId) does not stop compaction: the pass compacts and every cold object reads back', async (t) => {
  const started = await startEcS3('compaction-damaged-hot-', CONFIG);
  const dataDir = started.dataDir;
  let env = started.env;
  t.after(() => env.cleanup());
  await createColdBucket(env, 'cold');
  await env.sdk.send(new CreateBucketCommand({ Bucket: 'hotb' }));
  await env.sdk.send(new PutObjectCommand({ Bucket: 'hotb', Key: 'h', Body: patternBytes(64 * 1024, 0x0f00) }));
  const model = new Map<string, Buffer>();
  for (let i = 0; i < 12; i++) {
    const bytes = patternBytes(MiB, 0x1000 + i);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: bytes }));
    if (i % 2 === 0) await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));
    else model.set(`o${i}`, bytes);
  }

  assert.equal(await env.daemon.stop(), 0);
  type HotRec = { key: string; segments: { kind: string; fileId?: unknown }[] };
  await rewriteRecord<HotRec>(dataDir, OBJECTS_DB, (v) => v.key === 'h', (v) => {
    assert.ok(v.segments[0]?.kind === 'hot', 'the hot object has a hot segment');
    v.segments[0]!.fileId = '#3';
    return v;
  }, 'the hot object record');
  env = await restartS3(env);
  const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
  assert.ok(r.segmentsCompacted > 0, `the pass compacts: ${JSON.stringify(r)}`);
  for (const [key, bytes] of model) assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact after the pass`);
  assert.equal(await env.daemon.stop(), 0);
  const { report, stdout } = fsck(env.daemon);
  assert.equal(report.stripes.Failed + report.stripes.Degraded, 0, stdout);
});
