// Heat after a daemon restart: a volume nobody has opened since the restart
// is idle, not unknown. It reads 0 IOPS and an idle hot one is moved to
// cold, like any other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestDaemon } from './helpers/daemon.js';
import { createVolume, decisionFor, fioFill, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, volume, WINDOW_SETTLE_MS } from './helpers/control-loop.js';

const MiB = 1024 * 1024;

test('a volume not opened since the restart is measured (0 IOPS) and moved to cold', async (t) => {
  const policies = { 'tiering.yaml': policyYaml('tiering') };
  const first = await startControlDaemon({ policies });
  let second: TestDaemon | null = null;
  // One hook, in order: the second daemon stops before the shared data directory goes.
  t.after(async () => {
    await second?.kill();
    await first.cleanup();
  });
  await createVolume(first, 'untouched', 8 * MiB);
  fioFill(first.exportUri('untouched'), 8 * MiB);
  assert.equal(await first.stop(), 0);

  const d = (second = await startControlDaemon({ policies, dataDir: first.dataDir }));
  await sleep(WINDOW_SETTLE_MS);
  // The heat is kept across the restart (control-heat-kept-across-restart): the pass at the
  // start may have moved it already, or be moving it. A pass, the moves awaited, then one more.
  await reconcile(d, true);
  const p = policyNamed(await reconcile(d, true), 'tiering');
  const dec = decisionFor(p, 'untouched');
  assert.equal(dec.iops, 0, dec.reason);
  assert.equal(`${dec.action} ${dec.targetTier}`, 'stay cold', dec.reason);
  assert.equal((await volume(d, 'untouched')).tier, 'cold');
  assert.deepEqual(p.migrationHistory.map((h) => `${h.from}->${h.to}:${h.result}`), ['hot->cold:succeeded']);
});
