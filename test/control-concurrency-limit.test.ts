// maxConcurrentMigrations: with three misplaced volumes and a limit of 1, no
// pass ever has more than one migration running, and all three get moved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fioFill, metric, policyNamed, policyYaml, reconcile, scrape, sleep, startControlDaemon, status, volume, WINDOW_SETTLE_MS, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const VOLUMES = ['m1', 'm2', 'm3'];
const DEADLINE_MS = 90_000;

test('maxConcurrentMigrations 1: never more than one active, all three eventually migrate', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering', { maxConcurrentMigrations: 1 }) } });
  t.after(() => d.cleanup());
  for (const v of VOLUMES) {
    await createVolume(d, v, 32 * MiB);
    fioFill(d.exportUri(v), 32 * MiB);
  }
  await sleep(WINDOW_SETTLE_MS);

  // Back-to-back passes (no --wait): each one is observed right after it ran.
  let passes = 0;
  let sawLimit = 0;
  let maxActive = 0;
  const start = Date.now();
  for (;;) {
    const p = policyNamed(await reconcile(d, false), 'tiering');
    passes++;
    const active = p.activeMigrations;
    const migrating = p.decisions.filter((x) => x.action === 'migrate' || x.action === 'migrating').length;
    const gauge = metric(await scrape(d), 'couchestor_active_migrations')!;
    maxActive = Math.max(maxActive, active, migrating, gauge);
    assert.ok(active <= 1 && migrating <= 1 && gauge <= 1, `pass ${passes}: active=${active} migrate/migrating=${migrating} gauge=${gauge}: ${JSON.stringify(p.decisions)}`);
    const limited = p.decisions.filter((x) => x.action === 'concurrency-limit');
    for (const l of limited) assert.match(l.reason, /1 of 1 migrations running/);
    if (limited.length > 0) sawLimit++;
    if (p.coldVolumes === VOLUMES.length && active === 0) break;
    assert.ok(Date.now() - start < DEADLINE_MS, `not all migrated after ${passes} passes: ${JSON.stringify(p.decisions)}`);
  }
  t.diagnostic(`${passes} passes, ${sawLimit} with a volume held back by the limit`);
  assert.equal(maxActive, 1);
  assert.ok(sawLimit >= 1, 'at least one pass held a volume back');
  for (const v of VOLUMES) assert.equal((await volume(d, v)).tier, 'cold');
  const st = await status(d);
  const p = policyNamed(st.policies, 'tiering');
  assert.deepEqual(p.migrationHistory.map((h) => h.result), ['succeeded', 'succeeded', 'succeeded']);
  assert.deepEqual(p.migrationHistory.map((h) => h.volume).sort(), VOLUMES);
  // Strictly one after another: each started after the previous finished.
  for (let i = 1; i < p.migrationHistory.length; i++) {
    assert.ok(Date.parse(p.migrationHistory[i]!.startedAt) >= Date.parse(p.migrationHistory[i - 1]!.finishedAt), JSON.stringify(p.migrationHistory));
  }
  assert.equal(metric(await scrape(d), 'couchestor_migrations_total', { result: 'succeeded' }), 3);
});
