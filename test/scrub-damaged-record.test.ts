// The scrub with a damaged S3 object record in the index (its segments not a
// list, written through LMDB while the daemon is stopped): a real daemon's
// POST /v1/scrub checks every other stripe, repairs a damaged one of another
// object, and reports the record (count and bucket/key) and logs it, instead
// of failing the whole pass (before: 500, DamagedIndexRecord, nothing checked).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { MiB, api, coldStatus, corruptSegments, patternBytes } from './helpers/cold.js';
import { createColdBucket, startS3 } from './helpers/s3-env.js';

const KEYS = ['a', 'b', 'victim', 'c'];

test('a scrub with a damaged object record checks and repairs the other stripes and reports the record', async (t) => {
  let env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(() => env.cleanup());
  await createColdBucket(env, 'cold');
  const model = new Map<string, Buffer>();
  for (const [i, key] of KEYS.entries()) {
    model.set(key, patternBytes(2 * MiB, 0x5c00 + i));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: key, Body: model.get(key)! }));
  }
  const total = (await coldStatus(env.daemon)).stripes.Healthy;

  assert.equal(await env.daemon.stop(), 0);
  let victimStripes = 0;
  const meta = MetaStore.open(dataDir);
  try {
    const objects = meta.openDB<{ key: string; segments: unknown }, Buffer>(OBJECTS_DB);
    const hit = [...objects.getRange({ start: Buffer.from([1]) })].find((e) => e.value.key === 'victim');
    assert.ok(hit, 'the victim record is in the index');
    victimStripes = (hit.value.segments as { kind: string; stripes?: unknown[] }[]).reduce((n, s) => n + (s.kind === 'cold' ? s.stripes!.length : 0), 0);
    await objects.put(Buffer.from(hit.key), { ...hit.value, segments: 7 });
  } finally {
    await meta.close();
  }
  assert.ok(victimStripes > 0 && victimStripes < total, `victim ${victimStripes} of ${total} stripes`);
  env.sdk.destroy();
  fs.rmSync(env.home, { recursive: true, force: true });
  env = await startS3({ dataDir });
  // A damaged shard record on cold-1 (its CRC fails): the scrub must still find and repair what it can see.
  const corrupted = corruptSegments(env.daemon, 1, 16, 7);
  assert.ok(corrupted.size >= 1);

  const report = await api<{ stripesChecked: number; badStripes: number; damagedRecords: number; damagedRecordNames: string[] }>(env.daemon, 'POST', '/v1/scrub');
  assert.equal(report.damagedRecords, 1, JSON.stringify(report));
  assert.deepEqual(report.damagedRecordNames, ['s3 objects cold/victim: segments is 7, not a list'], JSON.stringify(report));
  assert.equal(report.stripesChecked, total - victimStripes, 'every other stripe checked');
  assert.ok(report.badStripes >= 1, `the corrupted shard found: ${JSON.stringify(report)}`);
  assert.ok(env.daemon.stderr.includes('scrub skipped damaged index records'), 'logged');

  // Repaired: a second scrub finds nothing bad and still names the record; the others read back.
  const again = await api<{ stripesChecked: number; badStripes: number; damagedRecords: number }>(env.daemon, 'POST', '/v1/scrub');
  assert.equal(again.badStripes, 0, JSON.stringify(again));
  assert.equal(again.damagedRecords, 1);
  assert.equal(again.stripesChecked, total - victimStripes);
  for (const [key, bytes] of model) {
    if (key === 'victim') continue;
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(bytes), `${key} byte-exact`);
  }
});
