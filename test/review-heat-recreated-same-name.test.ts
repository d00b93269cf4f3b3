// A volume deleted and made again under the same name between two heat ticks: the new volume's
// couchestor_volume_iops is its own (0: it served nothing), not the deleted one's. The sampler's
// tick walks the index only when the count of volumes changed (or every 5 min, or at a pass); a
// delete and a make in one tick leave the count as it was, so until the next walk the name still
// carried the deleted volume's samples, and /metrics showed its IOPS on the new volume (decaying
// over the 1 min window).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from '../src/control/metrics/index.js';
import { metricsSource } from '../src/control/observe.js';
import { HeatTracker } from '../src/control/heat.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openHotManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { metric } from './helpers/control-loop.js';

const MiB = 1024 * 1024;


test('a volume deleted and made again under its name within one heat tick shows no IOPS of the deleted one', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'review-heat-recreated-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  await m.createVolume({ name: 'x', sizeBytes: MiB });
  const heat = new HeatTracker(m, 60_000, 1_000);
  const registry = createMetrics(metricsSource(m, heat, () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 })));
  const t0 = Date.now() - 10_000;
  heat.sample(t0);
  // x busy for a few ticks (a client holds it open).
  const vol = m.borrowVolume('x');
  for (let k = 1; k <= 5; k++) {
    for (let i = 0; i < 50; i++) await readVolume(vol, 0, 4096);
    heat.tick(t0 + k * 1_000);
  }
  m.giveBack(vol);
  const busy = await registry.metrics();
  assert.ok((metric(busy, 'couchestor_volume_iops', { volume: 'x', direction: 'read' }) ?? 0) > 10, 'x read busy');

  // Deleted and made again before the next tick: the count of volumes is unchanged.
  await m.deleteVolume('x');
  const made = await m.createVolume({ name: 'x', sizeBytes: MiB });
  assert.notEqual(made.id, vol.rec.id);
  heat.tick(t0 + 6_000);
  const after = await registry.metrics();
  assert.equal(metric(after, 'couchestor_volume_iops', { volume: 'x', direction: 'read' }), 0, 'the new x served nothing');
  assert.equal(metric(after, 'couchestor_volume_read_ops_total', { volume: 'x' }), 0);
  heat.stop();
});
