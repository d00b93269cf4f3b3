// The control loop backs off a volume whose move failed: the next passes
// report `retry-backoff` (when it failed, why, when it is retried) instead of
// copying again, the wait doubles per failure in a row from twice the pass
// interval up to the policy's cooldown, and a success clears it (the next
// failure waits the first step again). The failure is real: the warm pool's
// volumes/ is a regular file, so the move cannot create its target file.
// The loop's clock is the test's: the backoff elapses when the test steps the
// clock, not while it sleeps, so a loaded machine cannot stretch a pass past
// a backoff; the heat readings are timed by their own samples, not by when
// a pass reads them.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { HeatTracker } from '../src/control/heat.js';
import { ControlLoop, type Decision, type HeatSource } from '../src/control/loop.js';
import { HIGH_IOPS, LOW_IOPS, policyYaml, WINDOW_MS } from './helpers/control-loop.js';
import { hotWarmVolume } from './helpers/hot-warm.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 4;
const INTERVAL_MS = 200;
const COOLDOWN_MS = 1_000;

test('a failing move is retried after a backoff (2x the pass interval, doubling, capped at the cooldown), reported as retry-backoff; a success clears it', async (t) => {
  const { dir, m, vol, want } = await hotWarmVolume(t, CHUNKS, { coldPool: true });
  const policiesDir = path.join(dir, 'policies');
  fs.mkdirSync(policiesDir);
  fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { warmPoolSelector: { matchLabels: { tier: 'warm' } }, cooldownPeriod: `${COOLDOWN_MS / 1000}s` }));
  // The real tracker, a fresh one per reading (heatAt), so each pass sees exactly the load just made.
  let tracker = new HeatTracker(m, 10 * WINDOW_MS, 100);
  // Read as of the reading's last sample, and no sample per pass (refresh): each pass sees the
  // load made over exactly the window, however long the reads or the passes took (a loaded machine).
  let readAtMs = Date.now();
  const heat: HeatSource = { refresh: async () => undefined, read: (volume, windowMs) => tracker.read(volume, windowMs, readAtMs) };
  // Passes run only when the test calls reconcile(); intervalMs sets the backoff's first step.
  let clockMs = Date.now();
  const loop = new ControlLoop(m, { policiesDir, intervalMs: INTERVAL_MS, preservationMode: false, heat, ecPolicyNames: () => ['standard-ec'], clock: () => clockMs });
  t.after(() => loop.stop());

  // `iops` read ops spread over the policy's window, as the heat tracker sees them.
  const heatAt = async (iops: number) => {
    tracker = new HeatTracker(m, 10 * WINDOW_MS, 100);
    readAtMs = Date.now();
    tracker.sample(readAtMs - WINDOW_MS - 1);
    for (let i = 0; i < Math.ceil((iops * WINDOW_MS) / 1000); i++) await readVolume(vol, crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, 4096);
    tracker.sample(readAtMs);
  };
  const warm = () => heatAt((LOW_IOPS + HIGH_IOPS) / 2);
  const hot = () => heatAt(HIGH_IOPS * 2);
  const pass = async (): Promise<Decision> => {
    await loop.reconcile();
    await loop.settle();
    const d = loop.status()[0]?.decisions.find((x) => x.volume === 'v');
    assert.ok(d, JSON.stringify(loop.status()));
    return d;
  };
  const history = () => loop.status()[0]!.migrationHistory.map((h) => `${h.from}->${h.to}:${h.result}`);
  const breakPool = (pool: string) => {
    const volumes = path.join(dir, pool, 'volumes');
    fs.rmSync(volumes, { recursive: true, force: true });
    fs.writeFileSync(volumes, 'not a directory');
  };
  const repairPool = (pool: string) => {
    const volumes = path.join(dir, pool, 'volumes');
    fs.rmSync(volumes, { force: true });
    fs.mkdirSync(volumes);
  };
  const backoff = (d: Decision, failures: number, backoffS: string) => {
    assert.equal(d.action, 'retry-backoff', d.reason);
    assert.match(d.reason, new RegExp(`; last move failed at \\d{4}-\\d\\d-\\d\\dT\\S+Z \\(${failures} in a row\\), retry in \\d+\\.\\ds \\(backoff ${backoffS.replace('.', '\\.')}s\\): \\S`));
  };

  breakPool('warm-0');
  // Each step: the move fails; until its backoff has passed, passes only report it.
  const steps = [
    { failures: 1, backoffMs: 2 * INTERVAL_MS },
    { failures: 2, backoffMs: 4 * INTERVAL_MS },
    { failures: 3, backoffMs: COOLDOWN_MS }, // 8x the interval, capped at the cooldown
  ];
  for (const s of steps) {
    await warm();
    const d = await pass();
    assert.equal(d.action, 'migrate', d.reason);
    assert.equal(history().length, s.failures);
    assert.equal(history()[s.failures - 1], 'hot->warm:failed');
    // Passes inside the backoff (at its start and 1 ms before its end): no copy starts, nothing new in the history.
    for (const atMs of [0, s.backoffMs - 1]) {
      const savedMs = clockMs;
      clockMs += atMs;
      const again = await pass();
      clockMs = savedMs;
      backoff(again, s.failures, (s.backoffMs / 1000).toFixed(1));
      assert.ok(again.reason.includes(loop.status()[0]!.migrationHistory.at(-1)!.error!), again.reason);
      assert.equal(history().length, s.failures, 'a move started during its backoff');
    }
    assert.equal(loop.totals.failed, s.failures);
    clockMs += s.backoffMs;
  }
  assert.equal(vol.rec.tier, 'hot');

  // Repaired: still in backoff until it ends, then one retry that succeeds.
  await warm();
  let d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'hot->warm:failed');
  repairPool('warm-0');
  backoff(await pass(), 4, (COOLDOWN_MS / 1000).toFixed(1));
  clockMs += COOLDOWN_MS;
  await warm();
  d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'hot->warm:succeeded', JSON.stringify(loop.status()[0]!.migrationHistory.at(-1)));
  assert.equal(vol.rec.tier, 'warm');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the move');

  // A success clears the backoff: back to hot (a success too), then the next failed move to
  // warm (warm-0's volumes/ broken again) waits the first step again, not the 5th failure's.
  await hot();
  d = await pass();
  assert.equal(d.action, 'cooldown', d.reason);
  clockMs += COOLDOWN_MS; // the success's cooldown
  d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'warm->hot:succeeded');
  breakPool('warm-0');
  clockMs += COOLDOWN_MS;
  await warm();
  d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'hot->warm:failed');
  backoff(await pass(), 1, (2 * INTERVAL_MS / 1000).toFixed(1));
  assert.equal(vol.rec.tier, 'hot');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the failed moves');
});
