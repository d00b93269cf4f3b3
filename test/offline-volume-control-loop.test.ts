// A control-loop pass decides for every volume of every policy. One volume
// that cannot be opened (its hot pool's directory gone, as when a disk drops
// out) gets an 'unavailable' decision naming its pool, is counted and logged
// once a pass, and the volumes after it still get their decisions. Before,
// the pass ended at that volume: the volumes after it were never decided on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ControlLoop } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { policyYaml } from './helpers/control-loop.js';
import { coldVolumeOnHot1, openColdTierManager, tempDirClosing } from './helpers/volume.js';
import { stderrLines } from './helpers/stderr.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 2_000;
const SAMPLE_INTERVAL_MS = 1_000;

test('a control-loop pass skips a volume that cannot be opened and decides for the volumes after it', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-offline-loop-', () => m!);
  m = await openColdTierManager(dir);
  const mgr = m;
  // Listed in name order: a (unopenable) comes before b and c.
  const hot1 = await coldVolumeOnHot1(mgr, dir, 'a');
  await mgr.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  await mgr.createVolume({ name: 'c', sizeBytes: 2 * MiB, tier: 'hot', pool: 'hot-0' });
  fs.renameSync(hot1, `${hot1}.gone`);

  const policiesDir = path.join(dir, 'policies');
  fs.mkdirSync(policiesDir);
  // Dry run: decisions only, nothing moves.
  fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { ecPolicyRef: mgr.cold!.policy.name, samplingWindow: `${WINDOW_MS / 1000}s`, dryRun: true }));
  // Idle volumes, measured over a whole window: 0 IOPS (cold).
  const heat = new HeatTracker(mgr, 60_000, SAMPLE_INTERVAL_MS);
  heat.sample(Date.now() - WINDOW_MS - SAMPLE_INTERVAL_MS);
  const loop = new ControlLoop(mgr, { policiesDir, intervalMs: 3_600_000, preservationMode: false, heat, ecPolicyNames: () => [mgr.cold!.policy.name] });
  t.after(() => loop.stop());

  for (let pass = 1; pass <= 2; pass++) {
    const { lines } = await stderrLines(() => loop.reconcile());
    const [status] = loop.status();
    const byVolume = new Map(status!.decisions.map((d) => [d.volume, d]));
    assert.deepEqual([...byVolume.keys()], ['a', 'b', 'c'], 'every volume got a decision');
    assert.equal(byVolume.get('a')!.action, 'unavailable');
    assert.match(byVolume.get('a')!.reason, /cannot be opened on pool hot-1/);
    assert.equal(byVolume.get('b')!.action, 'stay', byVolume.get('b')!.reason);
    assert.equal(byVolume.get('c')!.action, 'would-migrate', byVolume.get('c')!.reason);
    assert.equal(lines.filter((l) => l.includes('control loop skipped volumes that cannot be opened')).length, 1, `pass ${pass}: one line`);
    assert.equal(loop.volumesSkipped, pass);
  }

  // hot-1 is back: a is decided on like the others.
  fs.renameSync(`${hot1}.gone`, hot1);
  await loop.reconcile();
  const a = loop.status()[0]!.decisions.find((d) => d.volume === 'a')!;
  assert.equal(a.action, 'stay', a.reason);
  assert.equal(loop.volumesSkipped, 2);
});
