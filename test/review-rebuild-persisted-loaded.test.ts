// Review of 5a54bd3 (incompleteRebuilds kept in the index): an entry loaded
// after a restart, (1) retried while its pool is offline, must still be a
// whole-pool rebuild (its store is unknown, which is not "the pool offline
// then as now"); (2) with the cold tier not started, the gauges must not
// report 0 (rebuilt) for a pool the index lists. In process: real manager,
// stripe store, segment files, LMDB index, Reconstructor and metrics registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { createMetrics } from '../src/control/metrics/index.js';
import { metricsSource } from '../src/control/observe.js';
import { HeatTracker } from '../src/control/heat.js';
import { coldPairWithHot1Offline, openColdTierManager, tempDirClosing } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

/**
 * a (cold, on hot-1) and b (cold, on hot-0), two stripes each; hot-1 offline,
 * cold-2 lost and replaced, rebuilt: incomplete (a skipped), b's shards
 * rebuilt. Returns the open manager and hot-1's path (renamed to .gone).
 */
async function incompleteRebuild(dir: string): Promise<{ m: VolumeManager; hot1: string }> {
  const { m, hot1 } = await coldPairWithHot1Offline(await openColdTierManager(dir), dir);
  replacePoolDir(dir, LOST);
  const first = await m.cold!.reconstructor.rebuildPool(LOST);
  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.equal(first.stripesRebuilt, 2, "b's two cold-2 shards rebuilt");
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: ['a'], notRebuilt: 0 });
  return { m, hot1 };
}

test('a loaded entry retried while its pool is offline rebuilds the whole pool, not the skipped volume alone', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-persisted-offline-', () => m!);
  const setup = await incompleteRebuild(dir);
  m = setup.m;
  // A seventh cold pool: with cold-2 offline, a lost shard has somewhere else to go.
  await m.putPool({ name: 'cold-6', path: path.join(dir, 'cold-6'), tier: 'cold', capacityBytes: 1024 * MiB, labels: { tier: 'cold' } });
  await m.close();
  // While the daemon is down: the new cold-2 disk dies (not replaced: offline); hot-1 comes back.
  fs.rmSync(path.join(dir, LOST), { recursive: true });
  fs.renameSync(`${setup.hot1}.gone`, setup.hot1);
  m = await openColdTierManager(dir, false);
  const r = m.cold!.reconstructor;
  assert.deepEqual(r.incompleteRebuilds(), [{ pool: LOST, volumesSkipped: ['a'], notRebuilt: 0 }]);

  const retries = await r.retrySkippedVolumes();
  assert.equal(retries.length, 1);
  // The in-memory entry (store: the cold-2 store of that rebuild, now null) would take the
  // whole pool; a loaded one must too: b's rebuilt shards went with the second disk.
  assert.equal(retries[0]!.retryOfSkipped, false, `a whole-pool rebuild: ${JSON.stringify(retries[0])}`);
  const onLost: string[] = [];
  for (const name of ['a', 'b']) {
    for (const [c, ref] of m.openVolume(name).stripes) if (ref.shards.some((sh) => sh.pool === LOST)) onLost.push(`${name}:${c}`);
  }
  const listed = r.incompleteRebuilds();
  // Either every stripe was moved off the offline pool, or the pool stays listed.
  assert.ok(onLost.length === 0 || listed.length === 1, `stripes still with a shard on offline ${LOST}: ${onLost.join(', ')}; listed: ${JSON.stringify(listed)}`);
  assert.deepEqual(onLost, [], 'every stripe rebuilt off the offline pool (cold-6 has room)');
});

test('with the cold tier not started, the rebuild gauges do not read 0 for a pool the index lists', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-persisted-nocold-', () => m!);
  m = (await incompleteRebuild(dir)).m;
  await m.close();
  // Restarted without the cold tier (no policy file, say): the index still lists cold-2.
  m = VolumeManager.open(path.join(dir, 'meta'));
  assert.ok(!m.cold, "no cold tier");
  const registry = createMetrics(metricsSource(m, new HeatTracker(m, 60_000, 1_000), () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 })));
  const text = await registry.metrics();
  const value = (name: string, pool: string): string | undefined => text.split('\n').find((l) => l.startsWith(`${name}{pool="${pool}"} `))?.split(' ')[1];
  assert.notEqual(value('couchestor_rebuild_incomplete', LOST), '0', 'cold-2 is not fully rebuilt: not 0');
  assert.equal(value('couchestor_rebuild_incomplete', LOST), '1', 'the index lists cold-2');
  assert.equal(value('couchestor_rebuild_volumes_skipped', LOST), '1');
});
