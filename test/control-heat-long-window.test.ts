// A StoragePolicy's samplingWindow longer than an hour (the heat tracker's
// initial retention) or than MAX_SAMPLES_PER_VOLUME samples: the reading
// covers the whole window, or is unknown until the daemon has been up that
// long. Before, samples were dropped oldest first past 3600 of them (an hour
// at the default 1 s sampling), so a 2 h or 24 h window was read over the
// last hour: a volume busy in the first hour and idle in the second read
// 0 IOPS and was judged cold, and a daemon up 2 h claimed a full 24 h reading.
// Real VolumeManager and real reads; the sample times are given explicitly
// (sample(nowMs)), so two hours of 1 s samples take no two hours.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SAMPLES_PER_VOLUME } from '../src/control/heat.js';
import { heatTrackedVolume, readVolume } from './helpers/volume.js';

const HOUR_MS = 3_600_000;
const SAMPLE_MS = 1000;

test('a 2 h samplingWindow reads the whole 2 h, and a 24 h one is unknown after 2 h, however many samples', async (t) => {
  // Retention starts at an hour, as the daemon's; the loop's first pass asks for 2 h.
  const { vol, heat } = await heatTrackedVolume(t, 'heat-long-window-', HOUR_MS, SAMPLE_MS);
  const start = Date.now() - 3 * HOUR_MS;
  await heat.refresh(2 * HOUR_MS, ['v'], start);
  let reads = 0;
  const samples = (2 * HOUR_MS) / SAMPLE_MS;
  for (let i = 1; i <= samples; i++) {
    // First hour: one real 4 KiB read every 10 s (0.1 IOPS); second hour idle.
    if (i <= samples / 2 && i % 10 === 0) {
      await readVolume(vol, 0, 4096);
      reads++;
    }
    heat.sample(start + i * SAMPLE_MS);
  }
  assert.ok(samples > MAX_SAMPLES_PER_VOLUME);
  const end = start + samples * SAMPLE_MS;

  const twoHours = heat.read('v', 2 * HOUR_MS, end);
  assert.notEqual(twoHours.iops, null, twoHours.why);
  // 360 reads over 2 h: 0.05 IOPS. Read over the last hour only, it was 0.
  assert.ok(Math.abs(twoHours.iops! - reads / ((2 * HOUR_MS) / 1000)) < 0.005, `2 h reading ${twoHours.iops}, want ${reads / 7200}`);

  const lastHour = heat.read('v', HOUR_MS, end);
  assert.equal(lastHour.iops, 0, 'the idle second hour reads 0');

  // Asked for a day after two hours: not known yet (it read 0, a full window, before).
  const day = heat.read('v', 24 * HOUR_MS, end);
  assert.equal(day.iops, null);
  assert.match(day.why ?? '', /heat measured over 7200s of a 86400s window/);
});
