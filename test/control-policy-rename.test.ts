// A StoragePolicy renamed in its file (metadata.name edited) while one of its
// moves runs: the renamed policy is the same policy, its
// maxConcurrentMigrations counts that move. Before, the new name started with
// no running moves and started another beside it (2 running under a limit
// of 1), and the old name's status lingered until the move ended.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, decisionFor, fioFill, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, status, volume, WINDOW_SETTLE_MS, writePolicy } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

test('renaming a policy mid-move keeps its concurrency limit and its history', async (t) => {
  const d = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering', { maxConcurrentMigrations: 1 }) } });
  t.after(() => d.cleanup());
  for (const v of ['m1', 'm2']) {
    await createVolume(d, v, SIZE);
    fioFill(d.exportUri(v), SIZE);
  }
  await sleep(WINDOW_SETTLE_MS); // idle since the fill: both belong on cold

  const first = policyNamed(await reconcile(d, false), 'tiering');
  const started = first.decisions.filter((x) => x.action === 'migrate').map((x) => x.volume);
  assert.equal(started.length, 1, JSON.stringify(first.decisions));
  const other = started[0] === 'm1' ? 'm2' : 'm1';
  assert.equal(decisionFor(first, other).action, 'concurrency-limit');

  writePolicy(d, 'tiering.yaml', policyYaml('tiering-renamed', { maxConcurrentMigrations: 1 }));
  const second = await reconcile(d, false);
  const renamed = policyNamed(second, 'tiering-renamed');
  const running = decisionFor(renamed, started[0]!);
  if (running.action === 'migrating') {
    // The first move still runs: the renamed policy must not start the other one beside it.
    assert.equal(decisionFor(renamed, other).action, 'concurrency-limit', JSON.stringify(renamed.decisions));
    assert.ok((await status(d)).activeMigrations <= 1);
  } else {
    t.diagnostic(`the first move ended before the second pass (${running.action}): the limit was not under test`);
  }
  assert.deepEqual(second.map((p) => p.name), ['tiering-renamed'], 'the old name is gone at once');

  for (let i = 0; i < 10 && (await volume(d, other)).tier !== 'cold'; i++) await reconcile(d, true);
  const done = policyNamed((await status(d)).policies, 'tiering-renamed');
  assert.deepEqual(done.migrationHistory.map((h) => `${h.volume}:${h.result}`).sort(), ['m1:succeeded', 'm2:succeeded'], 'one history across the rename');
});
