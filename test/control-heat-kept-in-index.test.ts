// The heat tracker's samples kept in the index (control-heat-samples): a
// restart (a new VolumeManager on the same data directory, whose volumes'
// counters start again at 0) continues each volume's cumulative series from
// the index, so the first reading after it covers the window from before it,
// and the time the daemon was down reads as no I/O (not a negative or a huge
// delta). A volume deleted and created again under its name has none of the
// old one's heat, in memory or in the index, also when deleted while the
// daemon was down. The index keeps at most MAX_PERSISTED_SAMPLES_PER_VOLUME
// per volume. Real VolumeManager, real reads; sample times are explicit.
// Before: the samples were in memory only, every reading after a restart was
// null ("no samples yet") for a whole window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { HEAT_SAMPLES_DB, HeatTracker, MAX_PERSISTED_SAMPLES_PER_VOLUME } from '../src/control/heat.js';
import { readVolume, tempDirClosing, openHotManager } from './helpers/volume.js';

const MiB = 1024 * 1024;
const SAMPLE_MS = 100;

/** A manager over `dir` with one hot pool (its record re-put at each open, as the daemon's start does). */
async function reads(m: VolumeManager, name: string, n: number): Promise<void> {
  const vol = m.openVolume(name);
  for (let i = 0; i < n; i++) await readVolume(vol, (i % 256) * 4096, 4096);
}

/** Persisted sample keys of volume id `id`. */
function persistedKeys(m: VolumeManager, id: number): [number, number][] {
  return [...m.meta.openDB<[number, number], [number, number]>(HEAT_SAMPLES_DB).getKeys({ start: [id, 0], end: [id + 1, 0] })];
}

test('after a restart the reading covers the window from before it: counters start at 0 again, the series continues, the time down reads as no I/O', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-kept-restart-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  const t0 = Date.now() - 60_000;
  const before = new HeatTracker(m, 60_000, SAMPLE_MS);
  before.sample(t0);
  await reads(m, 'v', 50);
  await before.refresh(20_000, ['v'], t0 + 5_000); // a pass: samples and writes to the index
  await reads(m, 'v', 30);
  await before.refresh(20_000, ['v'], t0 + 10_000);
  const atStop = before.read('v', 10_000, t0 + 10_000);
  assert.equal(atStop.iops, 8, `before the restart: 80 ops over 10 s (${atStop.why})`);
  await m.close();

  // The restart: a new process's counters (the volume opens with 0), 2 s down.
  m = await openHotManager(dir);
  const after = new HeatTracker(m, 60_000, SAMPLE_MS);
  after.sample(t0 + 12_000);
  await reads(m, 'v', 10);
  after.sample(t0 + 14_000);
  const cases: [string, number, number][] = [
    ['the whole 14 s', 14_000, (50 + 30 + 10) / 14],
    ['10 s from the second pass', 9_000, (30 + 10) / 9],
    ['4 s: the 2 s down (no I/O) and 10 ops after', 4_000, 10 / 4],
    ['2 s after the restart', 2_000, 10 / 2],
  ];
  for (const [label, windowMs, want] of cases) {
    const r = after.read('v', windowMs, t0 + 14_000);
    assert.notEqual(r.iops, null, `${label}: ${r.why}`);
    assert.ok(Math.abs(r.iops! - want) < 1e-9, `${label}: read ${r.iops} IOPS, want ${want}`);
  }
  // The restored series goes on being kept: a third process reads all of it too.
  await after.persist(t0 + 14_000);
  await m.close();
  m = await openHotManager(dir);
  const third = new HeatTracker(m, 60_000, SAMPLE_MS);
  third.sample(t0 + 15_000);
  assert.equal(third.read('v', 15_000, t0 + 15_000).iops, 90 / 15);
});

