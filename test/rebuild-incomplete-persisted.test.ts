// A cold pool not fully rebuilt (its rebuild skipped a volume whose hot pool
// is offline) stays listed across a daemon restart: the entry is kept in the
// index, GET /v1/cold and the couchestor_rebuild_incomplete gauge show it
// after the restart, and the retry timer's pass rebuilds the skipped volume
// once its pool is back, then clears the entry from the index. Before, the
// list was in memory only: a restart emptied it and nothing retried the
// volume. In process: real manager, stripe store, segment files, LMDB index,
// Reconstructor, API and metrics registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldPairWithHot1Offline, openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { listedByApi, managerPoolGauge, replacePoolDir, type ListedRebuild as Listed } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

/** The value of `name{pool="LOST"}` in one /metrics scrape of the real registry (undefined: no series). */
const gauge = (m: VolumeManager, name: string) => managerPoolGauge(m, name, LOST);

test('an incomplete cold-pool rebuild is still listed (API, gauge, index) after a restart, and the retry completes it once the hot pool is back', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-incomplete-persisted-', () => m!);
  m = await openColdTierManager(dir);
  // a: a cold volume on hot-1 (the pool that goes offline); b: on hot-0. Two stripes each.
  // hot-1 drops out; cold-2 is lost and replaced by an empty directory.
  const pair = await coldPairWithHot1Offline(m, dir);
  m = pair.m;
  const { hot1, want } = pair;
  replacePoolDir(dir, LOST);
  assert.equal(await gauge(m, 'couchestor_rebuild_incomplete'), 0, 'a cold pool not listed reads 0');

  const first = await m.cold!.reconstructor.rebuildPool(LOST);
  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.equal(first.stripesRebuilt, 2, "b's two cold-2 shards rebuilt");
  const entry: Listed = { pool: LOST, volumesSkipped: ['a'], notRebuilt: 0 };
  assert.deepEqual(await listedByApi(m), [entry]);
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: ['a'], notRebuilt: 0 }, 'the entry is in the index');
  assert.equal(await gauge(m, 'couchestor_rebuild_incomplete'), 1);
  assert.equal(await gauge(m, 'couchestor_rebuild_volumes_skipped'), 1);
  assert.equal(await gauge(m, 'couchestor_rebuild_stripes_not_rebuilt'), 0);

  // A restart with hot-1 still offline: the pool is still listed, by the API and the gauge.
  await m.close();
  m = await openColdTierManager(dir, false);
  const r = m.cold!.reconstructor;
  assert.deepEqual(await listedByApi(m), [entry], 'still listed after the restart');
  assert.equal(await gauge(m, 'couchestor_rebuild_incomplete'), 1, 'gauge 1 after the restart');
  assert.equal(await gauge(m, 'couchestor_rebuild_volumes_skipped'), 1);
  // The timer's pass while a still cannot be opened: nothing to do, still listed.
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.deepEqual(r.incompleteRebuilds(), [entry]);

  // hot-1 is back: the timer's pass (resumed from the index) rebuilds a's cold-2 shards.
  fs.renameSync(`${hot1}.gone`, hot1);
  const rebuiltBefore = r.rebuiltStripes;
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.equal(r.incompleteWriteFailures, 0);
  assert.equal(r.rebuiltStripes - rebuiltBefore, 2, "a's two stripes rebuilt by the timer's pass");
  assert.deepEqual(await listedByApi(m), []);
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined, 'the entry is gone from the index');
  assert.equal(await gauge(m, 'couchestor_rebuild_incomplete'), 0, 'gauge 0 once rebuilt');
  assert.equal(await gauge(m, 'couchestor_rebuild_volumes_skipped'), 0);
  // Every shard of every stripe verifies, none repaired by the scrub.
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0, 'no stripe lacks its cold-2 shard');
  assert.deepEqual(whole.volumesSkipped, []);
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);

  // And the clear is durable: another restart lists nothing.
  await m.close();
  m = await openColdTierManager(dir, false);
  assert.deepEqual(await listedByApi(m), []);
  assert.equal(await gauge(m, 'couchestor_rebuild_incomplete'), 0);
});
