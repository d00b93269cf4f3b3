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
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { COLD_POOLS, MiB, fsck, patternBytes, segmentFiles } from './helpers/cold.js';
import { createColdBucket, startS3, type S3Env } from './helpers/s3-env.js';

const OBJECTS = 12;
const VICTIM = 'o1';
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

type Rec = { key: string; segments: { kind: string; stripes?: unknown[] }[] };

function allSegmentFiles(env: S3Env): string[] {
  return Array.from({ length: COLD_POOLS }, (_, i) => segmentFiles(env.daemon, i)).flat();
}

async function rewriteVictim(dataDir: string, edit: (v: Rec) => unknown): Promise<Rec> {
  const meta = MetaStore.open(dataDir);
  try {
    const objects = meta.openDB<Rec, Buffer>(OBJECTS_DB);
    const hit = [...objects.getRange({ start: Buffer.from([1]) })].find((e) => e.value.key === VICTIM);
    assert.ok(hit, 'the victim record is in the index');
    await objects.put(Buffer.from(hit.key), edit(structuredClone(hit.value)) as Rec);
    return hit.value;
  } finally {
    await meta.close();
  }
}

test('compaction deletes no segment of a cold object whose segment kind reads "hot" or "inline"', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-damaged-kind-flip-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), CONFIG);
  let env = await startS3({ dataDir });
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
    env.sdk.destroy();
    fs.rmSync(env.home, { recursive: true, force: true });
    env = await startS3({ dataDir });
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
