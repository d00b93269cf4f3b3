// The heat sampler's ticks read only the volumes whose counters can have
// moved, and an idle volume gets no sample (its idle run is its last sample
// and the last tick's time): an idle volume holds 1 or 2 samples however
// long it idles, not one a second. Its heat decays exactly as with a sample
// a second: the readings below are the per-second sampler's (the build
// before, sample() at every tick: checked with it). Real VolumeManager, real
// reads; tick times are explicit.
// Before: every tick walked every volume in the index and pushed a sample
// for each (idle: 41 samples each after these 40 ticks; 10,000 idle volumes
// took the 4 KiB read p99.99 from 15.9 to 27.9 ms).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeatTracker } from '../src/control/heat.js';
import { readVolume, tempDirClosing, openHotManager } from './helpers/volume.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';

const MiB = 1024 * 1024;

test('idle volumes get no sample at a tick; busy, idle and resumed volumes read as with a sample a second', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-idle-sampler-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  for (const name of ['busy', 'open-idle', 'closed-idle']) await m.createVolume({ name, sizeBytes: MiB });
  const busy = m.openVolume('busy');
  m.openVolume('open-idle'); // open all along, no I/O
  const t0 = Date.now() - 120_000;
  const heat = new HeatTracker(m, 60_000, 1_000);
  heat.sample(t0);
  // busy: 10 reads before each of ticks 1-10, idle until tick 30, 10 reads before it, idle again.
  for (let k = 1; k <= 40; k++) {
    if (k <= 10 || k === 30) for (let i = 0; i < 10; i++) await readVolume(busy, i * 4096, 4096);
    heat.tick(t0 + k * 1_000);
  }
  const at = t0 + 40_000;
  // [volume, window, IOPS]: each the per-second sampler's reading (the build before).
  const cases: [string, number, number | null][] = [
    ['busy', 40_000, 110 / 40],
    ['busy', 35_000, 60 / 35],
    ['busy', 31_000, 20 / 31],
    ['busy', 30_500, 10 / 30], // from the first sample inside: 10 s (within a sample interval of the start)
    ['busy', 20_000, 10 / 20],
    ['busy', 12_000, 10 / 12], // the window starts inside the idle run: interpolated, exact
    ['busy', 11_000, 10 / 11],
    ['busy', 10_500, 0], // from tick 30's sample, 0.5 s after the start
    ['busy', 10_000, 0],
    ['open-idle', 40_000, 0],
    ['closed-idle', 40_000, 0],
    ['closed-idle', 5_000, 0],
    ['closed-idle', 42_000, null], // not covered: no reading
  ];
  for (const [volume, windowMs, want] of cases) {
    const r = heat.read(volume, windowMs, at);
    if (want === null) assert.equal(r.iops, null, `${volume} over ${windowMs} ms: ${r.iops}`);
    else assert.ok(r.iops !== null && Math.abs(r.iops - want) < 1e-9, `${volume} over ${windowMs} ms: ${r.iops} (${r.why}), want ${want}`);
  }
  // Held: busy's 11 samples of its first 10 s, the end of its idle run and tick 30's; the idle ones their first.
  assert.equal(heat.samplesHeld('busy'), 13);
  assert.equal(heat.samplesHeld('open-idle'), 1);
  assert.equal(heat.samplesHeld('closed-idle'), 1);

  // A volume closed once idle and reopened for I/O between two ticks: seen at the next tick by its counters at the close.
  const c = m.borrowVolume('closed-idle');
  for (let i = 0; i < 20; i++) await readVolume(c, i * 4096, 4096);
  m.giveBack(c);
  assert.ok(!m.openVolumes().some((v) => v.name === 'closed-idle'), 'closed at its last loan\'s end');
  heat.tick(t0 + 41_000);
  const r = heat.read('closed-idle', 2_000, t0 + 41_000);
  assert.equal(r.iops, 10, `closed-idle: its 20 reads in the last second, over 2 s (${r.why})`);
  assert.equal(heat.read('closed-idle', 1_000, t0 + 41_000).iops, 20);
});
