// Review of 4eb877a (compaction in groups): a group's first look is taken
// once, before its first segment is copied, so by the time a later member B
// is copied some of the records it found live may have been freed. Pins that
// such a record is not copied out of B (a copy nothing references and no one
// ever tells dead: the head segment's dead-byte hint never counts it, so the
// disk it holds is not reclaimed until a restart's recount). Real components:
// VolumeManager's cold tier (1 MiB segments), ObjectStore, SegmentCompactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MiB, readObject } from './helpers/cold.js';
import { compactionTempDir, putModel as put } from './helpers/compaction-tier.js';
import { openCompactionTier } from './helpers/volume.js';

const COLD_POOLS = 6;

test('a record freed after the group first look, before its segment is copied, is not copied (no unreferenced copy the hints never count)', { timeout: 120_000 }, async (t) => {
  const dir = compactionTempDir(t, 'couchestor-review-group-stale-', () => tier.close());
  const tier = await openCompactionTier(dir, true);
  const { m, store, compactor } = tier;
  await store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  // Each 1 MiB object is one record on each cold pool; 3 fill a 1 MiB segment.
  // Segment A of each pool: x1, d1, d2 (d1, d2 deleted: 2/3 dead, compacted first).
  // Segment B of each pool: y1, y2, d3 (d3 deleted: 1/3 dead); y2 is deleted during A's copy.
  for (const key of ['x1', 'd1', 'd2', 'y1', 'y2', 'd3', 'tail']) await put(store, models, key, MiB);
  for (const key of ['d1', 'd2', 'd3']) {
    assert.equal(await store.deleteObject('cold', key), true);
    models.delete(key);
  }
  await compactor.deadSettled();
  await compactor.recount();
  const sealed = (await compactor.segments()).filter((s) => !s.head && s.sizeBytes > 0);
  assert.equal(sealed.length, 2 * COLD_POOLS, 'setup: segments A and B sealed on every cold pool');
  const recordBytes = sealed[0]!.sizeBytes / 3;

  // y2 is deleted inside the first copy of the pass (a segment A): after the group's first look, before any B is copied.
  let deletedDuringA = false;
  for (let i = 0; i < COLD_POOLS; i++) {
    const seg = (await m.cold!.stripes.segmentStore(`cold-${i}`))!;
    const compactSegment = seg.compactSegment.bind(seg);
    seg.compactSegment = async (segment, places, ...rest) => {
      if (!deletedDuringA) {
        deletedDuringA = true;
        assert.equal(await store.deleteObject('cold', 'y2'), true);
        models.delete('y2');
        await compactor.deadSettled();
      }
      return compactSegment(segment, places, ...rest);
    };
  }
  const report = await compactor.runOnce({ unthrottled: true });
  t.diagnostic(`pass ${JSON.stringify(report)}; record ${recordBytes} bytes`);
  assert.ok(deletedDuringA, 'y2 was deleted during the pass');
  assert.deepEqual({ compacted: report.segmentsCompacted, deferred: report.segmentsDeferred }, { compacted: 2 * COLD_POOLS, deferred: 0 }, 'every A and B compacted');
  // x1 out of each A, y1 out of each B: y2 was dead before its B was copied.
  assert.equal(report.copiedBytes, 2 * COLD_POOLS * recordBytes, 'only the records live when their segment is copied are copied');
  for (const [key, want] of models) assert.ok((await readObject(store, 'cold', key)).equals(want), `${key} reads back byte-exact`);

  // The hints after the pass equal what a recount from the index finds: no copy is unreferenced and uncounted.
  await compactor.deadSettled();
  const hinted = new Map((await compactor.segments()).map((s) => [`${s.pool}/${s.segment}`, s.deadBytes]));
  await compactor.recount();
  const counted = new Map((await compactor.segments()).map((s) => [`${s.pool}/${s.segment}`, s.deadBytes]));
  assert.deepEqual(hinted, counted, 'dead-byte hints after the pass equal the recount (no unreferenced copy left uncounted)');
});
