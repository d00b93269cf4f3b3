// Review of 1b9112b / 24fdefa (in process: real ObjectStore, stripe store,
// segment files, LMDB index, Reconstructor): a reconstruction-queue pass that
// flips a batch of one object's stripes in one transaction, racing a pool
// rebuild of the same pool, and a batch whose flip transaction fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PoolRebuildReport } from '../src/dataplane/ec/reconstruction.js';
import type { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import type { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { patternBytes } from './helpers/cold.js';
import { OBJECT_BYTES, STRIPES_PER_OBJECT, readAll, setupFlipBatch } from './helpers/cold-flip-batch.js';

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
