// Review of fsck --quarantine-damaged (f7b8734): the quarantine database was
// keyed "<db>/<index key in hex>/<ms>", twice the index key's length: a
// damaged record of an S3 key past ~980 bytes (S3 allows 1024) made a key
// over LMDB's 1978-byte limit, the put threw ("Key size is larger than the
// maximum key size") and the command died, moving neither it nor the damaged
// records after it; that record had no way out. Now the quarantine key is
// bounded (the index key's SHA-256, not the key itself; the whole key stays
// in the record). Real daemon, real couchestor CLI, aws cli.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { awsDownload, fsckCli, hotFiles, readRecord, rewriteRecord, s3ForTest } from './helpers/damaged-record.js';
import { aws, awsFail, awsOk, type S3Env } from './helpers/s3-env.js';

type Rec = { key: string; segments: { kind: string; lengthBytes?: unknown }[] };

function awsGet(env: S3Env, key: string): Buffer {
  return awsDownload(env, (file) => ['s3api', 'get-object', '--bucket', 'hot', '--key', key, file], 'get-object');
}

test('a damaged record of a 1024-byte S3 key is quarantined (its quarantine key stays under LMDB\'s limit), with the damaged records after it', async (t) => {
  const s3 = await s3ForTest(t);
  let { env } = s3;
  const { dataDir } = s3;
  awsOk(env, ['s3api', 'create-bucket', '--bucket', 'hot']);
  const body = path.join(env.home, 'body');
  const kept = crypto.randomBytes(256 * 1024);
  fs.writeFileSync(body, kept);
  awsOk(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', 'kept', '--body', body]);
  const longKey = 'L'.repeat(1024); // S3's longest key (MAX_KEY_BYTES)
  const other = 'z-after';
  for (const key of [longKey, other]) awsOk(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', key, '--body', body]);
  assert.equal(await env.daemon.stop(), 0);
  for (const key of [longKey, other]) {
    await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === key, (v) => ({ ...v, segments: [{ ...v.segments[0]!, lengthBytes: 'lost' }] }));
  }
  const raw = (await readRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === longKey)).raw;

  const q = fsckCli(dataDir, '--quarantine-damaged');
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /2 record\(s\) quarantined/, q.stderr);
  const listed = fsckCli(dataDir, '--list-quarantine');
  assert.equal(listed.status, 0, listed.stderr);
  const entries = JSON.parse(listed.stdout) as { record: string; raw: string }[];
  assert.equal(entries.length, 2);
  const long = entries.find((e) => e.record === `hot/${longKey}`);
  assert.ok(long, 'the long-key record is in the quarantine');
  assert.ok(Buffer.from(long.raw, 'base64').equals(raw), 'raw bytes kept');

  env = await s3.restart();
  assert.equal(hotFiles(dataDir).size, 1, "the two quarantined records' files swept");
  assert.ok(awsGet(env, 'kept').equals(kept));
  assert.equal(awsFail(env, ['s3api', 'head-object', '--bucket', 'hot', '--key', longKey]).httpStatus, 404);
  // The key is usable again (the restart made a new aws HOME).
  const again = path.join(env.home, 'body');
  fs.writeFileSync(again, kept);
  awsOk(env, ['s3api', 'put-object', '--bucket', 'hot', '--key', longKey, '--body', again]);
  assert.ok(awsGet(env, longKey).equals(kept));
});
