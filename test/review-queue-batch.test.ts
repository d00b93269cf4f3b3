// Review of 1b9112b / 24fdefa (in process: real ObjectStore, stripe store,
// segment files, LMDB index, Reconstructor): a reconstruction-queue pass that
// flips a batch of one object's stripes in one transaction, racing a pool
// rebuild of the same pool, and a batch whose flip transaction fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor, type PassReport } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor, type PoolRebuildReport } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, patternBytes } from './helpers/cold.js';
import { OBJECT_BYTES, STRIPE_BYTES, STRIPES_PER_OBJECT, readAll, setupFlipBatch } from './helpers/cold-flip-batch.js';

/** Holder keys of the stripes whose cold-2 shard is gone (what degraded reads would queue). */
async function lostKeys(holders: ColdObjectHolders, stripes: StripeStore): Promise<string[]> {
  const out: string[] = [];
  for (const [key, ref] of holders.list()) if (!(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')))) out.push(key);
  return out;
}

test('a pool rebuild that starts while a queue batch lands counts every stripe it checked: rebuilt or not rebuilt, none dropped from the report', async (t) => {
  const { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const a = patternBytes(OBJECT_BYTES, 41);
  await put('a', a);
  await loseCold2();
  const keys = await lostKeys(holders, stripes);
  assert.equal(keys.length, STRIPES_PER_OBJECT);

  // The pool rebuild starts at the batch's first landing; the landings go on once the
  // rebuild has listed every stripe (it tags those the batch is on) and waits for the
  // queue's pass (its final retryWaiting).
  const started: { rebuild: Promise<PoolRebuildReport> | null } = { rebuild: null };
  let listed!: () => void;
  const rebuildListed = new Promise<void>((resolve) => (listed = resolve));
  const retry = rc.retryWaiting.bind(rc);
  rc.retryWaiting = () => {
    listed();
    return retry();
  };
  const land = stripes.landRebuild.bind(stripes);
  stripes.landRebuild = async (ref, prepared) => {
    if (started.rebuild === null) {
      started.rebuild = rc.rebuildPool('cold-2');
      await rebuildListed;
    }
    return land(ref, prepared);
  };
  for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
  while (rc.counts().Degraded + rc.counts().Reconstructing > 0) await rc.process();
  assert.ok(started.rebuild !== null, 'the pool rebuild ran during the batch');
  const report = await started.rebuild;
  assert.equal(rc.counts().Failed, 0, JSON.stringify(rc.unhealthy()));
  assert.equal(await missingCold2('a'), 0, 'every stripe has its cold-2 shard back');
  // 'shift' (written after the replacement) is checked and present; every stripe of 'a' was
  // missing and is now whole: the report says so for each, whichever path landed it.
  assert.equal(report.stripesChecked, STRIPES_PER_OBJECT + 1);
  assert.equal(report.notRebuilt, 0);
  assert.equal(report.stripesRebuilt, STRIPES_PER_OBJECT, `report ${JSON.stringify(report)}`);
  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'byte-exact with cold-0 and cold-5 lost');
});

test('a queue batch whose flip transaction fails leaves every stripe queued, Degraded; the next pass rebuilds them all, byte-exact', async (t) => {
  const { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const a = patternBytes(OBJECT_BYTES, 43);
  await put('a', a);
  await loseCold2();
  const keys = await lostKeys(holders, stripes);
  assert.equal(keys.length, STRIPES_PER_OBJECT);
  const replaceMany = holders.replaceMany.bind(holders);
  let failed = 0;
  holders.replaceMany = async (flips) => {
    if (flips.length > 1 && failed === 0) {
      failed = flips.length;
      throw new Error('MDB_MAP_FULL: Environment mapsize limit reached (injected)');
    }
    return replaceMany(flips);
  };
  const writesBefore = holders.recordWrites;
  for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
  // Passes until the queue is empty or a pass changes nothing (a lost entry would stop it).
  for (let passes = 0; passes < 5 && rc.counts().Degraded + rc.counts().Reconstructing > 0; passes++) {
    await rc.process();
    if (passes === 0 || failed > 0) {
      // Right after the failed batch: its stripes are queued again, none stuck Reconstructing.
      const states = rc.unhealthy();
      assert.ok(states.every((s) => (s as unknown as { state: string }).state !== 'Reconstructing'), JSON.stringify(states));
    }
  }
  assert.ok(failed > 1, 'a batch flip failed');
  assert.equal(rc.counts().Degraded + rc.counts().Reconstructing + rc.counts().Failed, 0, JSON.stringify(rc.unhealthy()));
  assert.equal(await missingCold2('a'), 0, 'every stripe has its cold-2 shard back');
  // The failed batch wrote nothing; the retry wrote the record.
  assert.ok(holders.recordWrites - writesBefore >= 1);
  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'byte-exact with cold-0 and cold-5 lost');
});

test('compaction relocates stripes of a queue batch between their landing and the batch flip: those stay unflipped and are rebuilt again, nothing stale flipped, byte-exact before and after the segments go', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-queue-batch-compaction-'));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${STRIPE_BYTES}`);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(policy, 6));
  // 256 KiB segments: the object's first shards share sealed segments with a deleted object.
  stripes.segmentOptions = { segmentSizeBytes: 256 * 1024 };
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  const holders = new ColdObjectHolders(meta, stripes);
  rc.addSource(holders);
  // Any dead byte makes a sealed segment a candidate; the settle wait gives up at once while
  // the batch's write session is open (the segment is then kept, its records copied and flipped).
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0, deadFraction: 0.01, settleTimeoutMs: 100 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  t.after(async () => {
    try {
      await rc.stop();
      await compactor.stop();
      await stripes.close();
      await meta.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  await store.createBucket('cold', 'cold');
  const put = (key: string, bytes: Buffer) => store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  await put('x', patternBytes(STRIPE_BYTES, 50));
  const a = patternBytes(OBJECT_BYTES, 51);
  await put('a', a);
  await store.deleteObject('cold', 'x');
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  await put('shift', patternBytes(1000, 3));
  const keys = await lostKeys(holders, stripes);
  assert.equal(keys.length, STRIPES_PER_OBJECT);
  const refsBefore = new Map(keys.map((k) => [k, holders.current(k)!]));

  const replaceMany = holders.replaceMany.bind(holders);
  let lostFlips = 0;
  holders.replaceMany = async (flips) => {
    const flipped = await replaceMany(flips);
    lostFlips += flipped.filter((f) => !f).length;
    return flipped;
  };
  let landings = 0;
  let pass: PassReport | null = null;
  const land = stripes.landRebuild.bind(stripes);
  stripes.landRebuild = async (ref, prepared) => {
    const next = await land(ref, prepared);
    // Mid-batch (the second pass holds the other 63 stripes): compaction copies and flips.
    if (++landings === 20 && pass === null) pass = await compactor.runOnce({ unthrottled: true });
    return next;
  };
  for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
  for (let passes = 0; passes < 6 && rc.counts().Degraded + rc.counts().Reconstructing > 0; passes++) await rc.process();
  assert.ok(pass !== null, 'compaction ran mid-batch');
  const report = pass as PassReport;
  // Deferred, not compacted: the batch's write session was open (the copies are flipped, the segments kept).
  assert.ok(report.segmentsDeferred > 0 && report.segmentsCompacted === 0, JSON.stringify(report));
  const moved = keys.filter((k) => holders.current(k)!.shards.some((s, i) => i !== 2 && (s.segment !== refsBefore.get(k)!.shards[i]!.segment || s.offsetBytes !== refsBefore.get(k)!.shards[i]!.offsetBytes)));
  assert.ok(moved.length > 0, 'some stripes of the batch were relocated by compaction');
  assert.ok(lostFlips > 0, 'the batch lost the compare-and-swap of the relocated stripes');
  assert.equal(rc.counts().Degraded + rc.counts().Reconstructing + rc.counts().Failed, 0, JSON.stringify(rc.unhealthy()));
  for (const k of keys) {
    const ref = holders.current(k)!;
    assert.ok(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')), `${k}: cold-2 shard back`);
  }
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'byte-exact after the rebuild');
  // Compaction now deletes what it kept (nothing holds a session): every stripe still reads.
  await compactor.runOnce({ unthrottled: true });
  fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
  fs.rmSync(path.join(dir, 'cold-5'), { recursive: true });
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'byte-exact with cold-0 and cold-5 lost, after compaction');
});
