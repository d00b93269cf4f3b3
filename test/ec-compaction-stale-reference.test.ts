// Segment compaction with the real stripe store, segment files and LMDB
// index, in process (so the test can hold a stripe reference across the
// pass, which no client can): a reference taken before compaction still
// reads the right bytes after its segment file is deleted, freeing it marks
// the copy dead (not the deleted source), and the index points at the copies;
// a segment holding a stripe newer than the index (a destage before its
// flip) is not deleted; a stripe a reader holds (StripeStore.hold) after the
// index dropped it is copied out, not deleted under the reader.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { StripeStore, type StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import type { Pool } from '../src/dataplane/pools/pool.js';
import { volumeOwnerId } from '../src/dataplane/volumes/volume.js';
import { coldPoolsIn, patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;
const VOLUME_ID = 1;

/**
 * Six cold pools, the LMDB index and a stripe store in a fresh directory (all
 * closed and removed after the test), with volume VOLUME_ID recorded cold.
 * Three 256 KiB records per 1 MiB segment: chunks 0-2 fill segment 1 of every
 * pool, 3-5 segment 2.
 */
async function openColdStores(t: TestContext): Promise<{ pools: Pool[]; meta: MetaStore; stripes: StripeStore }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-compaction-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  stripes.segmentOptions = { segmentSizeBytes: MiB };
  t.after(async () => {
    await stripes.close();
    await meta.close();
  });
  await meta.volumes.put('v', { name: 'v', id: VOLUME_ID, sizeBytes: 8 * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: 'cold-0', readOnly: false, createdMs: 0 });
  return { pools, meta, stripes };
}

/** What the destager does once a stripe is written: `flip` points chunk c's index record at it, then frees the chunk's previous stripe. */
function indexFlipper(meta: MetaStore, stripes: StripeStore): { owner: Buffer; committed: Map<number, StripeRef>; flip: (c: number, ref: StripeRef) => Promise<void> } {
  const owner = volumeOwnerId(VOLUME_ID);
  const committed = new Map<number, StripeRef>();
  const flip = async (c: number, ref: StripeRef) => {
    await meta.chunks.put([VOLUME_ID, c], { state: ChunkState.Cold, pool: '', stripe: ref });
    const old = committed.get(c);
    committed.set(c, ref);
    if (old) stripes.free(old);
  };
  return { owner, committed, flip };
}

test('a stripe reference from before compaction reads right after its segment is deleted, and freeing it marks the copy dead', async (t) => {
  const { pools, meta, stripes } = await openColdStores(t);
  const data = new Map<number, Buffer>();
  const refs = new Map<number, StripeRef>();
  const put = async (c: number, generation: number) => {
    const bytes = patternBytes(MiB, c * 100 + generation);
    const ref = await stripes.writeStripe(volumeOwnerId(VOLUME_ID), c, generation, bytes);
    await meta.chunks.put([VOLUME_ID, c], { state: ChunkState.Cold, pool: '', stripe: ref });
    const old = refs.get(c);
    refs.set(c, ref);
    data.set(c, bytes);
    if (old) stripes.free(old); // after the flip, as the destager does
  };
  for (let c = 0; c < 6; c++) await put(c, 1);
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  t.after(() => compactor.stop());
  const stale = refs.get(2)!;
  assert.deepEqual(new Set(stale.shards.map((s) => s.segment)), new Set([1]), 'chunk 2 starts in segment 1 of every pool');
  // Rewrite chunks 0 and 1: segment 1 is then two thirds dead, chunk 2 its only live record.
  await put(0, 2);
  await put(1, 2);
  const report = await compactor.runOnce({ unthrottled: true });
  assert.equal(report.segmentsCompacted, 6, 'segment 1 of each of the six pools');
  for (const p of pools) assert.equal(fs.existsSync(path.join(p.rec.path, 'segments', 'seg-000000000001.cseg')), false, `${p.name}: segment 1 deleted`);
  const moved = meta.chunks.get([VOLUME_ID, 2])!.stripe!;
  assert.ok(moved.shards.every((s) => s.segment !== 1), 'the index points at the copies');
  assert.equal(moved.generation, stale.generation);
  // The reference held across the pass: every shard's segment is gone, the bytes are not.
  const before = stripes.counters.forwardedShardReads;
  assert.ok((await stripes.readStripe(stale)).equals(data.get(2)!), 'stale reference reads the right bytes');
  assert.equal(stripes.counters.degradedReads, 0, 'read through the forwards, not repaired from parity');
  assert.equal(stripes.counters.forwardedShardReads - before, 4, 'the four data shards followed their forwards');
  assert.ok((await stripes.readStripe(moved)).equals(data.get(2)!), 'the new reference reads the same bytes');
  // A scrub holding the old reference (it reads runs of records per segment) finds the stripe healthy, not lost.
  const [scanned] = await stripes.inspectMany([stale], Buffer.allocUnsafe(StripeStore.scanScratchBytes(stale, 1)));
  assert.deepEqual(scanned!.bad, [], 'scrub through the forwards');
  // Every other chunk still reads right through the index.
  for (let c = 0; c < 6; c++) assert.ok((await stripes.readStripe(meta.chunks.get([VOLUME_ID, c])!.stripe!)).equals(data.get(c)!), `chunk ${c}`);
  // A writer that took `stale` before the pass now frees it: the copies are what died.
  const deadBefore = new Map((await compactor.segments()).map((s) => [`${s.pool}/${s.segment}`, s.deadBytes]));
  stripes.free(stale);
  const deadAfter = new Map((await compactor.segments()).map((s) => [`${s.pool}/${s.segment}`, s.deadBytes]));
  for (const s of moved.shards) {
    const k = `${s.pool}/${s.segment}`;
    assert.equal(deadAfter.get(k)! - deadBefore.get(k)!, s.lengthBytes, `copy on ${k} counted dead`);
  }
});