test('a volume deleted and created again under its name has none of the old heat, in memory or in the index, also deleted while the daemon was down', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-kept-recreated-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  const old = await m.createVolume({ name: 'v', sizeBytes: MiB });
  const gone = await m.createVolume({ name: 'w', sizeBytes: MiB });
  const t0 = Date.now() - 60_000;
  const heat = new HeatTracker(m, 60_000, SAMPLE_MS);
  heat.sample(t0);
  await reads(m, 'v', 40);
  await reads(m, 'w', 40);
  await heat.refresh(10_000, ['v', 'w'], t0 + 5_000);
  assert.ok(persistedKeys(m, old.id).length >= 2 && persistedKeys(m, gone.id).length >= 2, 'both volumes kept in the index');

  await m.deleteVolume('v');
  const fresh = await m.createVolume({ name: 'v', sizeBytes: MiB });
  assert.notEqual(fresh.id, old.id);
  heat.sample(t0 + 6_000);
  await reads(m, 'v', 5);
  heat.sample(t0 + 7_000);
  // Its samples start at its creation: a window reaching before it is not covered.
  const r = heat.read('v', 5_000, t0 + 7_000);
  assert.equal(r.iops, null, `the new volume has no reading over 5 s yet, read ${r.iops}`);
  assert.equal(heat.read('v', 1_000, t0 + 7_000).iops, 5, 'its own 5 ops over its own 1 s');
  await heat.persist(t0 + 7_000);
  assert.deepEqual(persistedKeys(m, old.id), [], 'the deleted volume\'s samples are gone from the index');
  assert.ok(persistedKeys(m, fresh.id).length >= 1);
  await m.close();

  // w deleted while no tracker runs (the daemon down): the next start drops its samples.
  m = await openHotManager(dir);
  await m.deleteVolume('w');
  const next = new HeatTracker(m, 60_000, SAMPLE_MS);
  next.sample(t0 + 8_000);
  const rv = next.read('v', 2_000, t0 + 8_000);
  assert.equal(rv.iops, 5 / 2, `the new v's own heat after the restart (${rv.why})`);
  assert.equal(next.read('v', 5_000, t0 + 8_000).iops, null, 'nothing of the old v');
  await next.persist(t0 + 8_000);
  assert.deepEqual(persistedKeys(m, gone.id), [], 'samples of a volume deleted while down are dropped at the next start');
});

test(`the index keeps at most ${MAX_PERSISTED_SAMPLES_PER_VOLUME} samples a volume, thinned by age: a 1 h reading after a restart stays within 3 %`, async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-kept-bound-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  const rec = await m.createVolume({ name: 'v', sizeBytes: MiB });
  const HOUR_MS = 3_600_000;
  const PASS_MS = 10_000;
  const t0 = Date.now() - 2 * HOUR_MS;
  const heat = new HeatTracker(m, HOUR_MS, 1_000);
  heat.sample(t0);
  // A pass every 10 s for an hour, 2 reads in each: 360 passes, each writing a sample.
  let most = 0;
  for (let at = t0 + PASS_MS; at <= t0 + HOUR_MS; at += PASS_MS) {
    await reads(m, 'v', 2);
    await heat.refresh(HOUR_MS, ['v'], at);
    most = Math.max(most, persistedKeys(m, rec.id).length);
  }
  assert.ok(most <= MAX_PERSISTED_SAMPLES_PER_VOLUME, `the index held ${most} samples of v`);
  await m.close();
  m = await openHotManager(dir);
  const after = new HeatTracker(m, HOUR_MS, 1_000);
  const end = t0 + HOUR_MS + 1_000;
  after.sample(end);
  const want = 720 / 3600;
  for (const windowMs of [HOUR_MS, HOUR_MS / 2, HOUR_MS / 6]) {
    const r = after.read('v', windowMs, end);
    assert.notEqual(r.iops, null, r.why);
    const w = (want * (windowMs - 1_000)) / windowMs; // the last second: down, no I/O
    assert.ok(Math.abs(r.iops! - w) <= 0.03 * w, `${windowMs / 1000}s window read ${r.iops} IOPS, want ${w}`);
  }
});

test('a volume a background pass opened and closed again keeps the ops it served: counted at the next sample, kept across a restart', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-kept-closed-', () => m ?? { close: async () => undefined });
  m = await openHotManager(dir);
  await m.createVolume({ name: 'c', sizeBytes: MiB });
  const t0 = Date.now() - 60_000;
  const heat = new HeatTracker(m, 60_000, SAMPLE_MS);
  heat.sample(t0);
  // Lent to a pass (as a pool rebuild borrows one), read through, given back: closed (nothing holds it).
  const lent = m.borrowVolume('c');
  for (let i = 0; i < 30; i++) await readVolume(lent, i * 4096, 4096);
  m.giveBack(lent);
  assert.ok(!m.openVolumes().some((v) => v.name === 'c'), 'closed once given back');
  heat.sample(t0 + 2_000);
  assert.equal(heat.read('c', 2_000, t0 + 2_000).iops, 15, 'the 30 reads of the closed volume, over 2 s');
  // Opened again (its counters carried over): only the new reads are new.
  await reads(m, 'c', 10);
  await heat.refresh(10_000, ['c'], t0 + 4_000);
  assert.equal(heat.read('c', 4_000, t0 + 4_000).iops, 10, '40 reads over 4 s');
  await m.close();
  m = await openHotManager(dir);
  const after = new HeatTracker(m, 60_000, SAMPLE_MS);
  after.sample(t0 + 5_000);
  assert.equal(after.read('c', 5_000, t0 + 5_000).iops, 8, '40 reads over 5 s after the restart');
});
