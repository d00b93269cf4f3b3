// One damaged S3 object record in the index (its segments not a list, written
// through LMDB while the daemon is stopped) is skipped by the paths that count
// object stripes, not fatal: a real daemon restarted on it answers /metrics
// (200, every other metric there, couchestor_index_damaged_records{db=
// "objects"} 1) and GET /v1/cold, names the record in its log once (not once
// per scrape), lists and serves the other objects (aws-cli and the SDK), and
// answers a GET of the damaged key with a 500-class S3 error while it keeps
// serving; offline fsck names the record and exits 1; a DELETE of the damaged
// key answers 204 and frees nothing the record names. Before the fix /metrics
// answered 500 and GET /v1/cold 500 (TypeError: not iterable), fsck threw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { api, fsckDataDir } from './helpers/cold.js';
import { killAndRemove, rewriteRecord } from './helpers/damaged-record.js';
import { awsOk, createColdBucket, restartS3, startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const BUCKET = 'dmg';
const KEPT = ['kept-a', 'kept-b'];
const VICTIM = 'victim';

/** /metrics with its status (scrapeMetrics does not give the status). */
function scrape(env: S3Env): Promise<{ status: number; text: string }> {
  const { host, port } = env.daemon.info.metrics;
  return new Promise((resolve, reject) => {
    http.get({ host, port, path: '/metrics', agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    }).on('error', reject);
  });
}

/** The value of one series in an exposition text (undefined: no such series). */
function series(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

async function body(env: S3Env, key: string): Promise<Buffer> {
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

test('a damaged object record is skipped and counted by /metrics and GET /v1/cold, named by the log and fsck; the other objects list and read back', async (t) => {
  let env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(() => killAndRemove(env, dataDir));
  await createColdBucket(env, BUCKET);
  const want = new Map<string, Buffer>();
  for (const key of [...KEPT, VICTIM]) {
    want.set(key, crypto.randomBytes(3 * MiB));
    await env.sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: want.get(key)! }));
  }
  const before = await scrape(env);
  assert.equal(before.status, 200);
  const healthyBefore = series(before.text, 'couchestor_stripes{state="healthy"}');
  assert.ok(healthyBefore !== undefined && healthyBefore > 0, `cold object stripes counted: ${healthyBefore}`);
  assert.equal(series(before.text, 'couchestor_index_damaged_records{db="objects"}'), 0, 'a series at 0 before');

  // The damage, written through LMDB with the daemon stopped.
  assert.equal(await env.daemon.stop(), 0);
  let victimStripes = 0;
  await rewriteRecord<{ key: string; segments: unknown }>(dataDir, OBJECTS_DB, (v) => v.key === VICTIM, (v) => {
    victimStripes = (v.segments as { kind: string; stripes?: unknown[] }[]).reduce((n, s) => n + (s.kind === 'cold' ? s.stripes!.length : 0), 0);
    assert.ok(victimStripes > 0, 'the victim has cold stripes');
    return { ...v, segments: 7 };
  }, 'the victim record');

  // Offline fsck names the record (bucket/key, what is wrong) and says damage found.
  const f = fsckDataDir(dataDir);
  const damaged = (f.report as unknown as { damagedRecords?: { db: string; record: string; problem: string }[] }).damagedRecords;
  assert.deepEqual(damaged, [{ db: 'objects', record: `${BUCKET}/${VICTIM}`, problem: 'segments is 7, not a list' }], f.stdout + f.stderr);
  assert.equal(f.status, 1, 'fsck exits 1 on a damaged record');

  // Restarted on the damaged index.
  env = await restartS3(env);

  for (let i = 0; i < 3; i++) {
    const after = await scrape(env);
    assert.equal(after.status, 200, after.text.slice(0, 500));
    assert.equal(series(after.text, 'couchestor_index_damaged_records{db="objects"}'), 1);
    assert.equal(series(after.text, 'couchestor_index_damaged_records{db="parts"}'), 0);
    assert.equal(series(after.text, 'couchestor_stripes{state="healthy"}'), healthyBefore - victimStripes, "every stripe but the damaged record's is counted");
    assert.ok(series(after.text, 'couchestor_journal_bytes') !== undefined, 'the other metrics are there');
    assert.ok(after.text.includes('process_cpu_user_seconds_total'), 'the default metrics are there');
  }
  const cold = await api<{ stripes: Record<string, number> }>(env.daemon, 'GET', '/v1/cold');
  assert.equal(cold.stripes.Healthy, healthyBefore - victimStripes);
  const named = env.daemon.stderr.split('\n').filter((l) => l.includes(`${BUCKET}/${VICTIM}: segments is 7, not a list`));
  assert.equal(named.length, 1, `named once over 3 scrapes and an API call:\n${env.daemon.stderr}`);

  // aws-cli lists the other keys; the SDK reads them back byte-exact.
  const listed = awsOk(env, ['s3api', 'list-objects-v2', '--bucket', BUCKET]) as { Contents: { Key: string }[] };
  for (const key of KEPT) assert.ok(listed.Contents.some((c) => c.Key === key), `${key} listed: ${JSON.stringify(listed)}`);
  for (const key of KEPT) assert.ok((await body(env, key)).equals(want.get(key)!), `${key} reads back`);

  // The damaged key: a 500-class S3 error, and the daemon keeps serving.
  await assert.rejects(body(env, VICTIM), (err: { $metadata?: { httpStatusCode?: number }; name?: string; message?: string }) => {
    assert.equal(err.$metadata?.httpStatusCode, 500, JSON.stringify(err));
    assert.equal(err.name, 'InternalError');
    assert.match(err.message ?? '', /stored data is damaged: the index record of dmg\/victim is damaged \(segments is 7, not a list\)/, 'says what is wrong, not "try again"');
    return true;
  });
  assert.equal(env.daemon.proc.exitCode, null, 'the daemon is still running');
  assert.ok((await body(env, KEPT[0]!)).equals(want.get(KEPT[0]!)!), 'still serving after the failed GET');
  assert.equal((await scrape(env)).status, 200);

  // The client deletes the damaged key: 204, nothing it names is freed (no crash on its
  // segments), and the gauge goes back to 0.
  await env.sdk.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: VICTIM }));
  const cleared = await scrape(env);
  assert.equal(series(cleared.text, 'couchestor_index_damaged_records{db="objects"}'), 0);
  assert.equal(series(cleared.text, 'couchestor_stripes{state="healthy"}'), healthyBefore - victimStripes);
  assert.match(env.daemon.stderr, /replaced a damaged index record without freeing what it names/);
  assert.equal(env.daemon.proc.exitCode, null);
});
