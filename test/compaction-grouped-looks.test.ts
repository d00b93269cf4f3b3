// Compaction looks at the index once per group of segments (one first look,
// one final look from one snapshot), not once per segment. Pins: how many
// times a pass reads the index (and the group bounds, segmentsPerScan and
// groupCopyBytes), and the interleaving a group opens: a reference to
// segment B moving to another index key (a multipart completion: part
// record -> object record) after the group's first look, while segment A's
// records are copied, must keep B. Real components: VolumeManager's cold
// tier (1 MiB segments), ObjectStore, SegmentCompactor, LMDB.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { DEFAULT_COMPACTION_OPTIONS, SegmentCompactor, type CompactionOptions } from '../src/dataplane/ec/compaction.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, coldStripeRefs } from '../src/dataplane/objects/cold-segments.js';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, MiB, readObject } from './helpers/cold.js';
import { compactionTempDir, putModel as put } from './helpers/compaction-tier.js';
import { openCompactionTier } from './helpers/volume.js';

const COLD_POOLS = 6;

type Tier = Awaited<ReturnType<typeof openCompactionTier>>;

/** Sealed segments (with bytes) per pool, from the compactor's listing. */
async function sealedSegments(tier: Tier): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const s of await tier.compactor.segments()) {
    if (s.head || s.sizeBytes === 0) continue;
    out.set(s.pool, [...(out.get(s.pool) ?? []), s.segment]);
  }
  return out;
}

/** Byte-exact reads of every model, and every shard (data and parity) of every stripe the index names present and verifying. */
async function assertAllThere(m: VolumeManager, store: ObjectStore, models: Map<string, Buffer>, when: string): Promise<void> {
  for (const [key, want] of models) assert.ok((await readObject(store, 'cold', key)).equals(want), `${when}: object ${key} reads back byte-exact`);
  const refs: StripeRef[] = [];
  for (const { value } of m.meta.openDB<{ segments: { kind: string }[] }, Buffer>(OBJECTS_DB).getRange(ALL_OBJECT_KEYS)) refs.push(...coldStripeRefs(value.segments));
  for (const { value } of m.meta.openDB<{ segment: { kind: string } }, Buffer>(PARTS_DB).getRange(ALL_OBJECT_KEYS)) refs.push(...coldStripeRefs([value.segment]));
  assert.ok(refs.length > 0, `${when}: the index names stripes`);
  const bad = [];
  for (const ref of refs) {
    const health = await m.cold!.stripes.check(ref);
    if (health.bad.length > 0) bad.push({ chunk: ref.chunkIndex, bad: health.bad, shards: health.bad.map((i) => ref.shards[i]) });
  }
  assert.deepEqual(bad, [], `${when}: every shard of every indexed stripe is present and verifies`);
  const { degradedReads, failedReads } = m.cold!.stripes.counters;
  assert.deepEqual({ degradedReads, failedReads }, { degradedReads: 0, failedReads: 0 }, `${when}: no read had to decode around a shard`);
}

