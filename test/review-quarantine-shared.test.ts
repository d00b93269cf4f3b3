// Review of fsck --quarantine-damaged (f7b8734): a quarantined damaged record
// that names what a GOOD record still uses (a hot file, cold stripes) frees
// none of it. Quarantine only removes the record from the index; the next
// start's sweep and recount decide from the good records what is live, so the
// good object's file survives the sweep and its stripes survive (are copied
// by) the compaction pass that reclaims the victim's own segments. Real
// daemon, real couchestor CLI, aws cli reads; records rewritten through LMDB
// with the daemon stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { MiB, api, patternBytes } from './helpers/cold.js';
import { awsDownload, coldBucketModel, ecS3ForTest, fsckCli, hotFiles, readRecord, rewriteRecord, s3WithKeptAndVictim } from './helpers/damaged-record.js';
import { aws, awsFail, type S3Env } from './helpers/s3-env.js';

type Seg = { kind: string; fileId?: unknown; lengthBytes?: unknown; stripes?: unknown[] };
type Rec = { key: string; segments: Seg[] };

function awsGet(env: S3Env, bucket: string, key: string): Buffer {
  return awsDownload(env, (file) => ['s3', 'cp', `s3://${bucket}/${key}`, file], `aws s3 cp ${key}`);
}

test("a quarantined damaged hot record naming a good object's file: the next start's sweep keeps that file, deletes only the victim's own", async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  assert.equal(await env.daemon.stop(), 0);
  const keptSeg = (await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'kept')).value.segments[0]!;
  assert.equal(keptSeg.kind, 'hot');
  // The victim's record now names kept's file, its length garbled (damaged: fsck names it).
  await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'victim', (v) => ({ ...v, segments: [{ ...keptSeg, lengthBytes: 'lost' }] }));
  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /quarantined damaged S3 index record \(objects\) hot\/victim/);
  const before = hotFiles(dataDir);
  assert.equal(before.size, 2);
  env = await s3.restart();
  const after = hotFiles(dataDir);
  assert.equal(after.size, 1, 'only the victim file (named by no record now) swept');
  assert.ok([...after.values()][0]!.equals([...before.values()].find((b) => b.length === kept.length && b.equals(kept)) ?? Buffer.alloc(0)), "kept's file is the one left");
  assert.ok(awsGet(env, 'hot', 'kept').equals(kept), 'kept reads back after the sweep');
  assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'hot', '--key', 'victim']).httpStatus, 404);
});

const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

test("a quarantined damaged cold record naming a good object's stripes beside its own: compaction reclaims only the victim's own, the good object reads back byte-exact", async (t) => {
  const s3 = await ecS3ForTest(t, 'review-quarantine-shared-', CONFIG);
  let { env } = s3;
  const { dataDir } = s3;
  const { model, put } = await coldBucketModel(s3);
  await put('kept', patternBytes(3 * MiB, 0x7100));
  await put('victim', patternBytes(6 * MiB, 0x7200));
  await put('after', patternBytes(MiB, 0x7300));
  model.delete('victim');
  assert.equal(await env.daemon.stop(), 0);
  const keptSeg = (await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'kept')).value.segments[0]!;
  assert.equal(keptSeg.kind, 'cold');
  // The victim's record: kept's cold segment (intact) and its own with the kind garbled (hides its stripes).
  await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'victim', (v) => ({ ...v, segments: [keptSeg, ...v.segments.map((s) => ({ ...s, kind: 'c0ld' }))] }));
  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /quarantined damaged S3 index record \(objects\) cold\/victim: segments\[1\]\.kind is "c0ld"/);

  env = await s3.restart();
  const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
  assert.ok(r.segmentsCompacted > 0, `the victim's own segments compacted: ${JSON.stringify(r)}`);
  for (const [key, bytes] of model) assert.ok(awsGet(env, 'cold', key).equals(bytes), `${key} byte-exact after the pass`);
  assert.equal(await env.daemon.stop(), 0);
  const fsck = fsckCli(dataDir);
  assert.equal(fsck.status, 0, fsck.stderr);
  const report = JSON.parse(fsck.stdout) as { stripes: { Failed: number; Degraded: number; Healthy: number } };
  assert.equal(report.stripes.Failed + report.stripes.Degraded, 0, fsck.stdout);
  env = await s3.restart();
  for (const [key, bytes] of model) assert.ok(awsGet(env, 'cold', key).equals(bytes), `${key} byte-exact after a restart`);
});
