// A pool rebuild of cold S3 object stripes (the batched path, flipped by the
// object index's CAS) racing segment compaction through the real daemon and
// the aws SDK, with 1 MiB segments (3 shard records each): compaction moves
// the survivors the rebuild reads and flips the same object records the
// rebuild flips. Nothing may be lost, left pointing at a removed record or
// read back wrong, also after a restart with two more pools lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { createColdBucket, startS3, type S3Env } from './helpers/s3-env.js';
import { MiB, allHealthy, api, coldStatus, fsck, loseAndReplacePool, losePool, patternBytes, rebuildPool, scrub } from './helpers/cold.js';

const OBJECTS = 24;
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

async function get(env: S3Env, key: string): Promise<Buffer> {
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

test('pool rebuild of cold object stripes with compaction passes running under it: all Healthy, fsck clean, byte-exact after a restart with two more pools lost', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-cold-rebuild-compaction-objects-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), CONFIG);
  let env = await startS3({ dataDir });
  try {
    await createColdBucket(env, 'cold');
    const model = new Map<string, Buffer>();
    for (let i = 0; i < OBJECTS; i++) {
      const bytes = patternBytes(MiB, 0x0b00 + i);
      await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: bytes }));
      model.set(`o${i}`, bytes);
    }
    // Every other object deleted: their records are dead, so compaction moves the live ones beside them.
    for (let i = 0; i < OBJECTS; i += 2) {
      await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));
      model.delete(`o${i}`);
    }
    const live = model.size;

    loseAndReplacePool(env.daemon, 2);
    let done = false;
    let passes = 0;
    let compacted = 0;
    const compacting = (async () => {
      do {
        const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
        compacted += r.segmentsCompacted;
        passes++;
      } while (!done);
    })();
    const report = await rebuildPool(env.daemon, 2).finally(() => (done = true));
    await compacting;
    t.diagnostic(`rebuild ${JSON.stringify(report)}; ${passes} compaction passes under it compacted ${compacted} segments`);
    assert.ok(compacted > 0, 'compaction moved records while the rebuild ran');
    assert.equal((report as { objectStripesChecked?: number }).objectStripesChecked, live);
    // Whatever the rebuild left (stripes moved under it) the queue pass or this scrub finishes.
    await scrub(env.daemon);
    await api<unknown>(env.daemon, 'POST', '/v1/compact');
    assert.equal((await scrub(env.daemon)).badStripes, 0, 'every shard verifies after the rebuild and compactions');
    assert.deepEqual((await coldStatus(env.daemon)).stripes, allHealthy(live));
    for (const [key, bytes] of model) assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact`);

    await env.daemon.kill();
    const { report: checked, stdout } = fsck(env.daemon);
    assert.deepEqual(checked.badShards, [], stdout);
    assert.equal(checked.stripes.Degraded + checked.stripes.Failed, 0, stdout);
    env.sdk.destroy();
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    env = await startS3({ dataDir });
    for (const [key, bytes] of model) assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact with cold-0 and cold-5 lost`);
  } finally {
    await env.cleanup();
  }
});
