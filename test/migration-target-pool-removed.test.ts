// A cold pool disappears while a hot -> cold migration copies: 4+2 placement
// needs six online cold pools, so the migration fails; the volume stays
// online on hot with its bytes intact, and once the pool is back a later pass
// retries and succeeds (after `couchestor pools replace` of the new, empty directory).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { decisionFor, metric, nbdcopyIn, nbdcopyOut, policyNamed, policyYaml, randomFile, reconcile, scrape, sleep, startControlDaemon, volume, WINDOW_SETTLE_MS, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
// Seconds of copying at ~40 MB/s: the pool is removed well before the end.
const SIZE_BYTES = 128 * MiB;

test('cold pool removed mid-migration: fails with the reason, stays hot and byte-exact, retried once the pool is back', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') } });
  t.after(() => d.cleanup());
  await createVolume(d, 'vol', SIZE_BYTES);
  const source = path.join(d.dataDir, 'src.bin');
  randomFile(source, SIZE_BYTES);
  nbdcopyIn(source, d.exportUri('vol'));
  const expected = fs.readFileSync(source);
  await sleep(WINDOW_SETTLE_MS);

  let p = policyNamed(await reconcile(d, false), 'tiering');
  assert.equal(decisionFor(p, 'vol').action, 'migrate');
  assert.equal(p.activeMigrations, 1);
  // The pool's directory goes away while chunks are being striped.
  const gone = path.join(d.dataDir, 'pools', 'cold-3');
  fs.rmSync(gone, { recursive: true });

  p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(p.migrationHistory.length, 1);
  const h = p.migrationHistory[0]!;
  assert.equal(h.result, 'failed', JSON.stringify(h));
  assert.equal(`${h.from}->${h.to}`, 'hot->cold');
  assert.ok(h.bytesCopied < SIZE_BYTES, `failed part-way (${h.bytesCopied} bytes copied)`);
  assert.match(h.error ?? '', /cold|pool|shard/i);
  t.diagnostic(`failure recorded: ${h.error}`);
  assert.equal(p.totalMigrations.failed, 1);
  assert.equal((await volume(d, 'vol')).tier, 'hot');
  let m = await scrape(d);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'failed' }), 1);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'vol', tier: 'hot' }), 1);

  // Online and byte-exact (chunks already striped read from their stripes,
  // through parity where a shard was on the deleted pool).
  assert.ok(nbdcopyOut(d.exportUri('vol'), path.join(d.dataDir, 'back1.bin'), SIZE_BYTES).equals(expected), 'reads back byte-exact after the failure');

  // While the pool is missing, the loop does not retry blindly: it says why.
  // (After a heat window: the read-back above made the volume warm.)
  await sleep(WINDOW_SETTLE_MS);
  p = policyNamed(await reconcile(d, true), 'tiering');
  const blocked = decisionFor(p, 'vol');
  assert.equal(blocked.action, 'blocked', blocked.reason);
  assert.match(blocked.reason, /needs 6 online cold pools, 5 online/);
  assert.equal(p.migrationHistory.length, 1);

  // A new empty disk at the pool's path is not the pool until `couchestor pools replace` says so
  // (pool identity: an empty directory could as well be the mount point of a disk not mounted).
  fs.mkdirSync(gone);
  p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(decisionFor(p, 'vol').action, 'blocked', decisionFor(p, 'vol').reason);
  // Replaced (the shards it held rebuilt from parity): the next pass retries and succeeds.
  const replaced = d.cli('pools', 'replace', 'cold-3');
  assert.equal(replaced.status, 0, replaced.stderr);
  p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(decisionFor(p, 'vol').action, 'migrate', decisionFor(p, 'vol').reason);
  assert.deepEqual(p.migrationHistory.map((x) => `${x.from}->${x.to}:${x.result}`), ['hot->cold:failed', 'hot->cold:succeeded']);
  assert.equal((await volume(d, 'vol')).tier, 'cold');
  m = await scrape(d);
  assert.equal(metric(m, 'couchestor_migrations_total', { result: 'succeeded' }), 1);
  assert.equal(metric(m, 'couchestor_volume_tier', { volume: 'vol', tier: 'cold' }), 1);
  assert.ok(nbdcopyOut(d.exportUri('vol'), path.join(d.dataDir, 'back2.bin'), SIZE_BYTES).equals(expected), 'reads back byte-exact from the cold tier');
});
