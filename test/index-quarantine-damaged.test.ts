// `couchestor fsck --quarantine-damaged` end to end: a cold object's record
// damaged through LMDB (a segment kind garbled to 'c0ld', what can hide cold
// stripes) makes fsck exit 1 and compaction refuse every pass; the command
// (real CLI process, daemon stopped) names the record and moves it into the
// s3-quarantine database raw bytes and all; then fsck exits 0, the gauge is
// 0, a restarted daemon's compaction pass reclaims the record's segments
// (pool bytes go down) and the other objects read back byte-exact through
// the aws cli. Also: refused with the daemon up; on a data dir with no
// damage it says so and changes nothing; a damaged hot record's file is
// swept at the next start once quarantined (the sweep is back on); a damaged
// part whose upload record is gone (no S3 call reaches it) is quarantined too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB, PARTS_DB, UPLOADS_DB } from '../src/dataplane/objects/cold-segments.js';
import { QUARANTINE_DB, type QuarantinedRecord } from '../src/dataplane/objects/quarantine.js';
import { COLD_POOLS, MiB, api, patternBytes, segmentBytes } from './helpers/cold.js';
import { awsDownload, coldBucketModel, ecS3ForTest, fsckCli, hotFiles, readRecord, rewriteRecord, s3WithKeptAndVictim } from './helpers/damaged-record.js';
import { aws, awsFail, awsOk, scrapeMetrics, type S3Env } from './helpers/s3-env.js';

const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;
const VICTIM = 'victim';
const VICTIM_BYTES = 6 * MiB;

type Rec = { key: string; segments: { kind: string; stripes?: unknown[] }[] };

type Report = { damagedRecordCount: number; quarantinedRecordCount: number; quarantinedRecords: { record: string; rawBytes: number }[]; stripes: { Failed: number; Degraded: number } };

/** Plain `couchestor fsck` on the stopped data dir: exit status and report. */
function fsckDataDir(dataDir: string): { status: number | null; report: Report; stdout: string; stderr: string } {
  const r = fsckCli(dataDir);
  return { ...r, report: JSON.parse(r.stdout) as Report };
}

function poolBytes(env: S3Env): number {
  let n = 0;
  for (let i = 0; i < COLD_POOLS; i++) n += segmentBytes(env.daemon, i);
  return n;
}

const awsOkJson = (env: S3Env, args: string[]): { UploadId: string } => awsOk(env, args) as { UploadId: string };

function gauge(text: string, db: string): number | undefined {
  const name = `couchestor_index_damaged_records{db="${db}"} `;
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? undefined : Number(line.slice(name.length));
}

/** The object through `aws s3 cp` to a file in the env's HOME. */
function awsGet(env: S3Env, bucket: string, key: string): Buffer {
  return awsDownload(env, (file) => ['s3', 'cp', `s3://${bucket}/${key}`, file], `aws s3 cp ${key}`);
}

