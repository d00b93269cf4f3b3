// Review of d324620 (compaction's final look read in slices): a reference
// that moves between index keys WHILE THE FINAL LOOK READS (a multipart
// completion: part record -> object record) must still keep the segment.
// The final look reads one LMDB snapshot, so the move is invisible to it;
// read per slice, it would read the objects before the completion and the
// parts after it, see nothing, and delete a segment holding the shards the
// completed object names. Real components: VolumeManager's cold tier
// (stripe store, 1 MiB segments), ObjectStore, SegmentCompactor; the
// completion is run between the final look's objects and parts scans
// through the compactor's test hook (betweenObjectsAndParts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, coldStripeRefs } from '../src/dataplane/objects/cold-segments.js';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { MiB, readObject } from './helpers/cold.js';
import { compactionTempDir } from './helpers/compaction-tier.js';
import { openCompactionTier } from './helpers/volume.js';

/** The part's body: PAUSE_AFTER_BYTES (5 stripes: every pool's first segment sealed, 3 records each), then the rest. */
const PAUSE_AFTER_BYTES = 5 * MiB;
const PART_BYTES = 6 * MiB + 513;

test('a multipart completion committing while the FINAL look reads its snapshot (part scanned after the objects) keeps the segment; nothing live is deleted', async (t) => {
  const dir = compactionTempDir(t, 'couchestor-review-final-look-', () => tier.close());
  let tier = await openCompactionTier(dir, true);
  const { m, store, compactor } = tier;
  await store.createBucket('cold', 'cold');

  // A part upload paused after 5 stripes: the first 3 sit in the first segment of every cold pool, sealed,
  // referenced by nothing yet (the part's index entry is written when the body ends).
  const bytes = crypto.randomBytes(PART_BYTES);
  let paused!: () => void;
  const reachedPause = new Promise<void>((resolve) => (paused = resolve));
  let resume!: () => void;
  const resumed = new Promise<void>((resolve) => (resume = resolve));
  async function* body(): AsyncGenerator<Buffer> {
    for (let at = 0; at < PART_BYTES; at += MiB) {
      if (at === PAUSE_AFTER_BYTES) {
        paused(); // asked for the next piece: the 5 stripes before it are written
        await resumed;
      }
      yield bytes.subarray(at, Math.min(PART_BYTES, at + MiB));
    }
  }
  const upload = await store.createUpload('cold', 'mp', {}, {});
  const partDone = store.uploadPart('cold', 'mp', upload.uploadId, 1, body(), { expectedBytes: PART_BYTES });
  await reachedPause;
  const segs = await compactor.segments();
  for (let i = 0; i < 6; i++) {
    const sealed = segs.filter((s) => s.pool === `cold-${i}` && !s.head && s.sizeBytes > 0);
    assert.equal(sealed.length, 1, `setup: one sealed segment on cold-${i} (${JSON.stringify(segs)})`);
  }
  // Counts the paused records dead (unreferenced): every sealed segment is a candidate. Now, so the pass does not recount.
  await compactor.recount();

  // Pass: the first look reads the objects, then the parts (hook between the two: the body resumes; the
  // part is not committed yet, so the look finds nothing live and copies nothing). The deletion waits for
  // the upload's session (the part commits), then the final look takes its snapshot and reads the
  // objects; between that and its parts scan (hook) the completion runs and commits: the snapshot still
  // shows the part, read per slice the parts scan would find it gone and the object not read.
  const looks: string[] = [];
  /** At the completion's start: the part was committed (so that look is the final one, after the upload session). */
  let partCommittedAtStart = false;
  compactor.betweenObjectsAndParts = async (snapshot) => {
    looks.push(snapshot);
    if (looks.length === 1) resume();
    else if (looks.length === 2) {
      partCommittedAtStart = store.listParts('cold', 'mp', upload.uploadId, 0, 10).parts.length === 1;
      const part = await partDone;
      await store.completeUpload('cold', 'mp', upload.uploadId, [{ partNumber: 1, etag: part.etag }]);
    }
  };
  const report = await compactor.runOnce({ unthrottled: true });
  compactor.betweenObjectsAndParts = null;
  await partDone;
  assert.equal(looks.length, 2, 'the pass took a first look and a final look');
  assert.ok(partCommittedAtStart, 'the part was committed when the completion started (the final look, after the upload session)');
  const models = new Map([['mp', bytes]]);
  await assertAllThere(m, store, models, 'after the raced pass');
  t.diagnostic(`raced pass ${JSON.stringify(report)}`);
  assert.ok(report.segmentsDeferred >= 1, 'the segment the final look raced is kept');

  // A restart: a segment unlinked under a live shard could still be read through a kept descriptor.
  await tier.close();
  tier = await openCompactionTier(dir, false);
  await assertAllThere(tier.m, tier.store, models, 'after a restart');
  const second = await tier.compactor.runOnce({ unthrottled: true });
  // The segment kept holds only live records now (dead fraction 0): no candidate, nothing deferred.
  assert.equal(second.segmentsDeferred, 0, 'nothing racing: no segment kept');
  await assertAllThere(tier.m, tier.store, models, 'after the next pass');
  await tier.close();
  tier = await openCompactionTier(dir, false);
  await assertAllThere(tier.m, tier.store, models, 'after the next pass and a restart');
});

/** Byte-exact reads, and every shard (data and parity) of every stripe the index names present and verifying. */
async function assertAllThere(m: VolumeManager, store: ObjectStore, models: Map<string, Buffer>, when: string): Promise<void> {
  for (const [key, want] of models) assert.ok((await readObject(store, 'cold', key)).equals(want), `${when}: object ${key} reads back byte-exact`);
  const refs: StripeRef[] = [];
  for (const { value } of m.meta.openDB<{ segments: { kind: string }[] }, Buffer>(OBJECTS_DB).getRange(ALL_OBJECT_KEYS)) refs.push(...coldStripeRefs(value.segments));
  for (const { value } of m.meta.openDB<{ segment: { kind: string } }, Buffer>(PARTS_DB).getRange(ALL_OBJECT_KEYS)) refs.push(...coldStripeRefs([value.segment]));
  assert.equal(refs.length, 7, `${when}: the index names the object's 7 stripes`);
  const bad = [];
  for (const ref of refs) {
    const health = await m.cold!.stripes.check(ref);
    if (health.bad.length > 0) bad.push({ chunk: ref.chunkIndex, bad: health.bad, shards: health.bad.map((i) => ref.shards[i]) });
  }
  assert.deepEqual(bad, [], `${when}: every shard of every indexed stripe is present and verifies`);
  const { degradedReads, failedReads } = m.cold!.stripes.counters;
  assert.deepEqual({ degradedReads, failedReads }, { degradedReads: 0, failedReads: 0 }, `${when}: no read had to decode around a shard`);
}
