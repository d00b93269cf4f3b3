// A whole-pool rebuild whose worker throws while taking a group of stripes
// (review of c826ec8: the branch its test did not reach). The fault is real
// data, not a mock: a damaged S3 part record in the index whose stripe's
// ownerId holds a "/", so ColdObjectHolders.current() reads its key back
// wrong and asks LMDB for a zero-length key, which throws. The listing does
// not touch that field, so the throw comes from the worker, in the middle of
// a group: the stripes it had already taken (set Reconstructing) go back to
// the queue, the other workers' groups land and are kept (synced, flipped),
// every write session ends, the pool is listed interrupted, and once the record is gone
// the timer's whole-pool rebuild completes with every stripe's shard back.
// In process: real manager, stripe store, segment files, LMDB index,
// ObjectStore, Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { PARTS_DB, type ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import { bodyOf, patternBytes, readObject } from './helpers/cold.js';
import { openColdTierManager, tempDirClosing } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';
/** 1 MiB stripes: 24 of them, more than one group (16) so two workers take groups. */
const STRIPES = 24;
/** The object stripe the damaged part copies: it sorts right after this one, inside the first group. */
const COPIED = 7;

test('a rebuild worker that throws mid-group returns the stripes it took; nothing stays Reconstructing, no write session stays open, the retry completes', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-worker-throw-', () => m!);
  m = await openColdTierManager(dir);
  const store = await ObjectStore.open(m, m.cold!.stripes);
  await store.createBucket('cold', 'cold');
  const want = patternBytes(STRIPES * MiB, 5);
  await store.putObject('cold', 'a', bodyOf(want), { contentHeaders: {}, userMeta: {}, expectedBytes: want.length });
  const r = m.cold!.reconstructor;
  const holders = new ColdObjectHolders(m.meta, m.cold!.stripes);
  t.after(r.addSource(holders));
  const refs = (store.headObject('cold', 'a').segments as ColdSegment[]).flatMap((s) => s.stripes);
  assert.equal(refs.length, STRIPES);

  // The fault: a part (no upload) whose one stripe is object stripe 7's with its ownerId damaged.
  // Its key lists as p/<hex>/x/y/7: current() reads chunk "y" and object key "7" (hex: no bytes).
  const parts = m.meta.openDB<unknown, Buffer>(PARTS_DB);
  const badKey = Buffer.concat([Buffer.from([1]), Buffer.from('damaged-upload', 'latin1'), Buffer.from([0, 1])]);
  const damaged: StripeRef = { ...refs[COPIED]!, ownerId: 'x/y' };
  await parts.put(badKey, { segment: { kind: 'cold', fileId: 0, lengthBytes: MiB, chunkBytes: MiB, stripes: [damaged] } });

  replacePoolDir(dir, LOST);
  await assert.rejects(r.rebuildPool(LOST), /Zero length key/, "the worker's current() throws on the damaged part");
  assert.equal(r.rebuildRunning(), null);
  // The stripes the worker had taken before the throw (0-7): back in the queue, none left
  // Reconstructing (a later rebuild skips those). The other workers' group (the other 16) landed,
  // and is kept: synced and flipped, its shards present (review-rebuild-failure-keeps-landed).
  const states = r.counts();
  assert.equal(states.Reconstructing, 0, JSON.stringify(states));
  assert.equal(states.Degraded, COPIED + 1, JSON.stringify(states));
  const present = async () => {
    let n = 0;
    for (const ref of (store.headObject('cold', 'a').segments as ColdSegment[]).flatMap((s) => s.stripes)) {
      if (await m!.cold!.stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === LOST))) n++;
    }
    return n;
  };
  assert.equal(await present(), STRIPES - (COPIED + 1), "the other workers' stripes are kept");
  // Every write session ended (one left open holds back compaction of the segments it wrote).
  assert.equal(await m.cold!.stripes.writesSettled(2_000), true, 'no write session left open');
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' });

  // The fault removed: the retry timer's whole-pool rebuild lands every stripe.
  await parts.remove(badKey);
  const reports = await r.retrySkippedVolumes();
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.retryOfSkipped, false, 'a whole-pool rebuild');
  assert.equal(reports[0]!.stripesChecked, STRIPES, JSON.stringify(reports[0]));
  assert.equal(reports[0]!.notRebuilt, 0, JSON.stringify(reports[0]));
  assert.equal(reports[0]!.stripesRebuilt, COPIED + 1, 'the rest only: the failed run kept what it landed');
  assert.equal(reports[0]!.complete, true, JSON.stringify(reports[0]));
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined);
  assert.equal(r.counts().Reconstructing, 0);
  assert.equal(await present(), STRIPES, `every stripe's ${LOST} shard is back`);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.badStripes, 0);
  for (const p of ['cold-0', 'cold-5']) fs.renameSync(path.join(dir, p), path.join(dir, `${p}.gone`));
  assert.ok((await readObject(store, 'cold', 'a')).equals(want), 'a reads back byte-exact with cold-0 and cold-5 lost');
});
