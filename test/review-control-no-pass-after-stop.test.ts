// Review of 55bb538 (ControlLoop.stop() aborts the moves in flight): a pass
// asked for after stop() (POST /v1/reconcile: the admin API closes only after
// the loop, NBD and the rebuilds in Daemon.stop) must start nothing. Before,
// reconcile() had no stop check: the pass ran and started a move that
// nothing awaited any more (stop() had already waited for the moves in
// flight), so its SWITCHes, or with the stop's abort its revert and hole
// punch, ran beside the daemon closing the manager and the index under it.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { HeatTracker } from '../src/control/heat.js';
import { ControlLoop, type HeatSource } from '../src/control/loop.js';
import { HIGH_IOPS, LOW_IOPS, policyYaml, WINDOW_MS } from './helpers/control-loop.js';
import { hotWarmVolume } from './helpers/hot-warm.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 4;

test('a pass asked for after stop() starts no move: the volume stays on its tier, no migration in flight or in the history', async (t) => {
  const { dir, m, vol } = await hotWarmVolume(t, CHUNKS, { coldPool: true });
  const policiesDir = path.join(dir, 'policies');
  fs.mkdirSync(policiesDir);
  fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { warmPoolSelector: { matchLabels: { tier: 'warm' } } }));
  // Warm load over the window: a pass moves v hot -> warm.
  const tracker = new HeatTracker(m, 10 * WINDOW_MS, 100);
  const readAtMs = Date.now();
  tracker.sample(readAtMs - WINDOW_MS - 1);
  for (let i = 0; i < Math.ceil((((LOW_IOPS + HIGH_IOPS) / 2) * WINDOW_MS) / 1000); i++) await readVolume(vol, crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, 4096);
  tracker.sample(readAtMs);
  const heat: HeatSource = { refresh: async () => undefined, read: (volume, windowMs) => tracker.read(volume, windowMs, readAtMs) };
  const loop = new ControlLoop(m, { policiesDir, intervalMs: 3_600_000, preservationMode: false, heat, ecPolicyNames: () => ['standard-ec'] });
  await loop.stop();
  await loop.reconcile(); // the admin API's POST /v1/reconcile during Daemon.stop
  assert.equal(loop.activeMigrations(), 0, 'no move started after stop()');
  await loop.settle();
  assert.deepEqual(loop.status().flatMap((p) => p.migrationHistory), [], 'nothing in the history');
  assert.equal(m.getVolumeRecord('v')!.tier, 'hot');
});
