// Review of 4eb877a (compaction in groups): a member's copy fails half way
// (its first batch copied and flipped, the second refused: a full disk)
// while the members before it are copied and flipped, none deleted yet.
// Pins that the failed member is kept, every other member (before and
// after it) is deleted, nothing reads degraded, and a later pass compacts
// the failed one. Real components: VolumeManager's cold tier (1 MiB
// segments), ObjectStore, SegmentCompactor, LMDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, coldStripeRefs } from '../src/dataplane/objects/cold-segments.js';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { MiB, readObject } from './helpers/cold.js';
import { compactionTempDir, putModel as put } from './helpers/compaction-tier.js';
import { openCompactionTier } from './helpers/volume.js';

const COLD_POOLS = 6;

async function assertAllThere(m: VolumeManager, store: ObjectStore, models: Map<string, Buffer>, when: string): Promise<void> {
  for (const [key, want] of models) assert.ok((await readObject(store, 'cold', key)).equals(want), `${when}: ${key} reads back byte-exact`);
  const bad = [];
  for (const { value } of m.meta.openDB<{ segments: { kind: string }[] }, Buffer>(OBJECTS_DB).getRange(ALL_OBJECT_KEYS)) {
    for (const ref of coldStripeRefs(value.segments) as Iterable<StripeRef>) {
      const health = await m.cold!.stripes.check(ref);
      if (health.bad.length > 0) bad.push({ chunk: ref.chunkIndex, bad: health.bad });
    }
  }
  assert.deepEqual(bad, [], `${when}: every shard of every indexed stripe is present and verifies`);
  const { degradedReads, failedReads } = m.cold!.stripes.counters;
  assert.deepEqual({ degradedReads, failedReads }, { degradedReads: 0, failedReads: 0 }, `${when}: no read decoded around a shard`);
}

test('a member whose copy fails half way (first batch flipped) is kept; the members flipped before it and copied after it are deleted; nothing reads degraded', { timeout: 120_000 }, async (t) => {
  const dir = compactionTempDir(t, 'couchestor-review-group-copy-fails-', () => tier.close());
  let tier = await openCompactionTier(dir, true);
  await tier.compactor.stop();
  const { m, store } = tier;
  await store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  // Each object is one record on each cold pool; 3 fill a 1 MiB segment.
  // Segment B of each pool: y1, d1, d2 (2/3 dead: compacted first). Segment A: x1, x2, d3 (1/3 dead: two live records).
  for (const key of ['y1', 'd1', 'd2', 'x1', 'x2', 'd3', 'tail']) await put(store, models, key, MiB);
  for (const key of ['d1', 'd2', 'd3']) {
    assert.equal(await store.deleteObject('cold', key), true);
    models.delete(key);
  }
  // One record a batch: A's copy is two batches, each flipped in its own transaction.
  const compactor = new SegmentCompactor(m.cold!.stripes, m.meta, () => m.openVolumes(), { intervalMs: 0, deadFraction: 0.01, recountSliceEntries: 1, batchBytes: 300_000 });
  t.after(() => compactor.stop());
  await compactor.deadSettled();
  await compactor.recount();
  const sealed = (await compactor.segments()).filter((s) => !s.head && s.sizeBytes > 0);
  assert.equal(sealed.length, 2 * COLD_POOLS, 'setup: segments A and B sealed on every cold pool');

  // The second batch of the first member with two batches (an A, after every B) is refused, as by a full disk.
  const batches = new Map<string, number>();
  let failed: string | null = null;
  const removed: string[] = [];
  for (let i = 0; i < COLD_POOLS; i++) {
    const pool = `cold-${i}`;
    const seg = (await m.cold!.stripes.segmentStore(pool))!;
    const compactSegment = seg.compactSegment.bind(seg);
    seg.compactSegment = async (segment, places, ...rest) => {
      const key = `${pool}/${segment}`;
      batches.set(key, (batches.get(key) ?? 0) + 1);
      if (batches.get(key) === 2 && failed === null) {
        failed = key;
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      }
      return compactSegment(segment, places, ...rest);
    };
    const removeSegment = seg.removeSegment.bind(seg);
    seg.removeSegment = async (segment) => {
      removed.push(`${pool}/${segment}`);
      return removeSegment(segment);
    };
  }
  const report = await compactor.runOnce({ unthrottled: true });
  t.diagnostic(`pass ${JSON.stringify(report)}; failed ${failed}; batches ${JSON.stringify([...batches])}`);
  assert.ok(failed !== null, 'a second batch was refused');
  const failedKey = failed as string;
  const order = [...batches.keys()];
  assert.ok(order.indexOf(failedKey) > 0 && order.indexOf(failedKey) < order.length - 1, 'members were copied before and after the failed one');
  assert.deepEqual({ compacted: report.segmentsCompacted, deferred: report.segmentsDeferred }, { compacted: 2 * COLD_POOLS - 1, deferred: 1 }, 'every member but the failed one compacted');
  assert.ok(!removed.includes(failedKey), 'the failed member is not deleted');
  assert.equal(removed.length, 2 * COLD_POOLS - 1, 'every other member is deleted');
  await assertAllThere(m, store, models, 'after the pass');

  await compactor.stop();
  await tier.close();
  tier = await openCompactionTier(dir, false);
  await assertAllThere(tier.m, tier.store, models, 'after a restart');
  const second = await tier.compactor.runOnce({ unthrottled: true });
  t.diagnostic(`next pass ${JSON.stringify(second)}`);
  const left = (await tier.compactor.segments()).filter((s) => `${s.pool}/${s.segment}` === failedKey);
  assert.deepEqual(left, [], 'the next pass compacts the failed member');
  await assertAllThere(tier.m, tier.store, models, 'after the next pass');
});
