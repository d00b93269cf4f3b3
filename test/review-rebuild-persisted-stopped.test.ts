// Review of 5a54bd3: a whole-pool rebuild cut by a daemon stop (close: the
// reconstructor stops, the rebuild answers complete: false) must leave the
// pool listed after the restart. The list is "pools not fully rebuilt"; the
// stop skipped the write of the entry, so a pool with no entry before read
// as rebuilt (GET /v1/cold, couchestor_rebuild_incomplete 0) after the
// restart, its lost shards not rebuilt. Since the stop marks the pool
// interrupted, the retry timer rebuilds the whole pool. And the timer never
// rewrites an unchanged entry it has nothing to retry for. In process: real
// manager, stripe store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, tempDirClosing, writeVolume } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

test('a whole-pool rebuild cut by a stop leaves the pool listed after the restart', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-persisted-stopped-', () => m!);
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'b', sizeBytes: 4 * MiB, tier: 'cold', pool: 'hot-0' });
  await writeVolume(m.openVolume('b'), 0, crypto.randomBytes(4 * MiB));
  await m.cold!.destager.drain();
  await m.close();
  m = await openColdTierManager(dir, false);
  replacePoolDir(dir, LOST);
  // The stop lands while the rebuild runs (before its first stripe: it is stopped at once).
  const rebuilding = m.cold!.reconstructor.rebuildPool(LOST);
  await m.close();
  const cut = await rebuilding;
  assert.equal(cut.complete, false, 'the stop cut it');
  assert.ok(cut.stripesRebuilt < 4, JSON.stringify(cut));
  m = await openColdTierManager(dir, false);
  const listed = m.cold!.reconstructor.incompleteRebuilds();
  assert.equal(listed.length, 1, `cold-2 still listed as not fully rebuilt after the restart: ${JSON.stringify(listed)}`);
  assert.equal(listed[0]!.pool, LOST);
  assert.ok(listed[0]!.notRebuilt > 0, JSON.stringify(listed));
  assert.equal(listed[0]!.interrupted, true, 'a cut whole-pool rebuild: which stripes it left is not known');
  // The retry timer's pass rebuilds the whole pool (an interrupted entry), completes it and clears the entry.
  const r = m.cold!.reconstructor;
  const rebuiltBefore = r.rebuiltStripes;
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.equal(r.rebuiltStripes - rebuiltBefore, 4, "b's four cold-2 shards rebuilt by the timer's pass");
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined);
  assert.equal((await r.scrub({ rateLimited: false })).badStripes, 0);
});

test('the retry timer does not rewrite an unchanged entry that has no volume to retry', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-persisted-unchanged-', () => m!);
  m = await openColdTierManager(dir);
  await m.close();
  // A finished rebuild that left stripes not rebuilt (queue full, unrecoverable) and skipped no
  // volume: written as it would have, so the next start loads it.
  m = await openColdTierManager(dir, false);
  await m.meta.incompleteRebuilds.put(LOST, { volumesSkipped: [], notRebuilt: 3 });
  await m.close();
  m = await openColdTierManager(dir, false);
  const listed = m.cold!.reconstructor.incompleteRebuilds();
  assert.deepEqual(listed, [{ pool: LOST, volumesSkipped: [], notRebuilt: 3 }]);
  // Its passes leave the record alone (before 03641d4, each pass, every retry interval, rewrote the
  // same record: one synced LMDB commit per pool). Such an entry waits for an operator's rebuild.
  const db = m.meta.incompleteRebuilds;
  let writes = 0;
  const realPut = db.put.bind(db);
  const realRemove = db.remove.bind(db);
  db.put = ((...a: Parameters<typeof db.put>) => (writes++, realPut(...a))) as typeof db.put;
  db.remove = ((...a: Parameters<typeof db.remove>) => (writes++, realRemove(...a))) as typeof db.remove;
  for (let i = 0; i < 3; i++) await m.cold!.reconstructor.retryOnTimer();
  assert.equal(writes, 0, 'no write of an unchanged entry by the retry timer');
  assert.deepEqual(m.cold!.reconstructor.incompleteRebuilds(), listed, 'still listed');
  db.put = realPut;
  db.remove = realRemove;
  // And a whole-pool rebuild now completes it and clears the entry.
  const again = await m.cold!.reconstructor.rebuildPool(LOST);
  assert.equal(again.complete, true, JSON.stringify(again));
  assert.deepEqual(m.cold!.reconstructor.incompleteRebuilds(), []);
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined);
});
