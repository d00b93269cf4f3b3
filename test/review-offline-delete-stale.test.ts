// Review of e85dfec: the manager's record of volumes that cannot be opened
// (what the couchestor_volume_unavailable gauge and the API's
// unavailableVolumes show) must not outlive the volume. deleteVolume cleared
// the entry before its index transaction, and any open attempt while that
// transaction runs (a destager tick, a metrics scrape, the control loop)
// still finds the record and records the failure again: the deleted volume
// was then reported unavailable for good (nothing clears it: openVolume
// answers NotFound for a name with no record), one stale series per such
// delete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { createMetrics } from '../src/control/metrics/registry.js';
import { metricsSource } from '../src/control/observe.js';
import { HeatTracker } from '../src/control/heat.js';
import { coldVolumeOnHot1, openColdTierManager, tempDirClosing } from './helpers/volume.js';

test('a volume deleted while its pool is offline is not left reported unavailable by an open during the delete', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rvoff-delete-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await m.createVolume({ name: 'b', sizeBytes: 2 * 1024 * 1024, tier: 'cold', pool: 'hot-0' });
  // A restart (a not open), then hot-1 drops out.
  await m.close();
  m = await openColdTierManager(dir, false);
  const mgr = m;
  fs.renameSync(hot1, `${hot1}.gone`);
  assert.throws(() => mgr.openVolume('a'), { name: 'PoolOffline' });
  assert.deepEqual(mgr.unavailableVolumes().map((u) => `${u.volume}@${u.pool}`), ['a@hot-1'], 'premise: a is recorded unavailable');

  // The delete is under way (its index transaction in flight) when something tries a again.
  const deleting = mgr.deleteVolume('a');
  assert.throws(() => mgr.openVolume('a'), { name: 'PoolOffline' }, 'premise: the record is still there during the transaction');
  await deleting;
  assert.equal(mgr.getVolumeRecord('a'), undefined, 'premise: a is deleted');

  assert.deepEqual(mgr.unavailableVolumes(), [], 'a deleted volume is not reported unavailable');
  const heat = new HeatTracker(mgr, 60_000, 1_000);
  const text = await createMetrics(metricsSource(mgr, heat, () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 }))).metrics();
  assert.doesNotMatch(text, /couchestor_volume_unavailable\{volume="a"/, 'no gauge series for the deleted volume');
});

test('a volume opened while its delete is under way does not stay open, and a new volume of that name gets its own file', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rvoff-delete-open-', () => m!);
  m = await openColdTierManager(dir);
  const mgr = m;
  const old = await mgr.createVolume({ name: 'a', sizeBytes: 2 * 1024 * 1024, tier: 'hot', pool: 'hot-0' });
  // An open (a scrape, a destager tick, an NBD connect) while the delete's index transaction runs.
  const deleting = mgr.deleteVolume('a');
  const late = mgr.openVolume('a');
  assert.equal(late.rec.id, old.id, 'premise: the record was still there during the transaction');
  await deleting;
  assert.equal(mgr.getVolumeRecord('a'), undefined, 'premise: a is deleted');
  // A new volume of the same name: its writes must go to its own file, not the deleted volume's (unlinked) one.
  const again = await mgr.createVolume({ name: 'a', sizeBytes: 2 * 1024 * 1024, tier: 'hot', pool: 'hot-0' });
  assert.equal(mgr.openVolume('a').rec.id, again.id, 'the new volume a is opened, not the deleted one');
  assert.ok(!mgr.openVolumes().some((v) => v.rec.id === old.id), 'the deleted volume is not left open');
});
