// A reconstruction-queue pass (the degraded-read path, not a pool rebuild)
// that drains many stripes of one cold object flips them in one
// transaction per batch (QUEUE_FLIP_BATCH_STRIPES), writing the object's
// index record once per batch, each stripe still compare-and-swapped on its
// own: an object overwritten while its stripes landed keeps its new bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QUEUE_FLIP_BATCH_STRIPES } from '../src/dataplane/ec/reconstruction.js';
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

test('a queue pass over many stripes of one object writes its record once per batch, every stripe flipped, byte-exact with two more pools lost', async (t) => {
  const { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const a = patternBytes(OBJECT_BYTES, 21);
  await put('a', a);
  await loseCold2();
  assert.ok(STRIPES_PER_OBJECT <= QUEUE_FLIP_BATCH_STRIPES, 'one batch holds the object');
  const keys = await lostKeys(holders, stripes);
  assert.equal(keys.length, STRIPES_PER_OBJECT);

  const writesBefore = holders.recordWrites;
  // As a degraded GET queues them: each enqueue starts or extends a pass.
  for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
  while (rc.counts().Degraded + rc.counts().Reconstructing > 0) await rc.process();
  assert.equal(rc.counts().Failed, 0, JSON.stringify(rc.unhealthy()));
  assert.equal(await missingCold2('a'), 0, 'every stripe has its cold-2 shard back');
  // The first enqueue's pass takes one stripe, the next pass the other 63: one record write
  // each. One flip per stripe wrote the record 64 times.
  assert.equal(holders.recordWrites - writesBefore, 2, 'one record write per pass batch');
  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'byte-exact with cold-0 and cold-5 lost');
});

test('an object overwritten while a queue batch of its stripes lands: no stale flip, the new bytes intact', async (t) => {
  const { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const old = patternBytes(OBJECT_BYTES, 31);
  await put('a', old);
  await loseCold2();
  const keys = await lostKeys(holders, stripes);
  assert.equal(keys.length, STRIPES_PER_OBJECT);
  const fresh = patternBytes(OBJECT_BYTES - 5, 32);
  // The overwrite lands between the batch's landings and its flips (after the last landing).
  const land = stripes.landRebuild.bind(stripes);
  let landings = 0;
  let overwritten = false;
  stripes.landRebuild = async (ref, prepared) => {
    const next = await land(ref, prepared);
    if (++landings === keys.length - 1 && !overwritten) {
      overwritten = true;
      await put('a', fresh);
    }
    return next;
  };
  for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
  while (rc.counts().Degraded + rc.counts().Reconstructing > 0) await rc.process();
  assert.ok(overwritten, 'the overwrite ran mid-batch');
  assert.equal(rc.counts().Failed, 0, JSON.stringify(rc.unhealthy()));
  // The new version was written after cold-2 was replaced: whole, and none of the old stripes flipped into it.
  assert.equal(await missingCold2('a'), 0);
  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'a')).equals(fresh), 'the new object reads byte-exact with cold-0 and cold-5 lost');
});
