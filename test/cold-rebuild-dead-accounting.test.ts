// Dead-byte accounting across a lost and replaced cold pool: after
// `couchestor rebuild POOL`, the running per-segment dead bytes (what the
// cold status and compaction's choice of segments see) equal what a fresh
// start's recount from the index computes, with no restart. Before, the
// replaced pool's new segments were charged with the old segments' hints and
// with every stale place freed or flipped away (places the new store holds
// another record at, or nothing). Both with the pool replaced while the
// daemon runs and while it is down (the start's recount then sees an empty
// store that the index still names). In process: real ObjectStore, stripe
// store, segment files, LMDB index, Reconstructor and SegmentCompactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import { Pool } from '../src/dataplane/pools/pool.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, MiB, patternBytes, readObject } from './helpers/cold.js';

type SegmentDead = { pool: string; segment: number; sizeBytes: number; deadBytes: number };

/** The daemon's cold tier over `dir` (pools cold-0..5 under it), as a start builds it, recount included. */
async function openColdTier(dir: string) {
  const pools = Array.from({ length: 6 }, (_, i) => {
    const p = path.join(dir, `cold-${i}`);
    fs.mkdirSync(p, { recursive: true });
    return new Pool({ name: `cold-${i}`, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
  });
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  await compactor.recount(); // a start's recount (the first pass does it)
  const close = async () => {
    await rc.stop();
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  const perSegment = async (): Promise<SegmentDead[]> => (await compactor.segments()).map(({ pool, segment, sizeBytes, deadBytes }) => ({ pool, segment, sizeBytes, deadBytes }));
  return { meta, stripes, rc, compactor, store, close, perSegment };
}

/** Puts the objects the cases share, with dead bytes on every pool (o1 overwritten, o2 deleted). */
async function fill(store: ObjectStore, models: Map<string, Buffer>): Promise<void> {
  for (let i = 0; i < 8; i++) await putModel(store, models, `o${i}`, 2 * MiB + 1000 * i, i);
  await putModel(store, models, 'o1', 3 * MiB, 101);
  await store.deleteObject('cold', 'o2');
  models.delete('o2');
}

async function putModel(store: ObjectStore, models: Map<string, Buffer>, key: string, lengthBytes: number, seed: number): Promise<void> {
  const bytes = patternBytes(lengthBytes, seed);
  await store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  models.set(key, bytes);
}

/** After cold-2 was replaced: writes, frees of stale references, the rebuild, more frees; returns the running per-segment accounting. */
async function replaceAndRebuild(tier: Awaited<ReturnType<typeof openColdTier>>, models: Map<string, Buffer>): Promise<SegmentDead[]> {
  const { store } = tier;
  // Written before the rebuild: the new store's first records, so rebuilt records land
  // elsewhere than the stale references name (the places overlap other records).
  await putModel(store, models, 'shift', 1000, 7);
  // Stale references freed before the rebuild: an overwrite and a delete.
  await putModel(store, models, 'o3', MiB + 17, 103);
  await store.deleteObject('cold', 'o4');
  models.delete('o4');
  const report = await tier.rc.rebuildPool('cold-2');
  assert.equal(report.notRebuilt, 0, JSON.stringify(report));
  assert.ok(report.stripesRebuilt > 0, JSON.stringify(report));
  // After the rebuild: frees of rebuilt and of new stripes.
  await putModel(store, models, 'o5', MiB + 3, 105);
  await store.deleteObject('cold', 'o6');
  models.delete('o6');
  await tier.compactor.deadSettled();
  const running = await tier.perSegment();
  assert.ok(running.some((s) => s.pool === 'cold-2' && s.deadBytes > 0), `the test frees records on the new cold-2 too: ${JSON.stringify(running)}`);
  return running;
}

test('cold-2 replaced while the daemon is down: after its rebuild, the running dead bytes per segment equal a fresh recount', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-dead-accounting-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let tier = await openColdTier(dir);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  await fill(tier.store, models);
  await tier.close();
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  tier = await openColdTier(dir);
  const running = await replaceAndRebuild(tier, models);
  await tier.close();
  tier = await openColdTier(dir);
  assert.deepEqual(running, await tier.perSegment(), 'running accounting equals a fresh recount, segment by segment');
  for (const [key, bytes] of models) assert.ok((await readObject(tier.store, 'cold', key)).equals(bytes), key);
});

test('cold-2 replaced while the daemon runs: after its rebuild, the running dead bytes per segment equal a fresh recount', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-dead-accounting-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let tier = await openColdTier(dir);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  // 1 MiB stripes at 4+2 over six pools: every stripe has one shard on cold-2.
  await fill(tier.store, models);
  const before = await tier.perSegment();
  // Dead bytes on cold-2 before the loss: its hints then name segments that go with it.
  assert.ok(before.some((s) => s.pool === 'cold-2' && s.deadBytes > 0), `cold-2 had dead bytes before the loss: ${JSON.stringify(before)}`);
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  const running = await replaceAndRebuild(tier, models);
  // A fresh start over the same data: its recount is the reference.
  await tier.close();
  tier = await openColdTier(dir);
  assert.deepEqual(running, await tier.perSegment(), 'running accounting equals a fresh recount, segment by segment');
  // And the data is whole: every object reads back byte for byte.
  for (const [key, bytes] of models) assert.ok((await readObject(tier.store, 'cold', key)).equals(bytes), key);
});
