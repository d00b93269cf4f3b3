// A whole-pool rebuild that fails part way (throws, after shards landed on the
// replaced pool) is listed as interrupted: its rebuild-incomplete record in the
// index, GET /v1/cold and the couchestor_rebuild_incomplete gauge; once the
// fault is gone the retry timer's whole-pool rebuild completes, every stripe's
// shard is back on the pool and the volume reads back byte-exact with two
// other pools lost. The fault is real data, not a mock: a damaged S3 object
// record in the index (its segments not a list), which the rebuild's listing
// of the object stripes (after every volume's) throws on. File-system faults on
// the replaced pool do not throw: a failed write or sync leaves its stripes not
// rebuilt (notRebuilt), a different path. Before the fix the failed run left
// the stripes it had taken (its last window: written, never synced) marked
// Reconstructing in the queue: no pass took them again and the timer's
// whole-pool rebuild skipped them ("a pass has it") and answered complete:
// false, notRebuilt 32, at every retry. In process: real manager, stripe
// store, segment files, LMDB index, Reconstructor, API and metrics registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { coldVolumeWithObjectSource, listedByApi, managerPoolGauge, poolBytes, putDamagedObjectRecord, replacePoolDir, type ListedRebuild } from './helpers/rebuild.js';

const LOST = 'cold-2';
/** 1 MiB chunks: one 4+2 stripe each, so 32 shards of 256 KiB on every pool. */
const STRIPES = 32;

/** The value of `couchestor_rebuild_incomplete{pool="LOST"}` in one scrape of the real registry. */
const incompleteGauge = (m: VolumeManager) => managerPoolGauge(m, 'couchestor_rebuild_incomplete', LOST);

test('a whole-pool rebuild that fails part way is listed interrupted, and the retry timer rebuilds the whole pool once the fault is gone', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-failure-listed-', () => m!);
  m = await openColdTierManager(dir);
  const want = await coldVolumeWithObjectSource(t, m, STRIPES);
  const r = m.cold!.reconstructor;

  // The fault: an object record whose segments are not a list (bucket id 9, key "bad").
  assert.equal(await incompleteGauge(m), 0, 'not listed before');
  const removeDamaged = await putDamagedObjectRecord(m);

  replacePoolDir(dir, LOST);
  await assert.rejects(r.rebuildPool(LOST), TypeError, 'the listing of the object stripes throws on the damaged record');
  assert.ok(poolBytes(dir, LOST) > 0, "the volume's shards had landed on the pool before it failed");
  assert.equal(r.rebuildRunning(), null);

  // Listed interrupted: the index record, the list. (The record stays damaged here: the
  // metrics scrape and GET /v1/cold count object stripes too, and would throw on it.)
  const interrupted: ListedRebuild = { pool: LOST, volumesSkipped: [], notRebuilt: 1, interrupted: true };
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' }, 'the record says interrupted, not running');
  assert.deepEqual(r.incompleteRebuilds(), [interrupted]);

  // The fault removed: still listed (GET /v1/cold, the gauge) until a rebuild ends; nothing rebuilt it yet.
  await removeDamaged();
  assert.deepEqual(await listedByApi(m), [interrupted]);
  assert.equal(await incompleteGauge(m), 1);

  // The retry timer's step for listed pools rebuilds the whole pool.
  const reports = await r.retrySkippedVolumes();
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.pool, LOST);
  assert.equal(reports[0]!.retryOfSkipped, false, 'a whole-pool rebuild');
  assert.equal(reports[0]!.stripesChecked, STRIPES);
  assert.equal(reports[0]!.notRebuilt, 0, JSON.stringify(reports[0]));
  assert.equal(reports[0]!.complete, true, JSON.stringify(reports[0]));
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.deepEqual(await listedByApi(m), []);
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined, 'the record is gone from the index');
  assert.equal(await incompleteGauge(m), 0);
  assert.equal(r.incompleteWriteFailures, 0);

  // Every stripe has its shard on the pool again (header identity read back), and the scrub agrees.
  const vol = m.openVolume('c');
  let present = 0;
  for (const [, ref] of vol.stripes) {
    const i = ref.shards.findIndex((s) => s.pool === LOST);
    assert.ok(i >= 0);
    if (await m.cold!.stripes.shardPresent(ref, i)) present++;
  }
  assert.equal(present, STRIPES, `every stripe's ${LOST} shard is back`);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, STRIPES);
  assert.equal(whole.badStripes, 0);

  // k = 4 survivors with cold-0 and cold-5 gone (a restart: nothing cached): the rebuilt shards carry every read.
  await m.close();
  for (const p of ['cold-0', 'cold-5']) fs.renameSync(path.join(dir, p), path.join(dir, `${p}.gone`));
  m = await openColdTierManager(dir, false);
  assert.ok((await readVolume(m.openVolume('c'), 0, want.length)).equals(want), 'c reads back byte-exact with cold-0 and cold-5 lost');
});