test('a segment holding a stripe newer than the index (a destage not yet flipped) is kept, and compacted once the flip lands', async (t) => {
  const { pools, meta, stripes } = await openColdStores(t);
  const { owner, committed, flip } = indexFlipper(meta, stripes);
  // Segment 1: chunks 0-2 (generation 1). Segment 2: chunk 0's generation 2, written but
  // NOT flipped (its session is over: writeStripe returned), and chunks 1-2's generation 2.
  for (let c = 0; c < 3; c++) await flip(c, await stripes.writeStripe(owner, c, 1, patternBytes(MiB, c)));
  const pendingData = patternBytes(MiB, 99);
  const pending = await stripes.writeStripe(owner, 0, 2, pendingData);
  for (let c = 1; c < 3; c++) await flip(c, await stripes.writeStripe(owner, c, 2, patternBytes(MiB, 10 + c)));
  // Segment 3 (head): chunks 1-2 rewritten again, so segment 2 is all dead to the index.
  for (let c = 1; c < 3; c++) await flip(c, await stripes.writeStripe(owner, c, 3, patternBytes(MiB, 20 + c)));
  assert.ok(pending.shards.every((s) => s.segment === 2));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  t.after(() => compactor.stop());
  const first = await compactor.runOnce({ unthrottled: true });
  const seg2 = (p: Pool) => path.join(p.rec.path, 'segments', 'seg-000000000002.cseg');
  for (const p of pools) assert.ok(fs.existsSync(seg2(p)), `${p.name}: segment 2 kept while it holds the unflipped stripe`);
  assert.ok(first.segmentsDeferred >= 6, `deferred ${first.segmentsDeferred}`);
  // The flip lands: the next pass copies the stripe out and deletes segment 2.
  await flip(0, pending);
  const second = await compactor.runOnce({ unthrottled: true });
  assert.ok(second.segmentsCompacted >= 6, `compacted ${second.segmentsCompacted}`);
  for (const p of pools) assert.equal(fs.existsSync(seg2(p)), false, `${p.name}: segment 2 deleted after the flip`);
  assert.ok((await stripes.readStripe(meta.chunks.get([VOLUME_ID, 0])!.stripe!)).equals(pendingData));
});

test('a stripe a reader holds after the index dropped it (StripeStore.hold) is copied out, not lost, when its segment is compacted', async (t) => {
  const { pools, meta, stripes } = await openColdStores(t);
  const { owner, committed, flip } = indexFlipper(meta, stripes);
  // Segment 1: chunks 0-2, generation 1.
  for (let c = 0; c < 3; c++) await flip(c, await stripes.writeStripe(owner, c, 1, patternBytes(MiB, c)));
  const heldRef = committed.get(2)!;
  const heldData = patternBytes(MiB, 2);
  // A reader takes chunk 2's stripe (as a GET of a version about to be overwritten does), then every chunk is rewritten: segment 1 is all dead to the index.
  const release = stripes.hold([heldRef]);
  for (let c = 0; c < 3; c++) await flip(c, await stripes.writeStripe(owner, c, 2, patternBytes(MiB, 10 + c)));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0, deadFraction: 0.5 });
  t.after(() => compactor.stop());
  await compactor.recount(); // what a restart does: only the index (and holds) say what is live
  const pass = await compactor.runOnce({ unthrottled: true });
  const seg1 = (p: Pool) => path.join(p.rec.path, 'segments', 'seg-000000000001.cseg');
  for (const p of pools) assert.equal(fs.existsSync(seg1(p)), false, `${p.name}: segment 1 compacted`);
  assert.equal(pass.copiedBytes, heldRef.shards.reduce((n, s) => n + s.lengthBytes, 0), 'exactly the held stripe was copied');
  assert.ok((await stripes.readStripe(heldRef)).equals(heldData), 'the held reference reads its bytes through the forwards');
  assert.equal(stripes.counters.degradedReads, 0);
  // While held, the copies count as live; once let go of, nothing references them and the recount says so.
  const copies = heldRef.shards.map((s) => stripes.resolve(s));
  assert.ok(copies.every((s, i) => s.segment !== heldRef.shards[i]!.segment), 'the forwards lead to the copies');
  const deadOf = async () => new Map((await compactor.segments()).map((s) => [`${s.pool}/${s.segment}`, s.deadBytes]));
  await compactor.recount();
  const deadHeld = await deadOf();
  release();
  await compactor.recount();
  const deadReleased = await deadOf();
  for (const s of copies) {
    const k = `${s.pool}/${s.segment}`;
    assert.equal(deadReleased.get(k)! - deadHeld.get(k)!, s.lengthBytes, `copy on ${k}: live while held, dead once released`);
  }
});
