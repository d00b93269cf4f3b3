// HeatTracker past MAX_SAMPLES_PER_VOLUME with two policies' windows: a 24 h
// one (retention grows to a day) and a 6 h one, 1 s samples. 5c57729 thinned
// by halving the older half of the list again and again while always keeping
// the oldest sample: the old end decayed geometrically until one sample was
// left hours before the next. A 6 h reading then started at that sample,
// about a day back: a volume idle for 19 h and busy (0.1 IOPS) for the last
// 6 h read ~0.024 IOPS over the 6 h window (a quarter of its heat), so a
// policy would judge it cold. Real VolumeManager and real reads; the sample
// times are given explicitly (sample(nowMs)), so 25 h take seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SAMPLES_PER_VOLUME } from '../src/control/heat.js';
import { heatTrackedVolume, readVolume } from './helpers/volume.js';

const HOUR_MS = 3_600_000;
const SAMPLE_MS = 1000;

test('thinned samples read every window over its own length: 6 h, 24 h and 1 h readings after 25 h with a day kept', async (t) => {
  const { vol, heat } = await heatTrackedVolume(t, 'review-heat-thinned-', HOUR_MS, SAMPLE_MS);
  const total = (25 * HOUR_MS) / SAMPLE_MS;
  const busyFrom = total - (6 * HOUR_MS) / SAMPLE_MS;
  const start = Date.now() - 26 * HOUR_MS;
  await heat.refresh(24 * HOUR_MS, ['v'], start); // the 24 h policy's pass
  let reads = 0;
  let maxKept = 0;
  const samples = (heat as unknown as { samples: Map<string, unknown[]> }).samples;
  for (let i = 1; i <= total; i++) {
    // Idle for 19 h, then one real 4 KiB read every 10 s (0.1 IOPS) for the last 6 h.
    if (i > busyFrom && i % 10 === 0) {
      await readVolume(vol, 0, 4096);
      reads++;
    }
    heat.sample(start + i * SAMPLE_MS);
    maxKept = Math.max(maxKept, samples.get('v')!.length);
  }
  const end = start + total * SAMPLE_MS;
  assert.ok(maxKept <= MAX_SAMPLES_PER_VOLUME + 1, `at most ${MAX_SAMPLES_PER_VOLUME} samples kept, had ${maxKept}`);

  const busyIops = reads / ((6 * HOUR_MS) / 1000);
  for (const [label, windowMs, want] of [
    ['1 h', HOUR_MS, 0.1],
    ['6 h', 6 * HOUR_MS, busyIops],
    ['12 h', 12 * HOUR_MS, reads / ((12 * HOUR_MS) / 1000)],
    ['24 h', 24 * HOUR_MS, reads / ((24 * HOUR_MS) / 1000)],
  ] as const) {
    const r = heat.read('v', windowMs, end);
    assert.notEqual(r.iops, null, `${label}: ${r.why}`);
    // Within 2 %: the first sample of the reading lies within a small fraction of the window before its start.
    assert.ok(Math.abs(r.iops! - want) <= 0.02 * want, `${label} reading ${r.iops}, want ${want}`);
  }
});
