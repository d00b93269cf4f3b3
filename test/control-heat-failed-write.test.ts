// A heat write to the index that fails (its transaction throws: the index's
// disk full, a damaged page) is written again by the next one: the volume's
// newest kept sample goes back to the one before the failed batch, so the
// next write keeps where the I/O started. Before: the tracker took the
// failed samples as kept, the next write kept only the newest, and after a
// restart the ops of a volume busy for the last 10 min read as spread over
// the whole idle hour before: 0.15 IOPS over a 10 min window instead of 0.9
// (cold, where it was hot). Real VolumeManager and reads; the failure is
// injected once in the tracker's own index handle; sample times are explicit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { HeatTracker } from '../src/control/heat.js';
import { readVolume, tempDirClosing, openHotManager } from './helpers/volume.js';

const MiB = 1024 * 1024;
const MIN_MS = 60_000;
const HOUR_MS = 3_600_000;

/** The tracker's next write to the index throws inside its transaction, once. */
function failNextHeatWrite(heat: HeatTracker): void {
  const db = (heat as unknown as { samplesDb: { put: (...a: unknown[]) => unknown } }).samplesDb;
  const real = db.put;
  db.put = () => {
    db.put = real;
    throw Object.assign(new Error('No space left on device (injected)'), { code: 'ENOSPC' });
  };
}

test('a failed heat write is written again by the next: after a restart a volume busy for its last 10 min reads so, not spread over the idle hour', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-failed-write-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  const vol = m.openVolume('v');
  const reads = async (n: number) => {
    for (let i = 0; i < n; i++) await readVolume(vol, (i % 256) * 4096, 4096);
  };
  const t0 = Date.now() - 10 * HOUR_MS;
  const heat = new HeatTracker(m, HOUR_MS, 1_000);
  heat.sample(t0);
  await heat.persist(t0);
  for (let at = t0 + 10_000; at <= t0 + 50 * MIN_MS; at += 10_000) heat.sample(at); // idle 50 min
  await reads(300);
  failNextHeatWrite(heat);
  await heat.refresh(HOUR_MS, ['v'], t0 + 55 * MIN_MS); // the write fails (logged)
  await reads(300);
  await heat.refresh(HOUR_MS, ['v'], t0 + 60 * MIN_MS);
  assert.equal(heat.read('v', 10 * MIN_MS, t0 + 60 * MIN_MS).iops, 1, 'before the restart: 600 reads over the last 10 min');
  await m.close();

  m = await openHotManager(dir);
  const after = new HeatTracker(m, HOUR_MS, 1_000);
  after.sample(t0 + 61 * MIN_MS);
  // 51-61 min: 9 of the 10 busy minutes (540 reads, spread evenly between kept samples) and 1 min down.
  const r = after.read('v', 10 * MIN_MS, t0 + 61 * MIN_MS);
  assert.ok(r.iops !== null && Math.abs(r.iops - 0.9) < 1e-9, `10 min window after the restart: ${r.iops} IOPS, want 0.9 (${r.why ?? ''})`);
});