test('fsck --quarantine-damaged moves a damaged cold record out of the index: fsck exits 0, compaction passes and reclaims its segments, the others read back, the raw bytes are kept', async (t) => {
  const s3 = await ecS3ForTest(t, 'quarantine-damaged-', CONFIG);
  let { env } = s3;
  const { dataDir } = s3;
  const { model, put } = await coldBucketModel(s3);
  for (let i = 0; i < 3; i++) await put(`k${i}`, patternBytes(MiB, 0x5100 + i));
  await put(VICTIM, patternBytes(VICTIM_BYTES, 0x5200));
  for (let i = 3; i < 6; i++) await put(`k${i}`, patternBytes(MiB, 0x5100 + i));
  model.delete(VICTIM);

  assert.equal(await env.daemon.stop(), 0);
  await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === VICTIM, (v) => {
    for (const s of v.segments) if (s.kind === 'cold') s.kind = 'c0ld';
    return v;
  }, 'the victim record');
  const damaged = await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === VICTIM, 'the victim record');

  // Damaged: fsck exits 1 naming it, and compaction refuses.
  const before = fsckDataDir(dataDir);
  assert.equal(before.status, 1, before.stderr);
  assert.equal(before.report.damagedRecordCount, 1, before.stdout);
  env = await s3.restart();
  const refused = await fetch(`http://${env.daemon.info.api.host}:${env.daemon.info.api.port}/v1/compact`, { method: 'POST' });
  assert.equal(refused.status, 500);
  assert.equal(((await refused.json()) as { error?: string }).error, 'CompactionRefused');
  assert.equal(gauge(await scrapeMetrics(env), 'objects'), 1);
  assert.equal(await env.daemon.stop(), 0);

  // The command: names the record, moves it, then fsck finds nothing wrong (exit 0).
  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /fsck: quarantined damaged S3 index record \(objects\) cold\/victim: segments\[0\]\.kind is "c0ld"/, q.stderr);
  const report = JSON.parse(q.stdout) as Report;
  assert.equal(report.damagedRecordCount, 0, q.stdout);
  assert.equal(report.quarantinedRecordCount, 1, q.stdout);
  assert.equal(report.quarantinedRecords[0]!.record, 'cold/victim');
  assert.equal(report.quarantinedRecords[0]!.rawBytes, damaged.raw.length);
  const after = fsckDataDir(dataDir);
  assert.equal(after.status, 0, after.stderr);
  assert.equal(after.report.damagedRecordCount, 0);

  // The quarantine holds the raw bytes exactly (the database and the --list-quarantine output).
  const meta = MetaStore.open(dataDir);
  try {
    const held = [...meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB).getRange()].map((e) => e.value);
    assert.equal(held.length, 1);
    assert.ok(Buffer.from(held[0]!.raw).equals(damaged.raw), 'raw bytes kept');
    assert.ok(Buffer.from(held[0]!.key).equals(damaged.key));
    assert.equal(held[0]!.db, OBJECTS_DB);
    assert.match(held[0]!.problem, /kind is "c0ld"/);
    assert.equal(meta.openDB<unknown, Buffer>(OBJECTS_DB).get(damaged.key), undefined, 'gone from the live index');
  } finally {
    await meta.close();
  }
  const listed = fsckCli(dataDir, '--list-quarantine');
  assert.equal(listed.status, 0, listed.stderr);
  const entries = JSON.parse(listed.stdout) as { record: string; raw: string; key: string }[];
  assert.equal(entries.length, 1);
  assert.ok(Buffer.from(entries[0]!.raw, 'base64').equals(damaged.raw));
  assert.equal(entries[0]!.key, damaged.key.toString('hex'));

  // Restarted: the gauge is 0, the pass compacts and pool bytes go down (the victim's stripes were counted dead).
  env = await s3.restart();
  assert.equal(gauge(await scrapeMetrics(env), 'objects'), 0);
  const bytesBefore = poolBytes(env);
  const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
  assert.ok(r.segmentsCompacted > 0, JSON.stringify(r));
  const bytesAfter = poolBytes(env);
  assert.ok(bytesBefore - bytesAfter >= VICTIM_BYTES / 2, `pool bytes ${bytesBefore} -> ${bytesAfter}: the victim's segments reclaimed`);
  t.diagnostic(`cold pool bytes ${bytesBefore} -> ${bytesAfter}`);
  for (const [key, bytes] of model) assert.ok(awsGet(env, 'cold', key).equals(bytes), `${key} byte-exact after the pass`);
  assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'cold', '--key', VICTIM]).httpStatus, 404, 'the victim is gone');
  const stats = await api<{ passesRefusedDamagedRecord: number }>(env.daemon, 'GET', '/v1/compaction');
  assert.equal(stats.passesRefusedDamagedRecord, 0);
  // fsck after the pass: every stripe of the others whole.
  assert.equal(await env.daemon.stop(), 0);
  const last = fsckDataDir(dataDir);
  assert.equal(last.status, 0, last.stderr);
  assert.equal(last.report.stripes.Failed + last.report.stripes.Degraded, 0, last.stdout);
});

