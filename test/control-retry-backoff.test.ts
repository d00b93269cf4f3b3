// The control loop backs off a volume whose move failed: the next passes
// report `retry-backoff` (when it failed, why, when it is retried) instead of
// copying again, the wait doubles per failure in a row from twice the pass
// interval up to the policy's cooldown, and a success clears it (the next
// failure waits the first step again). The failure is real: the warm pool's
// volumes/ is a regular file, so the move cannot create its target file.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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
  const heat: HeatSource = { refresh: () => tracker.refresh(), read: (volume, windowMs) => tracker.read(volume, windowMs) };
  // Passes run only when the test calls reconcile(); intervalMs sets the backoff's first step.
  const loop = new ControlLoop(m, { policiesDir, intervalMs: INTERVAL_MS, preservationMode: false, heat, ecPolicyNames: () => ['standard-ec'] });
  t.after(() => loop.stop());

  // `iops` read ops spread over the policy's window, as the heat tracker sees them.
  const heatAt = async (iops: number) => {
    tracker = new HeatTracker(m, 10 * WINDOW_MS, 100);
    tracker.sample(Date.now() - WINDOW_MS - 1);
    for (let i = 0; i < Math.ceil((iops * WINDOW_MS) / 1000); i++) await readVolume(vol, crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, 4096);
    tracker.sample();
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
  // Each step: the move fails; until its backoff has passed, passes only report it. The
  // sleeps are the backoff itself elapsing (nothing signals "time has passed").
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
    const failedAt = Date.now();
    // Two more passes inside the backoff: no copy starts, nothing new in the history.
    // (The reading just made stays between the watermarks for these: no new load, so the passes take milliseconds.)
    for (let i = 0; i < 2; i++) {
      const again = await pass();
      if (Date.now() - failedAt >= s.backoffMs) assert.fail(`the passes took longer than the ${s.backoffMs} ms backoff: machine too slow for this check`);
      backoff(again, s.failures, (s.backoffMs / 1000).toFixed(1));
      assert.ok(again.reason.includes(loop.status()[0]!.migrationHistory.at(-1)!.error!), again.reason);
      assert.equal(history().length, s.failures, 'a move started during its backoff');
    }
    assert.equal(loop.totals.failed, s.failures);
    await sleep(s.backoffMs + 50 - (Date.now() - failedAt));
  }
  assert.equal(vol.rec.tier, 'hot');

  // Repaired: still in backoff until it ends, then one retry that succeeds.
  await warm();
  let d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'hot->warm:failed');
  repairPool('warm-0');
  const failedAt = Date.now();
  backoff(await pass(), 4, (COOLDOWN_MS / 1000).toFixed(1));
  await sleep(COOLDOWN_MS + 50 - (Date.now() - failedAt));
  await warm();
  d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'hot->warm:succeeded', JSON.stringify(loop.status()[0]!.migrationHistory.at(-1)));
  assert.equal(vol.rec.tier, 'warm');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the move');

  // A success clears the backoff: the next failure (back to hot, hot-0's volumes/ broken) waits the first step again.
  breakPool('hot-0');
  await sleep(COOLDOWN_MS + 50); // the success's cooldown
  await hot();
  d = await pass();
  assert.equal(d.action, 'migrate', d.reason);
  assert.equal(history().at(-1), 'warm->hot:failed');
  backoff(await pass(), 1, (2 * INTERVAL_MS / 1000).toFixed(1));
  assert.equal(vol.rec.tier, 'warm');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the failed moves');
});
