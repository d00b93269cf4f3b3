// Heat samples in the index that are not this build's (another layout, a
// damaged value, counters that fall) never stop a start nor read as a heat:
// they are dropped with a log line and removed at the next write, and the
// volume's reading comes from the samples that are whole. Before: a value
// that did not decode threw out of the first sample (HeatTracker.start) and
// the daemon never started; a value of another shape made the volume's
// counts NaN for good ("NaN IOPS between watermarks": a move to warm where
// a warm tier exists), and counters below an earlier sample's read as
// negative IOPS (cold).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { open } from 'lmdb';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { HEAT_SAMPLES_DB, HEAT_STATE_DB, HeatTracker } from '../src/control/heat.js';
import { createVolume, decisionFor, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, WINDOW_SETTLE_MS } from './helpers/control-loop.js';
import { readVolume, tempDirClosing } from './helpers/volume.js';
import type { TestDaemon } from './helpers/daemon.js';

const MiB = 1024 * 1024;

test('a heat value in the index that does not decode: the daemon starts, logs it, and reads the volume from the rest', async (t) => {
  const policies = { 'tiering.yaml': policyYaml('tiering', { dryRun: true }) };
  const first = await startControlDaemon({ policies });
  let second: TestDaemon | null = null;
  t.after(async () => {
    await second?.kill();
    await first.cleanup();
  });
  const rec = await createVolume(first, 'v', MiB);
  const createdMs = Date.now();
  await reconcile(first, false); // a pass: v's samples written (from its creation)
  assert.equal(await first.stop(), 0);

  // While it is down: a value that is not MessagePack under one of v's keys (a damaged page, another build).
  const root = open({ path: path.join(first.dataDir, 'meta'), maxDbs: 64 });
  const raw = root.openDB<Buffer, [number, number]>({ name: HEAT_SAMPLES_DB, encoding: 'binary' });
  const keys = [...raw.getKeys({ start: [rec.id, 0], end: [rec.id + 1, 0] })];
  assert.ok(keys.length >= 1, 'v has kept samples');
  const damagedAt = keys[keys.length - 1]![1] + 1;
  await raw.put([rec.id, damagedAt], Buffer.from([0x92, 0x01])); // an array of 2 with one element
  await root.close();

  const d = (second = await startControlDaemon({ policies, dataDir: first.dataDir }));
  assert.match(d.stderr, /heat samples in the index not of this build dropped.*entries=1/);
  // The kept samples (from v's creation) and the new ones cover a window: the time down is part of it.
  await sleep(createdMs + WINDOW_SETTLE_MS - Date.now());
  const v = decisionFor(policyNamed(await reconcile(d, false), 'tiering'), 'v');
  assert.equal(v.iops, 0, `${v.action}: ${v.reason}`);
  assert.equal(`${v.action} ${v.targetTier}`, 'would-migrate cold', v.reason);
});

test('another shape of value, falling counters or a retention that is not a number: dropped, never read as a heat, the index cleaned', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-kept-damaged-', () => m ?? { close: async () => undefined });
  const openManager = async () => {
    const vm = VolumeManager.open(path.join(dir, 'meta'));
    await vm.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
    return vm;
  };
  m = await openManager();
  const a = await m.createVolume({ name: 'a', sizeBytes: MiB });
  const b = await m.createVolume({ name: 'b', sizeBytes: MiB });
  const t0 = Date.now() - 60_000;
  const heat = new HeatTracker(m, 60_000, 100);
  heat.sample(t0);
  const vol = m.openVolume('a');
  for (let i = 0; i < 20; i++) await readVolume(vol, i * 4096, 4096);
  await heat.refresh(10_000, ['a', 'b'], t0 + 10_000);
  const db = m.meta.openDB<unknown, [number, number]>(HEAT_SAMPLES_DB);
  // a: a sample of another layout after its last; b: counters far above the next one's (a damaged older
  // sample): b keeps none, its window starts again (no reading, so no move).
  await db.put([a.id, t0 + 11_000], { readOps: 25, writeOps: 0 });
  await db.put([b.id, t0 + 5_000], [1_000_000, 0]);
  await m.meta.openDB<unknown, string>(HEAT_STATE_DB).put('retainMs', 'an hour');
  await m.close();

  m = await openManager();
  const after = new HeatTracker(m, 60_000, 100);
  after.sample(t0 + 12_000);
  const ra = after.read('a', 12_000, t0 + 12_000);
  assert.equal(ra.iops, 20 / 12, `a: its 20 reads over 12 s (read ${ra.iops}: ${ra.why})`);
  // Read from the damaged sample's span (before: interpolated from it, -67,000 IOPS).
  const rb = after.read('b', 9_000, t0 + 12_000);
  assert.equal(rb.iops, null, `b: no reading (read ${rb.iops}: ${rb.why})`);
  after.sample(t0 + 13_000);
  assert.equal(after.read('b', 1_000, t0 + 13_000).iops, 0, 'b over its new samples: idle');
  assert.equal(after.retainMs, 60_000);
  await after.persist(t0 + 12_000);
  const left = [...m.meta.openDB<unknown, [number, number]>(HEAT_SAMPLES_DB).getRange()].map(({ key, value }) => JSON.stringify([key, value]));
  assert.ok(!left.some((e) => e.includes('readOps') || e.includes('1000000')), `removed from the index: ${left.join(' ')}`);
  assert.equal(m.meta.openDB<unknown, string>(HEAT_STATE_DB).get('retainMs'), 60_000);
});
