// enabled: false is an emergency stop: flipped while a migration runs, the
// migration in flight finishes, the policy shows Disabled, and nothing new
// starts for another misplaced volume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decisionFor, fioFill, heldMove, HOLD_MIGRATION_ENV, metric, policyNamed, policyYaml, reconcile, releaseMove, scrape, sleep, startControlDaemon, status, volume, WINDOW_SETTLE_MS, writePolicy, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
// The move holds after its first chunk (test hook HOLD_MIGRATION_ENV) until
// released, so the policy flip lands while it runs whatever the load.
const BIG_BYTES = 256 * MiB;

test('enabled: false mid-migration: in-flight finishes, phase Disabled, no new migration starts', async (t) => {
  // One migration at a time, so pass 1 starts `a-big` only and `b-other` waits.
  const spec = { maxConcurrentMigrations: 1 };
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering', spec) }, env: HOLD_MIGRATION_ENV });
  t.after(() => d.cleanup());
  await createVolume(d, 'a-big', BIG_BYTES);
  await createVolume(d, 'b-other', 8 * MiB);
  fioFill(d.exportUri('a-big'), BIG_BYTES);
  fioFill(d.exportUri('b-other'), 8 * MiB);
  await sleep(WINDOW_SETTLE_MS);

  let p = policyNamed(await reconcile(d, false), 'tiering');
  assert.equal(decisionFor(p, 'a-big').action, 'migrate', decisionFor(p, 'a-big').reason);
  assert.equal(decisionFor(p, 'b-other').action, 'concurrency-limit', decisionFor(p, 'b-other').reason);
  await heldMove(d, 'a-big');

  writePolicy(d, 'tiering.yaml', policyYaml('tiering', { ...spec, enabled: false }));
  p = policyNamed(await reconcile(d, false), 'tiering');
  assert.equal(p.phase, 'Disabled');
  // Still in flight at the flip: the emergency stop does not abort it.
  assert.equal(p.activeMigrations, 1);
  assert.equal(decisionFor(p, 'a-big').action, 'migrating');
  const other = decisionFor(p, 'b-other');
  assert.equal(other.action, 'disabled', other.reason);
  assert.equal(other.targetTier, 'cold');
  assert.match(other.reason, /policy disabled \(emergency stop\)/);

  // Let it run on, and wait for it; the pass that precedes the wait starts nothing.
  releaseMove(d);
  p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(p.phase, 'Disabled');
  assert.deepEqual(
    p.migrationHistory.map((h) => `${h.volume}:${h.from}->${h.to}:${h.result}`),
    ['a-big:hot->cold:succeeded'],
  );
  assert.equal(p.migrationHistory[0]!.bytesCopied, BIG_BYTES);
  assert.equal((await volume(d, 'a-big')).tier, 'cold');

  // Later passes: still nothing for b-other, though it stays misplaced.
  p = policyNamed(await reconcile(d, true), 'tiering');
  const later = decisionFor(p, 'b-other');
  assert.equal(later.action, 'disabled', later.reason);
  assert.equal((await volume(d, 'b-other')).tier, 'hot');
  assert.equal(p.activeMigrations, 0);
  assert.equal((await status(d)).totals.succeeded, 1);
  const m = await scrape(d);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'succeeded' }), 1);
  assert.equal(metric(m, 'couchestor_active_migrations'), 0);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'b-other', tier: 'hot' }), 1);
});
