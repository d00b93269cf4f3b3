// End to end tiering: a volume driven hot by fio over NBD, then idle, is
// moved hot -> cold (erasure coded) and back to hot when load returns, while
// a fio verifier writes and checks its own region the whole time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { PolicyStatus } from '../src/control/loop.js';
import {
  cliJson,
  coldStatus,
  decisionFor,
  HIGH_IOPS,
  LOW_IOPS,
  loadJob,
  metric,
  nbdcopyIn,
  nbdcopyOut,
  policyNamed,
  policyYaml,
  randomFile,
  reconcile,
  scrape,
  sleep,
  startControlDaemon,
  status,
  verifyJob,
  volume,
  WINDOW_SETTLE_MS,
  type FioJob,
} from './helpers/control-loop.js';

const MiB = 1024 * 1024;
// Three regions of one volume. The verifier owns its region alone: fio's
// verify remembers what *it* wrote, so a second writer on the same blocks
// would make it report errors that are not the daemon's. Every region is in
// the same volume, so every migration moves all three while they are in use.
const STATIC = { offsetBytes: 0, lengthBytes: 32 * MiB }; // written once, compared byte for byte at the end
const LOAD = { offsetBytes: 32 * MiB, lengthBytes: 32 * MiB }; // load generator: random reads + writes
const VERIFY = { offsetBytes: 64 * MiB, lengthBytes: 32 * MiB }; // fio --verify=crc32c writer/reader
const SIZE_BYTES = 96 * MiB;

test('a volume loaded then idle goes hot -> cold (EC) -> hot, a concurrent fio verifier sees no error', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') } });
  const jobs: FioJob[] = [];
  t.after(async () => {
    for (const j of jobs) j.kill();
    await d.cleanup();
  });
  d.createVolume('e2e', `${SIZE_BYTES}`);
  const uri = d.exportUri('e2e');
  const source = path.join(d.dataDir, 'static.bin');
  randomFile(source, STATIC.lengthBytes);
  nbdcopyIn(source, uri);

  const verifier = verifyJob(uri, VERIFY.offsetBytes, VERIFY.lengthBytes);
  jobs.push(verifier);

  // Hot: load runs for a whole heat window.
  let load = loadJob(uri, LOAD.offsetBytes, LOAD.lengthBytes);
  jobs.push(load);
  await sleep(WINDOW_SETTLE_MS);
  // This pass through the real CLI (`couchestor reconcile --wait --json`); the rest through its API.
  let p = policyNamed(cliJson<{ policies: PolicyStatus[] }>(d, 'reconcile', '--wait').policies, 'tiering');
  let dec = decisionFor(p, 'e2e');
  assert.equal(dec.action, 'stay', dec.reason);
  assert.equal(dec.targetTier, 'hot');
  assert.ok(dec.iops! >= HIGH_IOPS, `under load: ${dec.iops} IOPS`);
  assert.equal((await load.stop()).job.error, 0);

  // Idle (only the verifier's trickle): the next pass moves it to cold.
  await sleep(WINDOW_SETTLE_MS);
  p = policyNamed(await reconcile(d, true), 'tiering');
  dec = decisionFor(p, 'e2e');
  assert.equal(dec.action, 'migrate', dec.reason);
  assert.equal(dec.targetTier, 'cold');
  assert.ok(dec.iops! <= LOW_IOPS, `idle: ${dec.iops} IOPS`);
  assert.equal((await volume(d, 'e2e')).tier, 'cold');
  assert.equal(p.migrationHistory.length, 1);
  assert.deepEqual(
    { volume: p.migrationHistory[0]!.volume, from: p.migrationHistory[0]!.from, to: p.migrationHistory[0]!.to, result: p.migrationHistory[0]!.result },
    { volume: 'e2e', from: 'hot', to: 'cold', result: 'succeeded' },
  );
  assert.ok(p.migrationHistory[0]!.bytesCopied >= STATIC.lengthBytes, `bytesCopied ${p.migrationHistory[0]!.bytesCopied}`);
  // Erasure coded: the static region alone is 32 full chunks -> 32 stripes.
  const cold = await coldStatus(d);
  assert.ok(cold.stripes.Healthy >= STATIC.lengthBytes / MiB, `stripes: ${JSON.stringify(cold.stripes)}`);
  assert.equal(cold.stripes.Failed, 0);
  let m = await scrape(d);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'e2e', tier: 'cold' }), 1);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'e2e', tier: 'hot' }), 0);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'succeeded' }), 1);

  // Load returns: after a window of it, the pass moves the volume back to
  // hot while the load keeps running (writes to a cold volume go through
  // the journal and must be carried over).
  load = loadJob(uri, LOAD.offsetBytes, LOAD.lengthBytes);
  jobs.push(load);
  await sleep(WINDOW_SETTLE_MS);
  p = policyNamed(await reconcile(d, true), 'tiering');
  dec = decisionFor(p, 'e2e');
  assert.equal(dec.action, 'migrate', dec.reason);
  assert.equal(dec.targetTier, 'hot');
  assert.ok(load.running, 'load still running during the cold -> hot migration');
  const loadResult = await load.stop();
  assert.equal(loadResult.job.error, 0, loadResult.stderr);
  assert.equal((await volume(d, 'e2e')).tier, 'hot');
  assert.deepEqual(
    p.migrationHistory.map((h) => `${h.from}->${h.to}:${h.result}`),
    ['hot->cold:succeeded', 'cold->hot:succeeded'],
  );
  m = await scrape(d);
  assert.ok(metric(m, 'couchestor_migrations_total', { result: 'succeeded' })! >= 2);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'failed' }), 0);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'e2e', tier: 'hot' }), 1);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'e2e', tier: 'cold' }), 0);
  assert.equal((await status(d)).totals.succeeded, 2);

  // The verifier ran through both migrations without a single bad block.
  assert.ok(verifier.running, 'verifier ran the whole time');
  const v = await verifier.stop();
  assert.equal(v.job.error, 0, v.stderr);
  assert.doesNotMatch(v.stderr, /verify|bad magic|crc32c/i);
  assert.ok(v.job.write.total_ios > 0 && v.job.read.total_ios > 0, `verifier wrote ${v.job.write.total_ios} and checked ${v.job.read.total_ios} blocks`);
  t.diagnostic(`verifier: ${v.job.write.total_ios} blocks written, ${v.job.read.total_ios} verified`);

  // Data at rest survived both moves byte for byte.
  const back = nbdcopyOut(uri, path.join(d.dataDir, 'back.bin'), STATIC.lengthBytes);
  assert.ok(back.equals(fs.readFileSync(source)), 'static region reads back byte-exact');
});
