// The clock set back (NTP stepping it at a boot, a VM restored from a
// snapshot) below the heat samples' times, at a restart or while the daemon
// runs. Past CLOCK_BACK_TOLERANCE_MS the volume's samples are dropped and its
// window starts again (no reading, so no move, until the new samples cover
// it); within it only the samples ahead of the clock go. Either way the
// samples go on being kept in the index. Before: the kept series went on
// from the sample ahead of the clock, so the ops of the whole step were read
// as done in the minute after the last sample before it (a volume read twice
// as busy over a 1 h window after a 1 h step: a cold volume judged hot), and
// nothing more was written to the index until the clock passed that sample
// (a restart meanwhile lost every sample since the step). Real VolumeManager
// and reads; sample times are explicit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { CLOCK_BACK_TOLERANCE_MS, HEAT_SAMPLES_DB, HeatTracker } from '../src/control/heat.js';
import { readVolume, tempDirClosing, openHotManager } from './helpers/volume.js';

const MiB = 1024 * 1024;
const MIN_MS = 60_000;
const HOUR_MS = 3_600_000;

async function reads(m: VolumeManager, n: number): Promise<void> {
  const vol = m.openVolume('v');
  for (let i = 0; i < n; i++) await readVolume(vol, (i % 256) * 4096, 4096);
}

function keptTimes(m: VolumeManager, id: number): number[] {
  return [...m.meta.openDB<[number, number], [number, number]>(HEAT_SAMPLES_DB).getKeys({ start: [id, 0], end: [id + 1, 0] })].map((k) => k[1]);
}

/** v read 10 times every 10 min for 2 h (1/60 IOPS), kept at each pass; returns the manager (closed) and the time of the last pass. */
async function twoBusyHours(dir: string, t0: number): Promise<{ id: number; endMs: number }> {
  const m = await openHotManager(dir);
  const { id } = await m.createVolume({ name: 'v', sizeBytes: MiB });
  const heat = new HeatTracker(m, HOUR_MS, 1_000);
  heat.sample(t0);
  for (let k = 1; k <= 12; k++) {
    await reads(m, 10);
    await heat.refresh(HOUR_MS, ['v'], t0 + k * 10 * MIN_MS);
  }
  await m.close();
  return { id, endMs: t0 + 2 * HOUR_MS };
}

test('a restart with the clock set back 1 h: no reading until the window is covered again (not twice the heat), and the samples after it are kept', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-clock-back-', () => m ?? { close: async () => undefined });
  const t0 = Date.now() - 10 * HOUR_MS;
  const { id, endMs } = await twoBusyHours(dir, t0);

  // Down 1 min, and the clock 1 h behind: it reads endMs - 59 min.
  m = await openHotManager(dir);
  const nowMs = endMs - HOUR_MS + MIN_MS;
  const after = new HeatTracker(m, HOUR_MS, 1_000);
  after.sample(nowMs);
  const r = after.read('v', HOUR_MS, nowMs);
  assert.equal(r.iops, null, `1 h window just after the step: read ${r.iops} IOPS (true rate ${1 / 60}): ${r.why}`);
  await reads(m, 10);
  await after.refresh(HOUR_MS, ['v'], nowMs + 10 * MIN_MS);
  assert.deepEqual(keptTimes(m, id), [nowMs, nowMs + 10 * MIN_MS], 'the index: the samples since the step only');
  await m.close();

  // Another restart 1 min later: the 10 reads since the step are there.
  m = await openHotManager(dir);
  const third = new HeatTracker(m, HOUR_MS, 1_000);
  const thenMs = nowMs + 11 * MIN_MS;
  third.sample(thenMs);
  assert.equal(third.read('v', 11 * MIN_MS, thenMs).iops, 10 / 660);
});

test('the clock set back 1 h while the daemon runs: no reading until covered again, then the new samples only', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-clock-back-running-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  const { id } = await m.createVolume({ name: 'v', sizeBytes: MiB });
  const t0 = Date.now() - 10 * HOUR_MS;
  const heat = new HeatTracker(m, HOUR_MS, 1_000);
  heat.sample(t0);
  for (let k = 1; k <= 12; k++) {
    await reads(m, 10);
    await heat.refresh(HOUR_MS, ['v'], t0 + k * 10 * MIN_MS);
  }
  const stepMs = t0 + HOUR_MS + MIN_MS; // 1 h minus 1 min back
  await reads(m, 10);
  await heat.refresh(HOUR_MS, ['v'], stepMs);
  const r = heat.read('v', HOUR_MS, stepMs);
  assert.equal(r.iops, null, `1 h window just after the step: read ${r.iops} IOPS (true rate ${1 / 60}): ${r.why}`);
  await reads(m, 5);
  await heat.refresh(HOUR_MS, ['v'], stepMs + 10 * MIN_MS);
  assert.equal(heat.read('v', 10 * MIN_MS, stepMs + 10 * MIN_MS).iops, 5 / 600);
  assert.deepEqual(keptTimes(m, id), [stepMs, stepMs + 10 * MIN_MS], 'the index: the samples since the step only');
});

test(`a restart with the clock set back less than ${CLOCK_BACK_TOLERANCE_MS / 1000} s: the window before it is read, the samples after it kept`, async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-clock-back-small-', () => m ?? { close: async () => undefined });
  const t0 = Date.now() - 10 * HOUR_MS;
  const { id, endMs } = await twoBusyHours(dir, t0);

  m = await openHotManager(dir);
  const nowMs = endMs - 5_000; // restarted within the second, the clock 5 s back
  const after = new HeatTracker(m, HOUR_MS, 1_000);
  after.sample(nowMs);
  const r = after.read('v', HOUR_MS, nowMs);
  assert.notEqual(r.iops, null, r.why);
  assert.ok(Math.abs(r.iops! - 1 / 60) < 0.01 / 60, `1 h window: ${r.iops} IOPS, want ${1 / 60}`);
  await reads(m, 10);
  await after.refresh(HOUR_MS, ['v'], nowMs + 10 * MIN_MS);
  const kept = keptTimes(m, id);
  assert.ok(!kept.includes(endMs), `the sample ahead of the clock is dropped: ${kept.map((x) => x - t0).join(' ')}`);
  assert.equal(kept[kept.length - 1], nowMs + 10 * MIN_MS, 'the sample after the step is kept');
});
