// Review of fsck --quarantine-damaged (f7b8734): a record whose stored bytes
// no longer decode (msgpack cut short: a torn or garbled LMDB value, the
// plainest disk damage) is a damaged S3 index record too. Before, every
// range read of s3-objects threw at it ("Unexpected end of MessagePack
// data"): fsck died without a report and --quarantine-damaged died before
// moving anything, so the operator's way out failed exactly there. Now both
// read keys and decode each record on its own: fsck reports it (exit 1), the
// quarantine moves it with its raw bytes, and the daemon then starts and
// serves the other objects. Real daemon, real couchestor CLI, aws cli; the
// record's bytes rewritten through a binary LMDB handle with the daemon
// stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { QUARANTINE_DB, type QuarantinedRecord } from '../src/dataplane/objects/quarantine.js';
import { awsDownload, fsckCli, hotFiles, putRawValue, readRecord, s3WithKeptAndVictim } from './helpers/damaged-record.js';
import { aws, awsFail, type S3Env } from './helpers/s3-env.js';

function awsGet(env: S3Env, key: string): Buffer {
  return awsDownload(env, (file) => ['s3', 'cp', `s3://hot/${key}`, file], `aws s3 cp ${key}`);
}

test('a record whose bytes no longer decode: fsck reports it (exit 1), --quarantine-damaged moves it raw, the daemon then serves the others', async (t) => {
  const s3 = await s3WithKeptAndVictim(t);
  let { env } = s3;
  const { dataDir, kept } = s3;
  assert.equal(await env.daemon.stop(), 0);
  const victim = await readRecord<{ key: string }>(dataDir, OBJECTS_DB, (v) => v.key === 'victim');
  const torn = victim.raw.subarray(0, victim.raw.length >> 1);
  await putRawValue(dataDir, OBJECTS_DB, victim.key, torn);

  const before = fsckCli(dataDir);
  assert.equal(before.status, 1, before.stderr);
  const report = JSON.parse(before.stdout) as { damagedRecordCount: number; damagedRecords: { record: string; problem: string }[] };
  assert.equal(report.damagedRecordCount, 1, before.stdout);
  assert.equal(report.damagedRecords[0]!.record, 'hot/victim');
  assert.match(report.damagedRecords[0]!.problem, /the stored bytes do not decode/);

  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /quarantined damaged S3 index record \(objects\) hot\/victim: the stored bytes do not decode/);
  const meta = MetaStore.open(dataDir);
  try {
    const held = [...meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB).getRange()].map((e) => e.value);
    assert.equal(held.length, 1);
    assert.ok(Buffer.from(held[0]!.raw).equals(torn), 'the torn bytes kept as they were');
    assert.equal(meta.openDB<unknown, Buffer>(OBJECTS_DB).getBinary(victim.key), undefined, 'gone from the live index');
  } finally {
    await meta.close();
  }
  const listed = fsckCli(dataDir, '--list-quarantine');
  assert.equal(listed.status, 0, listed.stderr);
  assert.ok(Buffer.from((JSON.parse(listed.stdout) as { raw: string }[])[0]!.raw, 'base64').equals(torn));

  env = await s3.restart();
  assert.ok(awsGet(env, 'kept').equals(kept), 'kept reads back');
  assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'hot', '--key', 'victim']).httpStatus, 404);
  assert.equal(hotFiles(dataDir).size, 1, "the victim's file swept (named by no record)");
});
