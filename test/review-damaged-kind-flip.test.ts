// Review of 1a1b25a/f256b48: a cold object segment whose kind reads as
// another VALID kind ("hot" or "inline", the rest of it a cold segment's) is
// damaged too. recordDamage passed it (any of the three kinds), so compaction
// (which refuses only damaged records) read the record as holding no cold
// stripes and deleted the segments that held them: the object's bytes gone,
// fsck Failed once the record was restored. Now recordDamage checks the
// fields each kind is read by (hot: pool, fileId, chunkCrc32c; inline:
// bytes), so the pass refuses and deletes nothing. Real daemon; the record
// is rewritten through LMDB while it is stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { COLD_POOLS, MiB, fsck, patternBytes, segmentFiles } from './helpers/cold.js';
import { rewriteRecord, startEcS3 } from './helpers/damaged-record.js';
import { createColdBucket, restartS3, type S3Env } from './helpers/s3-env.js';

const OBJECTS = 12;
const VICTIM = 'o1';
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

type Rec = { key: string; segments: { kind: string; stripes?: unknown[] }[] };

function allSegmentFiles(env: S3Env): string[] {
  return Array.from({ length: COLD_POOLS }, (_, i) => segmentFiles(env.daemon, i)).flat();
}

function rewriteVictim(dataDir: string, edit: (v: Rec) => unknown): Promise<Rec> {
  return rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === VICTIM, edit, 'the victim record');
}

test('compaction deletes no segment of a cold object whose segment kind reads "hot" or "inline"', async (t) => {
  const started = await startEcS3('review-damaged-kind-flip-', CONFIG);
  const dataDir = started.dataDir;
  let env = started.env;
  t.after(() => env.cleanup());
  await createColdBucket(env, 'cold');
  for (let i = 0; i < OBJECTS; i++) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: patternBytes(MiB, 0x0d00 + i) }));
  // Every other object deleted: their segments are compaction candidates.
  for (let i = 0; i < OBJECTS; i += 2) await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));

  let original: Rec | undefined;
  for (const kind of ['hot', 'inline']) {
    assert.equal(await env.daemon.stop(), 0);
    const was = await rewriteVictim(dataDir, (v) => {
      const base = original ?? v;
      return { ...base, segments: base.segments.map((s) => (s.kind === 'cold' ? { ...s, kind } : s)) };
    });
    original ??= was;
    env = await restartS3(env);
    const filesBefore = allSegmentFiles(env);
    const res = await fetch(`http://${env.daemon.info.api.host}:${env.daemon.info.api.port}/v1/compact`, { method: 'POST' });
    const body = (await res.json()) as { error?: string; message?: string; segmentsCompacted?: number };
    assert.equal(res.status, 500, `kind ${kind}: ${JSON.stringify(body)}`);
    assert.equal(body.error, 'CompactionRefused', JSON.stringify(body));
    assert.match(body.message ?? '', /cold\/o1: segments\[0\]/, 'names the record');
    assert.deepEqual(allSegmentFiles(env), filesBefore, `kind ${kind}: no segment file deleted`);
  }

  // Restored: the victim's stripes are all whole on disk.
  assert.equal(await env.daemon.stop(), 0);
  await rewriteVictim(dataDir, () => original);
  const { report, stdout } = fsck(env.daemon);
  assert.equal(report.stripes.Failed, 0, stdout);
  assert.equal(report.stripes.Degraded, 0, stdout);
});
