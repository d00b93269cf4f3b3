// The control loop finishes a move that was aborted (or cut by a crash)
// half-way: a volume whose heat says it belongs where it is, but whose chunks
// are split between its pool and another, is moved to its own tier again,
// under dry run and the other policy switches like any move.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { HeatTracker } from '../src/control/heat.js';
import { ControlLoop } from '../src/control/loop.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { HIGH_IOPS, policyYaml, WINDOW_MS } from './helpers/control-loop.js';
import { hotWarmVolume } from './helpers/hot-warm.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 48;

test('a hot volume left split by an aborted move to warm is brought back whole onto its hot pool by the loop', async (t) => {
  // The policy names a cold tier too (the cold tier itself is not started: nothing here goes cold).
  const { dir, m, vol, want } = await hotWarmVolume(t, CHUNKS, { coldPool: true });

  // Abort the move to warm after 16 chunks (progress is reported every 16): the tier reverts to hot, switched chunks stay on warm-0.
  const ac = new AbortController();
  await assert.rejects(
    migrateVolume(m, 'v', 'warm', { preserve: false, signal: ac.signal, concurrency: 1, onProgress: (p) => p.chunksDone >= 16 && ac.abort() }),
    (err: Error) => err instanceof MigrationAborted,
  );
  assert.equal(vol.rec.tier, 'hot');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name).sort(), ['hot-0', 'warm-0']);
  assert.equal(vol.hasChunksOffPlacement(), true);

  const policiesDir = path.join(dir, 'policies');
  fs.mkdirSync(policiesDir);
  const writePolicy = (dryRun: boolean) =>
    fs.writeFileSync(path.join(policiesDir, 'tiers.yaml'), policyYaml('tiers', { warmPoolSelector: { matchLabels: { tier: 'warm' } }, dryRun }));
  writePolicy(true);
  const heat = new HeatTracker(m, 10 * WINDOW_MS, 100);
  const loop = new ControlLoop(m, { policiesDir, intervalMs: 3_600_000, preservationMode: false, heat, ecPolicyNames: () => ['standard-ec'] });
  t.after(() => loop.stop());
  // Heat above the high watermark over the policy's window: hot, where the record already is.
  const makeHot = async () => {
    heat.sample(Date.now() - WINDOW_MS - 1);
    const ops = Math.ceil((HIGH_IOPS * 2 * WINDOW_MS) / 1000);
    for (let i = 0; i < ops; i++) {
      const at = crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096;
      await readVolume(vol, at, 4096);
    }
    heat.sample();
  };
  const decision = () => {
    const st = loop.status()[0];
    const d = st?.decisions.find((x) => x.volume === 'v');
    if (!d) throw new Error(`no decision for v: ${JSON.stringify(st)}`);
    return d;
  };

  await makeHot();
  await loop.reconcile();
  await loop.settle();
  assert.equal(decision().action, 'would-migrate', decision().reason);
  assert.equal(decision().targetTier, 'hot');
  assert.match(decision().reason, /already hot, but an interrupted move left chunks on other pools: finishing it; dry run/);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name).sort(), ['hot-0', 'warm-0'], 'a dry run moved chunks');

  writePolicy(false);
  await makeHot();
  await loop.reconcile();
  await loop.settle();
  assert.equal(decision().action, 'migrate', decision().reason);
  const hist = loop.status()[0]!.migrationHistory.find((h) => h.volume === 'v');
  assert.ok(hist, JSON.stringify(loop.status()[0]));
  assert.equal(hist.result, 'succeeded', hist.error);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['hot-0']);
  assert.equal(vol.hasChunksOffPlacement(), false);
  assert.equal(fs.existsSync(m.pools.get('warm-0')!.volumeFile(vol.rec.id)), false, 'the warm file was released');
  assert.equal(m.pools.get('warm-0')!.usedBytes, 0);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the move was finished');

  // Whole again: the next pass leaves it.
  await makeHot();
  await loop.reconcile();
  assert.equal(decision().action, 'stay', decision().reason);
  assert.match(decision().reason, /already hot$/);
});
