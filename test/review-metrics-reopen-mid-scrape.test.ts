// A closed volume opened while a scrape is under way keeps its counters in that scrape.
// The daemon's metrics source is read a slice (1,000 volumes) at a time with the event loop
// free between slices; it took the open volumes once at the scrape's start and read the closed
// ones' counters (VolumeManager.closedVolumeCounters) live. A volume closed at the start and
// opened by a client before its slice was in neither (the open moves its counters off the
// closed map): its couchestor_volume_*_total read 0 in that scrape, then their value again at
// the next. Prometheus takes the dip for a counter reset: increase()/rate() over it count the
// volume's whole total once more (a volume at 10 M ops spikes by 10 M).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createMetrics } from '../src/control/metrics/index.js';
import { metricsSource } from '../src/control/observe.js';
import { HeatTracker } from '../src/control/heat.js';
import { VOLUMES_PER_SLICE } from '../src/control/metrics/registry.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { addVolumesLike } from './helpers/many-volumes.js';
import { openHotManager, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';
import { metric } from './helpers/control-loop.js';

const MiB = 1024 * 1024;


test('a closed volume opened between the slices of a scrape keeps its counters in it (no dip to 0)', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'review-metrics-reopen-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  await m.createVolume({ name: 'a', sizeBytes: MiB });
  await m.createVolume({ name: 'zz', sizeBytes: MiB });
  await m.close();
  // A full slice of volumes sorted before zz: zz is read after the scrape's first yield.
  await addVolumesLike(path.join(dir, 'meta'), 'a', 'v', VOLUMES_PER_SLICE);
  m = await openHotManager(dir);
  const heat = new HeatTracker(m, 60_000, 1_000);
  heat.sample();
  const registry = createMetrics(metricsSource(m, heat, () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 })));

  // zz serves I/O on a loan, then closes: its counters are kept as at its close.
  let vol = m.borrowVolume('zz');
  const id = vol.rec.id;
  await writeVolume(vol, 0, Buffer.alloc(8192, 1));
  await vol.flush();
  await readVolume(vol, 0, 4096);
  m.giveBack(vol);
  assert.ok(m.closedVolumeCounters().has(id), 'zz closed with its counters kept');
  const before = await registry.metrics();
  assert.equal(metric(before, 'couchestor_volume_write_ops_total', { volume: 'zz' }), 1);

  // A scrape starts (its first slice is read synchronously), then a client opens zz before its slice.
  const scrape = registry.metrics();
  vol = m.borrowVolume('zz');
  const during = await scrape;
  assert.equal(metric(during, 'couchestor_volume_write_ops_total', { volume: 'zz' }), 1, 'zz opened mid-scrape: write_ops_total');
  assert.equal(metric(during, 'couchestor_volume_read_ops_total', { volume: 'zz' }), 1, 'zz opened mid-scrape: read_ops_total');
  assert.equal(metric(during, 'couchestor_volume_write_bytes_total', { volume: 'zz' }), 8192);
  m.giveBack(vol);
  heat.stop();
});
