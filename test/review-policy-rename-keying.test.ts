// A StoragePolicy renamed in its file while one of its moves runs keeps its
// state (8f64c60), also when another file takes the old name in the same
// edit, or when two files swap their names. 8f64c60 carried the state over
// only when the old name was gone from every file: otherwise the state (its
// running move) went to the policy now holding the name, and the renamed
// policy started with no running moves, so it started a second move beside
// the first under maxConcurrentMigrations 1. Real daemon, fio fills, passes
// only when the test asks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestDaemon } from './helpers/daemon.js';
import { createVolume, decisionFor, fioFill, heldMove, HOLD_MIGRATION_ENV, policyNamed, policyYaml, reconcile, releaseMove, sleep, startControlDaemon, status, volume, WINDOW_SETTLE_MS, writePolicy } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const SIZE = 128 * MiB;
const NOTHING = { volumeSelector: { matchLabels: { 'couchestor.io/volume': 'no-such-volume' } } };

/** Two idle hot volumes and a first pass of `file`'s policy `name` (limit 1): one move started. */
async function oneMoveRunning(d: TestDaemon, name: string): Promise<{ started: string; other: string }> {
  for (const v of ['m1', 'm2']) {
    await createVolume(d, v, SIZE);
    fioFill(d.exportUri(v), SIZE);
  }
  await sleep(WINDOW_SETTLE_MS); // idle since the fill: both belong on cold
  const first = policyNamed(await reconcile(d, false), name);
  const started = first.decisions.filter((x) => x.action === 'migrate').map((x) => x.volume);
  assert.equal(started.length, 1, JSON.stringify(first.decisions));
  const other = started[0] === 'm1' ? 'm2' : 'm1';
  assert.equal(decisionFor(first, other).action, 'concurrency-limit');
  await heldMove(d, started[0]!); // held (test hook) until assertLimitHeld's second pass has run
  return { started: started[0]!, other };
}

/** The second pass, after the edit: the policy now named `renamed` still counts the running move. */
async function assertLimitHeld(d: TestDaemon, renamed: string, started: string, other: string): Promise<void> {
  const p = policyNamed(await reconcile(d, false), renamed);
  const running = decisionFor(p, started);
  assert.equal(running.action, 'migrating', `the first move must still run for this test to mean anything: ${JSON.stringify(p.decisions)}`);
  assert.equal(decisionFor(p, other).action, 'concurrency-limit', JSON.stringify(p.decisions));
  assert.ok((await status(d)).activeMigrations <= 1);
  releaseMove(d);
  for (let i = 0; i < 10 && (await volume(d, other)).tier !== 'cold'; i++) await reconcile(d, true);
  const done = policyNamed((await status(d)).policies, renamed);
  assert.deepEqual(done.migrationHistory.map((h) => `${h.volume}:${h.result}`).sort(), ['m1:succeeded', 'm2:succeeded'], 'one history across the rename');
}

test('renamed in its file while another file takes the old name: the renamed policy keeps its running move', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering', { maxConcurrentMigrations: 1 }) }, env: HOLD_MIGRATION_ENV });
  t.after(() => d.cleanup());
  const { started, other } = await oneMoveRunning(d, 'tiering');
  writePolicy(d, 'tiering.yaml', policyYaml('tiering-b', { maxConcurrentMigrations: 1 }));
  writePolicy(d, 'another.yaml', policyYaml('tiering', { maxConcurrentMigrations: 1, ...NOTHING }));
  await assertLimitHeld(d, 'tiering-b', started, other);
  assert.deepEqual(policyNamed((await status(d)).policies, 'tiering').migrationHistory, [], 'the new policy of the old name started nothing');
});

test('two files swap their policy names: each file keeps its own running moves', async (t) => {
  const d = await startControlDaemon({
    policies: { 'a.yaml': policyYaml('pa', { maxConcurrentMigrations: 1 }), 'b.yaml': policyYaml('pb', { maxConcurrentMigrations: 1, ...NOTHING }) },
    env: HOLD_MIGRATION_ENV,
  });
  t.after(() => d.cleanup());
  const { started, other } = await oneMoveRunning(d, 'pa');
  writePolicy(d, 'a.yaml', policyYaml('pb', { maxConcurrentMigrations: 1 }));
  writePolicy(d, 'b.yaml', policyYaml('pa', { maxConcurrentMigrations: 1, ...NOTHING }));
  await assertLimitHeld(d, 'pb', started, other);
});
