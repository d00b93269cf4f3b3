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
import path from 'node:path';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import { bodyOf, MiB, openColdTierAt, patternBytes, readObject, tempDir, type SegmentDead } from './helpers/cold.js';

/** Bucket 'cold' holding fill()'s objects; returns their models. */
async function filledBucket(store: ObjectStore): Promise<Map<string, Buffer>> {
  await store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  await fill(store, models);
  return models;
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
async function replaceAndRebuild(tier: Awaited<ReturnType<typeof openColdTierAt>>, models: Map<string, Buffer>): Promise<SegmentDead[]> {
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
  const dir = tempDir(t, 'couchestor-cold-dead-accounting-');
  let tier = await openColdTierAt(dir);
  t.after(() => tier.close());
  const models = await filledBucket(tier.store);
  await tier.close();
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  tier = await openColdTierAt(dir);
  const running = await replaceAndRebuild(tier, models);
  await tier.close();
  tier = await openColdTierAt(dir);
  assert.deepEqual(running, await tier.perSegment(), 'running accounting equals a fresh recount, segment by segment');
  for (const [key, bytes] of models) assert.ok((await readObject(tier.store, 'cold', key)).equals(bytes), key);
});

test('cold-2 replaced while the daemon runs: after its rebuild, the running dead bytes per segment equal a fresh recount', async (t) => {
  const dir = tempDir(t, 'couchestor-cold-dead-accounting-');
  let tier = await openColdTierAt(dir);
  t.after(() => tier.close());
  // 1 MiB stripes at 4+2 over six pools: every stripe has one shard on cold-2.
  const models = await filledBucket(tier.store);
  const before = await tier.perSegment();
  // Dead bytes on cold-2 before the loss: its hints then name segments that go with it.
  assert.ok(before.some((s) => s.pool === 'cold-2' && s.deadBytes > 0), `cold-2 had dead bytes before the loss: ${JSON.stringify(before)}`);
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  const running = await replaceAndRebuild(tier, models);
  // A fresh start over the same data: its recount is the reference.
  await tier.close();
  tier = await openColdTierAt(dir);
  assert.deepEqual(running, await tier.perSegment(), 'running accounting equals a fresh recount, segment by segment');
  // And the data is whole: every object reads back byte for byte.
  for (const [key, bytes] of models) assert.ok((await readObject(tier.store, 'cold', key)).equals(bytes), key);
});