test('a reference to segment B moving keys (multipart completion) while segment A of the same group is copied keeps B; every byte reads back, and the next pass compacts B', { timeout: 300_000 }, async (t) => {
  const dir = compactionTempDir(t, 'couchestor-compaction-grouped-', () => tier.close());
  let tier = await openCompactionTier(dir, true);
  const { m, store, compactor } = tier;
  await store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  // Every stripe is one record on each cold pool; 3 fill a 1 MiB segment.
  // Segment A of each pool: x1, d1, d2 (d1 and d2 deleted below: 2/3 dead).
  await put(store, models, 'x1', MiB);
  await put(store, models, 'd1', MiB);
  await put(store, models, 'd2', MiB);
  // Segment B of each pool: the upload's one part (2 stripes, held by the part record until completion), d3 (deleted: 1/3 dead).
  const partBytes = crypto.randomBytes(2 * MiB);
  const upload = await store.createUpload('cold', 'mp', {}, {});
  const part = await store.uploadPart('cold', 'mp', upload.uploadId, 1, bodyOf(partBytes), { expectedBytes: partBytes.length });
  await put(store, models, 'd3', MiB);
  // The head segment of each pool.
  await put(store, models, 'tail', MiB);
  for (const key of ['d1', 'd2', 'd3']) {
    assert.equal(await store.deleteObject('cold', key), true);
    models.delete(key);
  }
  await compactor.deadSettled();
  const before = await sealedSegments(tier);
  assert.equal(before.size, COLD_POOLS, `setup: sealed segments on every cold pool (${JSON.stringify([...before])})`);
  for (const [pool, segs] of before) assert.equal(segs.length, 2, `setup: segments A and B sealed on ${pool}`);
  const segA = new Map([...before].map(([pool, segs]) => [pool, segs[0]!]));
  const segB = new Map([...before].map(([pool, segs]) => [pool, segs[1]!]));
  await compactor.recount();

  // The completion runs inside the first copy of the pass (a segment A: A is deader, so first), after the
  // group's first look saw B's records held by the part record, before any B is copied or flipped.
  let completedDuringA: { pool: string; segment: number } | null = null;
  const copiedSegments: string[] = [];
  for (let i = 0; i < COLD_POOLS; i++) {
    const pool = `cold-${i}`;
    const seg = await m.cold!.stripes.segmentStore(pool);
    assert.ok(seg, `setup: ${pool}'s segment store is open`);
    const compactSegment = seg.compactSegment.bind(seg);
    seg.compactSegment = async (segment, places, ...rest) => {
      copiedSegments.push(`${pool}/${segment}`);
      if (completedDuringA === null) {
        completedDuringA = { pool, segment };
        await store.completeUpload('cold', 'mp', upload.uploadId, [{ partNumber: 1, etag: part.etag }]);
      }
      return compactSegment(segment, places, ...rest);
    };
  }
  models.set('mp', partBytes);
  const report = await compactor.runOnce({ unthrottled: true });
  t.diagnostic(`pass ${JSON.stringify(report)}; copies ${copiedSegments.join(' ')}`);
  assert.ok(completedDuringA !== null, 'the completion ran during the pass');
  const at = completedDuringA as { pool: string; segment: number };
  assert.equal(at.segment, segA.get(at.pool), 'the completion committed while a segment A was copied (before any B)');
  const firstB = copiedSegments.findIndex((s) => segB.get(s.split('/')[0]!) === Number(s.split('/')[1]));
  assert.ok(firstB > 0, `B was copied after the completion committed (copies: ${copiedSegments.join(' ')})`);
  // A holds no part of the upload: all 6 deleted. B's records, copied and flipped under the part record's
  // key, are named by the object record now: the final look keeps every B.
  assert.equal(report.segmentsCompacted, COLD_POOLS, 'every segment A is compacted');
  assert.equal(report.segmentsDeferred, COLD_POOLS, 'every segment B is kept (the completed object names it)');
  const after = await sealedSegments(tier);
  for (const [pool, b] of segB) assert.ok(after.get(pool)?.includes(b), `segment B of ${pool} is still on disk`);
  for (const [pool, a] of segA) assert.ok(!after.get(pool)?.includes(a), `segment A of ${pool} is gone`);
  await assertAllThere(m, store, models, 'after the raced pass');

  // A restart (a segment unlinked under a live shard could still be read through a kept descriptor), then the next pass.
  await tier.close();
  tier = await openCompactionTier(dir, false);
  await assertAllThere(tier.m, tier.store, models, 'after a restart');
  const second = await tier.compactor.runOnce({ unthrottled: true });
  t.diagnostic(`next pass ${JSON.stringify(second)}`);
  assert.equal(second.segmentsDeferred, 0, 'nothing racing: no segment kept');
  const last = await sealedSegments(tier);
  for (const [pool, b] of segB) assert.ok(!last.get(pool)?.includes(b), `segment B of ${pool} is compacted by the next pass`);
  await assertAllThere(tier.m, tier.store, models, 'after the next pass');
  await tier.close();
  tier = await openCompactionTier(dir, false);
  await assertAllThere(tier.m, tier.store, models, 'after the next pass and a restart');
});

