// A pool rebuild's `notRebuilt` counts each stripe still missing the pool's
// shard once: a stripe the rebuild skipped because the reconstruction queue
// was full, then queued by a degraded read before the rebuild's final count,
// was counted twice. The queue bound is made small (ReconstructionOptions
// maxQueuedStripes) instead of filling 100,000 entries. In process: real
// ObjectStore, stripe store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, patternBytes, readObject } from './helpers/cold.js';

const KiB = 1024;
const STRIPE_BYTES = 64 * KiB; // 16 KiB shards at 4+2: many stripes cheaply
const OBJECTS = 5;
const STRIPES_PER_OBJECT = 20; // 100 stripes: the rebuild takes the first 65 (queue bound 1 plus its 64 in flight), skips the rest: the last object whole

test('a stripe skipped with the queue full and queued later by a degraded read counts once in notRebuilt', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-not-rebuilt-once-'));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${STRIPE_BYTES}`);
  assert.notEqual(policy, DEFAULT_EC_POLICY_YAML);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(policy, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1, maxQueuedStripes: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  t.after(async () => {
    try {
      await rc.stop();
      await stripes.close();
      await meta.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  await store.createBucket('cold', 'cold');
  const models: Buffer[] = [];
  for (let i = 0; i < OBJECTS; i++) {
    const bytes = patternBytes(STRIPES_PER_OBJECT * STRIPE_BYTES, i + 1);
    await store.putObject('cold', `o${i}`, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
    models.push(bytes);
  }
  // cold-2 replaced (rebuilt onto), cold-3 lost for good: a stripe queued by a read then
  // needs two pools holding none of its shards and finds only cold-2, so it stays queued.
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  fs.rmSync(path.join(dir, 'cold-3'), { recursive: true });

  // Just before the rebuild's final pass and count (its windows are flushed, the queue is
  // empty again): a GET of the last object, whose stripes the rebuild skipped (queue full),
  // reads degraded and queues its first stripe.
  let readDuringRebuild = false;
  const retryWaiting = rc.retryWaiting.bind(rc);
  rc.retryWaiting = async () => {
    if (!readDuringRebuild) {
      readDuringRebuild = true;
      assert.ok((await readObject(store, 'cold', `o${OBJECTS - 1}`)).equals(models[OBJECTS - 1]!), 'degraded GET reads the object whole');
      assert.equal(rc.counts().Degraded, 1, `the degraded GET queued one stripe: ${JSON.stringify(rc.unhealthy())}`);
    }
    return retryWaiting();
  };
  const report = await rc.rebuildPool('cold-2');
  assert.ok(readDuringRebuild, 'the degraded GET ran inside the rebuild');

  // What notRebuilt must say: the stripes whose cold-2 shard is still gone.
  let missing = 0;
  let total = 0;
  for (let i = 0; i < OBJECTS; i++) {
    for (const seg of store.headObject('cold', `o${i}`).segments as ColdSegment[]) {
      for (const ref of seg.stripes) {
        total++;
        if (!(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')))) missing++;
      }
    }
  }
  const shown = JSON.stringify(report);
  assert.equal(report.stripesChecked, total, shown);
  assert.ok(missing > 0 && report.stripesRebuilt > 0, `the queue bound left some stripes to a later rebuild: ${shown}, ${missing} missing`);
  assert.equal(report.notRebuilt, missing, `each stripe still missing its cold-2 shard counted once: ${shown}`);
  assert.equal(report.stripesRebuilt + report.notRebuilt, total, shown);
});