test('fsck --quarantine-damaged refuses with the daemon up; with no damage it says so and changes nothing', async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  const up = fsckCli(dataDir, '--quarantine-damaged');
  assert.notEqual(up.status, 0);
  assert.match(up.stderr, /stop the daemon first: it moves records out of the S3 index the daemon serves from/, up.stderr);
  assert.equal(up.stdout, '');
  assert.ok(awsGet(env, 'hot', 'kept').equals(kept), 'the daemon serves on');

  assert.equal(await env.daemon.stop(), 0);
  const filesBefore = hotFiles(dataDir);
  const raw = await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'kept');
  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /no damaged S3 index record: nothing quarantined, nothing changed/);
  assert.doesNotMatch(q.stderr, /quarantined damaged/);
  assert.equal((JSON.parse(q.stdout) as { quarantinedRecordCount: number }).quarantinedRecordCount, 0);
  assert.deepEqual(hotFiles(dataDir), filesBefore);
  assert.ok((await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'kept')).raw.equals(raw.raw), 'the record unchanged');
  env = await s3.restart();
  assert.ok(awsGet(env, 'hot', 'kept').equals(kept));
  assert.equal(awsGet(env, 'hot', 'victim').length, 256 * 1024);
});

test("a quarantined damaged hot record's file is swept at the next start (the sweep is back on); the kept object reads back", async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  assert.equal(await env.daemon.stop(), 0);
  const filesBefore = hotFiles(dataDir);
  assert.equal(filesBefore.size, 2);
  type HotRec = { key: string; segments: { kind: string; fileId?: unknown; lengthBytes?: unknown }[] };
  await rewriteRecord<HotRec>(dataDir, OBJECTS_DB, (v) => v.key === 'victim', (v) => {
    v.segments[0]!.lengthBytes = 'lost';
    return v;
  });
  // Damaged and live: a start keeps every file (the sweep is off).
  env = await s3.restart();
  assert.equal(await env.daemon.stop(), 0);
  assert.equal(hotFiles(dataDir).size, 2, 'both files kept while the damaged record is live');

  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /quarantined damaged S3 index record \(objects\) hot\/victim: segments\[0\]\.lengthBytes is "lost"/);
  env = await s3.restart();
  const filesAfter = hotFiles(dataDir);
  assert.equal(filesAfter.size, 1, 'the victim file swept');
  assert.ok(awsGet(env, 'hot', 'kept').equals(kept));
  assert.match(env.daemon.stderr, /removed unreferenced segment files/);
});

test('a damaged part whose upload record is gone (unreachable through S3) is quarantined; fsck exits 0 and its file is swept at the next start', async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  const { UploadId } = awsOkJson(env, ['s3api', 'create-multipart-upload', '--bucket', 'hot', '--key', 'mp']);
  const partFile = path.join(env.home, 'p1');
  fs.writeFileSync(partFile, Buffer.alloc(256 * 1024, 7));
  assert.equal(aws(env, ['s3api', 'upload-part', '--bucket', 'hot', '--key', 'mp', '--upload-id', UploadId, '--part-number', '1', '--body', partFile]).status, 0);
  assert.equal(await env.daemon.stop(), 0);
  assert.equal(hotFiles(dataDir).size, 3);
  await rewriteRecord<{ segment: unknown }>(dataDir, PARTS_DB, () => true, (v) => ({ ...v, segment: null }), 'the part record');
  const meta = MetaStore.open(dataDir);
  try {
    const uploads = meta.openDB<unknown, Buffer>(UPLOADS_DB);
    for (const key of [...uploads.getKeys({ start: Buffer.from([1]) })]) await uploads.remove(key);
  } finally {
    await meta.close();
  }
  const before = fsckDataDir(dataDir);
  assert.equal(before.status, 1, before.stderr);
  assert.match(before.stderr, new RegExp(`damaged S3 index record \\(parts\\) upload "${UploadId}" part 1: segment is null`));

  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, new RegExp(`quarantined damaged S3 index record \\(parts\\) upload "${UploadId}" part 1: segment is null`));
  assert.equal(fsckDataDir(dataDir).status, 0);
  env = await s3.restart();
  assert.equal(hotFiles(dataDir).size, 2, "the part's file swept");
  assert.ok(awsGet(env, 'hot', 'kept').equals(kept));
});