/**
 * A cold tier with `sealedPerPool` sealed segments per pool, each 2/3 dead
 * (one live 1 MiB object in 3), and a compactor with `opts` whose objects
 * database counts the scans that start from its first key (a slice goes
 * on from the last key read, exclusiveStart).
 */
async function countingTier(t: TestContext, sealedPerPool: number, opts: Partial<CompactionOptions>) {
  const dir = compactionTempDir(t, 'couchestor-compaction-grouped-', async () => {
    await compactor.stop();
    await tier.close();
  });
  const tier = await openCompactionTier(dir, true);
  // The helper's compactor gives way to one with `opts`, whose objects database (the real one) counts scans.
  await tier.compactor.stop();
  const { m, store } = tier;
  const scans = { objects: 0 };
  const openDB = m.meta.openDB;
  const open = openDB.bind(m.meta);
  m.meta.openDB = ((name: string) => {
    const db = open(name);
    if (name !== OBJECTS_DB) return db;
    return new Proxy(db, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop === 'getRange')
          return (...args: unknown[]) => {
            if ((args[0] as { exclusiveStart?: boolean } | undefined)?.exclusiveStart !== true) scans.objects++;
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }) as typeof m.meta.openDB;
  const compactor = new SegmentCompactor(m.cold!.stripes, m.meta, () => m.openVolumes(), { intervalMs: 0, deadFraction: 0.01, recountSliceEntries: 4, ...opts });
  m.meta.openDB = openDB;
  await store.createBucket('cold', 'cold');
  const models = new Map<string, Buffer>();
  for (let s = 0; s < sealedPerPool; s++) {
    await put(store, models, `live-${s}`, MiB);
    await put(store, models, `dead-${s}-a`, MiB);
    await put(store, models, `dead-${s}-b`, MiB);
  }
  await put(store, models, 'tail', MiB); // seals the last one
  for (let s = 0; s < sealedPerPool; s++) {
    for (const key of [`dead-${s}-a`, `dead-${s}-b`]) {
      assert.equal(await store.deleteObject('cold', key), true);
      models.delete(key);
    }
  }
  await compactor.deadSettled();
  await compactor.recount();
  // Bytes copied out of segments not deleted yet (held twice on disk), and the most at once.
  const copies = { outstandingBytes: 0, maxOutstandingBytes: 0, maxSegmentBytes: 0 };
  const perSegment = new Map<string, number>();
  for (let i = 0; i < COLD_POOLS; i++) {
    const pool = `cold-${i}`;
    const seg = (await m.cold!.stripes.segmentStore(pool))!;
    const compactSegment = seg.compactSegment.bind(seg);
    seg.compactSegment = async (segment, places, ...rest) => {
      const result = await compactSegment(segment, places, ...rest);
      let bytes = 0;
      for (const r of result.relocations) bytes += r.to.lengthBytes;
      const key = `${pool}/${segment}`;
      perSegment.set(key, (perSegment.get(key) ?? 0) + bytes);
      copies.maxSegmentBytes = Math.max(copies.maxSegmentBytes, perSegment.get(key)!);
      copies.outstandingBytes += bytes;
      copies.maxOutstandingBytes = Math.max(copies.maxOutstandingBytes, copies.outstandingBytes);
      return result;
    };
    const removeSegment = seg.removeSegment.bind(seg);
    seg.removeSegment = async (segment) => {
      await removeSegment(segment);
      copies.outstandingBytes -= perSegment.get(`${pool}/${segment}`) ?? 0;
    };
  }
  return { tier, compactor, scans, models, copies };
}

/** Tells the compactor every live shard of `keys` is dead (as a free() would): the hints then say their segments hold nothing live. */
function inflateHints(tier: Tier, keys: string[]): void {
  const shards = [];
  for (const key of keys) for (const ref of coldStripeRefs(tier.store.headObject('cold', key).segments)) shards.push(...ref.shards);
  tier.m.cold!.stripes.onShardsDead!(shards, []);
}

test('a pass reads the index twice per group of segments, not twice per segment; segmentsPerScan and groupCopyBytes bound a group', { timeout: 300_000 }, async (t) => {
  const sealedPerPool = 3;
  const segments = COLD_POOLS * sealedPerPool;
  const cases: { name: string; opts: Partial<CompactionOptions>; scans: number; wrongHints?: boolean }[] = [
    // One group: one first look, one final look.
    { name: 'defaults', opts: {}, scans: 2 },
    // Groups of 4 segments: ceil(18 / 4) = 5 groups.
    { name: 'segmentsPerScan 4', opts: { segmentsPerScan: 4 }, scans: 2 * Math.ceil(segments / 4) },
    // Each segment holds ~1/3 MiB live: 1 MiB of copies a group takes 3 segments (6 groups).
    { name: 'groupCopyBytes 1 MiB', opts: { groupCopyBytes: MiB }, scans: 2 * Math.ceil(segments / 3) },
    // No room for a second segment: one a group, as before the groups (two looks per segment).
    { name: 'groupCopyBytes 0', opts: { groupCopyBytes: 0 }, scans: 2 * segments },
    // Hints saying every segment is all dead pick one group of 18; the live bytes the first look finds
    // (one 262,208-byte record a segment) let one segment a group through: 300,000 bytes hold one, not two.
    { name: 'groupCopyBytes 300,000, hints wrong', opts: { groupCopyBytes: 300_000 }, scans: 2 * segments, wrongHints: true },
  ];
  for (const c of cases) {
    const { tier, compactor, scans, models, copies } = await countingTier(t, sealedPerPool, c.opts);
    if (c.wrongHints) inflateHints(tier, [...models.keys()].filter((k) => k.startsWith('live-')));
    scans.objects = 0;
    const report = await compactor.runOnce({ unthrottled: true });
    t.diagnostic(`${c.name}: ${scans.objects} scans of the objects database, pass ${JSON.stringify(report)}`);
    assert.deepEqual({ compacted: report.segmentsCompacted, deferred: report.segmentsDeferred }, { compacted: segments, deferred: 0 }, `${c.name}: every sealed segment compacted`);
    assert.equal(scans.objects, c.scans, `${c.name}: scans of the index in the pass`);
    const boundBytes = Math.max(c.opts.groupCopyBytes ?? DEFAULT_COMPACTION_OPTIONS.groupCopyBytes, copies.maxSegmentBytes);
    t.diagnostic(`${c.name}: at most ${copies.maxOutstandingBytes} bytes copied out of segments not deleted yet (bound ${boundBytes})`);
    assert.ok(copies.maxSegmentBytes > 0, `${c.name}: live records were copied`);
    assert.ok(copies.maxOutstandingBytes <= boundBytes, `${c.name}: copies held before their segments' deletes stay within groupCopyBytes (or one segment's)`);
    assert.equal(copies.outstandingBytes, 0, `${c.name}: every segment copied from is deleted`);
    await assertAllThere(tier.m, tier.store, models, c.name);
    await compactor.stop();
    await tier.close();
  }
});

test('segmentsPerScan and groupCopyBytes are validated', async (t) => {
  const dir = compactionTempDir(t, 'couchestor-compaction-grouped-', () => tier.close());
  const tier = await openCompactionTier(dir, true);
  const make = (opts: Partial<CompactionOptions>) => new SegmentCompactor(tier.m.cold!.stripes, tier.m.meta, () => [], { intervalMs: 0, ...opts });
  assert.throws(() => make({ segmentsPerScan: 0 }), RangeError);
  assert.throws(() => make({ segmentsPerScan: 1.5 }), RangeError);
  assert.throws(() => make({ groupCopyBytes: -1 }), RangeError);
  assert.throws(() => make({ groupCopyBytes: Number.NaN }), RangeError);
});
