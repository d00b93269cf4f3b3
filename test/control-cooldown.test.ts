// Cooldown: after a migration, the opposite classification within
// cooldownPeriod is reported as 'cooldown' and nothing moves; once the
// period has passed, the volume moves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decisionFor, fioFill, loadJob, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, volume, WINDOW_SETTLE_MS, writePolicy, type FioJob, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
// Far longer than anything the test waits (a heat window of load, a pass), so the hot reading lands
// inside it whatever the load; then the policy's cooldown is cut to 1 s, long past, and it moves.
const COOLDOWN_S = 3600;

test('cooldown: the opposite move waits for cooldownPeriod, then happens', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering', { cooldownPeriod: `${COOLDOWN_S}s` }) } });
  let load: FioJob | null = null;
  t.after(async () => {
    load?.kill();
    await d.cleanup();
  });
  await createVolume(d, 'c1', 16 * MiB);
  fioFill(d.exportUri('c1'), 16 * MiB);
  await sleep(WINDOW_SETTLE_MS);
  let p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(decisionFor(p, 'c1').action, 'migrate');
  assert.equal((await volume(d, 'c1')).tier, 'cold');

  // Hot again right away: inside the cooldown.
  load = loadJob(d.exportUri('c1'), 0, 16 * MiB);
  await sleep(WINDOW_SETTLE_MS);
  p = policyNamed(await reconcile(d, true), 'tiering');
  let dec = decisionFor(p, 'c1');
  assert.equal(dec.action, 'cooldown', dec.reason);
  assert.equal(dec.targetTier, 'hot');
  assert.match(dec.reason, /IOPS >= high watermark .*in cooldown for \d+s more/);
  assert.equal((await volume(d, 'c1')).tier, 'cold');
  assert.equal(p.migrationHistory.length, 1);
  assert.equal(p.activeMigrations, 0);
  assert.ok(Number(/in cooldown for (\d+)s more/.exec(dec.reason)![1]) > COOLDOWN_S - 120, dec.reason);

  // Past the cooldown (cut to 1 s, the move was seconds ago), with the load still on: it moves back to hot.
  writePolicy(d, 'tiering.yaml', policyYaml('tiering', { cooldownPeriod: '1s' }));
  p = policyNamed(await reconcile(d, true), 'tiering');
  dec = decisionFor(p, 'c1');
  assert.equal(dec.action, 'migrate', dec.reason);
  assert.equal(dec.targetTier, 'hot');
  assert.equal((await volume(d, 'c1')).tier, 'hot');
  assert.deepEqual(p.migrationHistory.map((h) => `${h.from}->${h.to}:${h.result}`), ['hot->cold:succeeded', 'cold->hot:succeeded']);
  const r = await load.stop();
  assert.equal(r.job.error, 0, r.stderr);
});
