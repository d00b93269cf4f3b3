// A running daemon with an S3 object record whose stored bytes do not decode
// (msgpack cut short: a torn or garbled LMDB value). Before, the daemon
// refused to start ("cannot listen for S3 on port 0: Unexpected end of buffer
// reading string"): one torn record took the node's S3 service down. Now it
// is damage like any other (objects/cold-holders.ts openIndexDB,
// UndecodableRecord): the daemon starts, counts skip it and the gauge
// couchestor_index_damaged_records counts it, the log names it once with the
// advice to run `couchestor fsck --quarantine-damaged`, GET and HEAD of its
// key answer 500 naming the damage, ListObjects lists the rest and the key,
// the start-up sweep keeps every file, and DELETE removes it freeing nothing.
// Segment compaction cannot tell what such a record referenced: it refuses
// (CompactionRefused naming the record), as for damage that can hide cold
// stripes, and deletes no segment; before, the pass failed with the bare
// decoder message. Real daemon, aws cli; the bytes torn through LMDB with the
// daemon stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { COLD_POOLS, MiB, api, patternBytes, segmentFiles } from './helpers/cold.js';
import { waitForLog } from './helpers/control-loop.js';
import { ecS3ForTest, hotFiles, putRawValue, readRecord, s3WithKeptAndVictim, tearRecord } from './helpers/damaged-record.js';
import { aws, awsFail, awsOk, createColdBucket, scrapeMetrics, type S3Env } from './helpers/s3-env.js';

function gauge(text: string, db: string): number | undefined {
  const name = `couchestor_index_damaged_records{db="${db}"} `;
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? undefined : Number(line.slice(name.length));
}

function listedKeys(env: S3Env): string[] {
  return ((awsOk(env, ['s3api', 'list-objects-v2', '--bucket', 'hot']) as { Contents?: { Key: string }[] }).Contents ?? []).map((c) => c.Key);
}

test('an object record whose bytes do not decode: the daemon starts and serves the others; GET/HEAD 500 naming it, listed, counted, named once, DELETE frees nothing', async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  assert.equal(await env.daemon.stop(), 0);
  await tearRecord<{ key: string }>(dataDir, OBJECTS_DB, (v) => v.key === 'victim');

  env = await s3.restart();
  const file = path.join(env.home, 'got');
  const cp = aws(env, ['s3', 'cp', 's3://hot/kept', file]);
  assert.equal(cp.status, 0, cp.stderr);
  assert.ok(fs.readFileSync(file).equals(kept), 'kept reads back');
  assert.deepEqual(listedKeys(env), ['kept', 'victim'], 'the damaged key is listed under its index key');

  const get = awsFail(env, ['s3api', 'get-object', '--bucket', 'hot', '--key', 'victim', file]);
  assert.equal(get.httpStatus, 500);
  const said = aws(env, ['s3api', 'get-object', '--bucket', 'hot', '--key', 'victim', file]).stderr;
  assert.match(said, /\(InternalError\)/, said);
  assert.match(said, /stored data is damaged: the index record of hot\/victim is damaged \(the stored bytes do not decode/, said);
  assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'hot', '--key', 'victim']).httpStatus, 500);

  // Named at start, before anything scrapes the metrics, and not again by the scrapes.
  await waitForLog(env.daemon, /hot\/victim: the stored bytes do not decode/);
  for (let i = 0; i < 2; i++) assert.equal(gauge(await scrapeMetrics(env), 'objects'), 1, 'the gauge counts it');
  const named = env.daemon.stderr.split('\n').filter((l) => l.includes('hot/victim: the stored bytes do not decode'));
  assert.equal(named.length, 1, `named once over two scrapes:\n${env.daemon.stderr}`);
  assert.match(named[0]!, /fsck --quarantine-damaged/, 'with the way out');
  assert.match(env.daemon.stderr, /object store: damaged index records; unreferenced segment files are kept/);
  assert.equal(hotFiles(dataDir).size, 2, "the start-up sweep kept every file (the victim's may be named by the torn record)");

  const del = aws(env, ['s3api', 'delete-object', '--bucket', 'hot', '--key', 'victim']);
  assert.equal(del.status, 0, del.stderr);
  await waitForLog(env.daemon, /replaced a damaged index record without freeing what it names/);
  assert.equal(hotFiles(dataDir).size, 2, 'nothing the torn record may name is freed');
  assert.deepEqual(listedKeys(env), ['kept']);
  assert.equal(gauge(await scrapeMetrics(env), 'objects'), 0);
  assert.equal(env.daemon.proc.exitCode, null, 'the daemon is still running');
});

test('compaction with a cold object record whose bytes do not decode refuses, names it and deletes no segment; the bytes restored, the next pass compacts', async (t) => {
  const s3 = await ecS3ForTest(t, 'undecodable-compaction-', `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`);
  let { env } = s3;
  const { dataDir } = s3;
  await createColdBucket(env, 'cold');
  const model = new Map<string, Buffer>();
  for (let i = 0; i < 12; i++) {
    model.set(`o${i}`, patternBytes(MiB, 0x0d00 + i));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: model.get(`o${i}`)! }));
  }
  // Every other object deleted: their segments are compaction candidates.
  for (let i = 0; i < 12; i += 2) {
    await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));
    model.delete(`o${i}`);
  }
  assert.equal(await env.daemon.stop(), 0);
  const original = await readRecord<{ key: string }>(dataDir, OBJECTS_DB, (v) => v.key === 'o1');
  await tearRecord<{ key: string }>(dataDir, OBJECTS_DB, (v) => v.key === 'o1');
  env = await s3.restart();
  const segments = () => Array.from({ length: COLD_POOLS }, (_, i) => segmentFiles(env.daemon, i)).flat();
  const before = segments();
  for (let pass = 1; pass <= 2; pass++) {
    const res = await fetch(`http://${env.daemon.info.api.host}:${env.daemon.info.api.port}/v1/compact`, { method: 'POST' });
    const body = (await res.json()) as { error?: string; message?: string };
    assert.equal(res.status, 500, JSON.stringify(body));
    assert.equal(body.error, 'CompactionRefused', JSON.stringify(body));
    assert.match(body.message ?? '', /cold\/o1: the stored bytes do not decode/, 'names the record and what is wrong');
    assert.deepEqual(segments(), before, `pass ${pass}: no segment file deleted`);
  }
  assert.equal((await api<{ passesRefusedDamagedRecord: number }>(env.daemon, 'GET', '/v1/compaction')).passesRefusedDamagedRecord, 2);
  for (const [key, bytes] of model) {
    if (key === 'o1') continue;
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(bytes), `${key} byte-exact`);
  }

  // The stored bytes put back: the pass compacts and the record's object reads back whole.
  assert.equal(await env.daemon.stop(), 0);
  await putRawValue(dataDir, OBJECTS_DB, original.key, original.raw);
  env = await s3.restart();
  const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
  assert.ok(r.segmentsCompacted > 0, JSON.stringify(r));
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o1' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(model.get('o1')!), 'o1 byte-exact after the pass');
});
