// dryRun: the control loop decides and explains (status and the daemon's log)
// but moves nothing: tier, stripes and the volume file stay as they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { coldStatus, decisionFor, metric, nbdcopyIn, policyNamed, policyYaml, randomFile, reconcile, scrape, sleep, startControlDaemon, volume, waitForLog, WINDOW_SETTLE_MS, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;

test('dryRun: an idle hot volume gets would-migrate with a reason, logged, and nothing moves', async (t) => {
  const d = await startControlDaemon({ policies: { 'dry.yaml': policyYaml('dry', { dryRun: true }) } });
  t.after(() => d.cleanup());
  await createVolume(d, 'idle', 16 * MiB);
  const source = path.join(d.dataDir, 'src.bin');
  randomFile(source, 8 * MiB);
  nbdcopyIn(source, d.exportUri('idle'));
  const rec = await volume(d, 'idle');
  const file = path.join(d.dataDir, 'pools', rec.poolName, 'volumes', `${rec.id}.dat`);
  const before = fs.readFileSync(file);

  await sleep(WINDOW_SETTLE_MS);
  // --wait: had anything started, the pass would not return before it finished.
  const p = policyNamed(await reconcile(d, true), 'dry');
  assert.equal(p.phase, 'DryRun');
  const dec = decisionFor(p, 'idle');
  assert.equal(dec.action, 'would-migrate', dec.reason);
  assert.equal(dec.currentTier, 'hot');
  assert.equal(dec.targetTier, 'cold');
  assert.match(dec.reason, /IOPS <= low watermark .*dry run: would migrate hot -> cold/);
  // A second pass still only reports (dry run is not a one-shot guard).
  const again = decisionFor(policyNamed(await reconcile(d, true), 'dry'), 'idle');
  assert.equal(again.action, 'would-migrate');

  assert.equal((await volume(d, 'idle')).tier, 'hot');
  assert.equal(p.activeMigrations, 0);
  assert.deepEqual(p.migrationHistory, []);
  assert.deepEqual(p.totalMigrations, { succeeded: 0, failed: 0, aborted: 0 });
  const cold = await coldStatus(d);
  assert.equal(cold.stripesWritten, 0);
  assert.deepEqual(cold.stripes, { Healthy: 0, Degraded: 0, Reconstructing: 0, Failed: 0 });
  assert.ok(fs.readFileSync(file).equals(before), 'the volume file is untouched');
  const m = await scrape(d);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'idle', tier: 'hot' }), 1);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'succeeded' }), 0);

  // The decision is in the daemon's log, with its reason; logged once per change, not every pass.
  await waitForLog(d, /INFO decision .*action=would-migrate/);
  const lines = d.stderr.split('\n').filter((l) => /INFO decision /.test(l) && /volume=idle/.test(l) && /action=would-migrate/.test(l));
  assert.equal(lines.length, 1, d.stderr);
  assert.match(lines[0]!, /policy=dry .*targetTier=cold .*why=.*dry run: would migrate hot -> cold/);
  assert.doesNotMatch(d.stderr, /migration started/);
});
