// Review of da7f162: the retry timer's pass goes on to the next listed pool
// after one pool's retry throws. Two things must still hold when it does: an
// operator's rebuild queued behind the failing timer run is served (and the
// pass starts nothing beside it), and a stop() during the failing run leaves
// the pass starting nothing after it. cold-1 is listed first (interrupted: its
// whole-pool retry marks its record running first) and its retry fails at that
// commit; cold-2 is listed second with volume a, which opens now.
//
// The fault is the one LMDB commit of cold-1's running record failing, held
// until the test releases it (the index's put for that key: the real put for
// every other write), as rebuild-running-record-fails injects it: it lets the
// test act while the failing run is in flight. Everything else is real:
// manager, stripe store, segment files, LMDB index, Reconstructor.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { addObjectSource, coldTrioWithObjectSource, putDamagedObjectRecord, replacePoolDir, shardsPresentOn, type ListedRebuild } from './helpers/rebuild.js';

const FAILING = 'cold-1';
const WAITING = 'cold-2';
const STRIPES = 4;
const ALL = 2 + 2 + STRIPES;
const INTERRUPTED: ListedRebuild = { pool: FAILING, volumesSkipped: [], notRebuilt: 1, interrupted: true };
const WAITING_A: ListedRebuild = { pool: WAITING, volumesSkipped: ['a'], notRebuilt: 0 };

/**
 * cold-1 listed interrupted (its rebuild, with every volume open, stopped on a damaged object record), then after a
 * restart with hot-1 gone, cold-2 listed with a skipped; hot-1 back (a opens now). a misses its cold-2 shards only.
 */
async function listedPair(t: TestContext, prefix: string): Promise<{ dir: string; m: () => VolumeManager; r: Reconstructor; want: Map<string, Buffer> }> {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, prefix, () => m!);
  m = await openColdTierManager(dir);
  const pair = await coldTrioWithObjectSource(t, m, dir, STRIPES, { hot1Back: true });
  m = pair.m;
  const want = pair.want;
  const removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, FAILING);
  await assert.rejects(m.cold!.reconstructor.rebuildPool(FAILING));
  await removeDamaged();
  await m.close();
  fs.renameSync(pair.hot1, `${pair.hot1}.gone`);
  m = await openColdTierManager(dir, false);
  addObjectSource(t, m);
  const r = m.cold!.reconstructor;
  replacePoolDir(dir, WAITING);
  const first = await r.rebuildPool(WAITING);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.deepEqual(r.incompleteRebuilds(), [INTERRUPTED, WAITING_A], 'cold-1 comes first in the pass');
  fs.renameSync(`${pair.hot1}.gone`, pair.hot1);
  return { dir, m: () => m!, r, want };
}

/** cold-1's next running-record commit is held; `hit` resolves when the run reaches it, `fail()` fails it. */
function holdRunningRecord(t: TestContext, m: VolumeManager): { hit: Promise<void>; fail: () => void } {
  const db = m.meta.incompleteRebuilds;
  const realPut = db.put;
  let armed = true;
  let reached!: () => void;
  const hit = new Promise<void>((resolve) => (reached = resolve));
  let fail!: () => void;
  const failed = new Promise<never>((_, reject) => (fail = () => reject(Object.assign(new Error('ENOSPC: no space left on device (index commit)'), { code: 'ENOSPC' }))));
  failed.catch(() => undefined);
  t.mock.method(db, 'put', function (this: typeof db, key: string, value: { state?: string }, ...rest: unknown[]) {
    if (armed && key === FAILING && value.state === 'running') {
      armed = false;
      reached();
      return failed;
    }
    return (realPut as (...a: unknown[]) => Promise<boolean>).call(this, key, value, ...rest);
  });
  return { hit, fail };
}

test("an operator's rebuild queued behind the timer's failing retry is served, and the pass starts nothing beside it", async (t) => {
  const { dir, m, r, want } = await listedPair(t, 'couchestor-review-retry-failure-queued-');
  replacePoolDir(dir, 'cold-3');
  const held = holdRunningRecord(t, m());
  const pass = r.retryOnTimer();
  await held.hit;
  assert.deepEqual(r.rebuildRunning(), { pool: FAILING, wholePool: true, startedBy: 'timer', queued: null });
  const asked = r.rebuildPool('cold-3');
  assert.deepEqual(r.rebuildRunning(), { pool: FAILING, wholePool: true, startedBy: 'timer', queued: 'cold-3' });
  held.fail();
  await pass;
  assert.equal(r.poolRetryFailures, 1, "cold-1's retry failed");
  assert.equal(r.rebuildRunning()?.pool, 'cold-3', "the operator's queued rebuild runs, not cold-2's retry");
  const report = await asked;
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.equal(report.retryOfSkipped, false);
  assert.deepEqual(r.incompleteRebuilds(), [INTERRUPTED, WAITING_A], 'both listed pools wait for the next interval');
  assert.deepEqual(await shardsPresentOn(m(), 'cold-3', ['a', 'b', 'c']), { present: ALL, stripes: ALL });

  // The next interval: both retried, both complete; every stripe whole and every volume reads back.
  await r.retryOnTimer();
  assert.deepEqual(r.incompleteRebuilds(), []);
  for (const pool of [FAILING, WAITING]) assert.deepEqual(await shardsPresentOn(m(), pool, ['a', 'b', 'c']), { present: ALL, stripes: ALL }, pool);
  const scrubbed = await r.scrub({ rateLimited: false });
  assert.equal(scrubbed.stripesChecked, ALL);
  assert.equal(scrubbed.badStripes, 0);
  for (const [name, bytes] of want) assert.ok((await readVolume(m().openVolume(name), 0, bytes.length)).equals(bytes), `${name} reads back`);
});

test("stop() during the timer's failing retry of one pool: the pass goes on to start nothing", async (t) => {
  const { m, r } = await listedPair(t, 'couchestor-review-retry-failure-stop-');
  const held = holdRunningRecord(t, m());
  const pass = r.retryOnTimer();
  await held.hit;
  assert.equal(r.rebuildRunning()?.pool, FAILING);
  const stopped = r.stop();
  held.fail();
  await stopped;
  assert.equal(r.rebuildRunning(), null, 'nothing runs once stop() resolved');
  await pass;
  assert.equal(r.rebuildRunning(), null, 'the pass started nothing after the failure');
  assert.equal(r.poolRetryFailures, 1, "cold-1's retry failed");
  assert.deepEqual(r.incompleteRebuilds(), [INTERRUPTED, WAITING_A], 'cold-2 was not retried');
  assert.deepEqual(await shardsPresentOn(m(), WAITING, ['a']), { present: 0, stripes: 2 }, "nothing landed a's cold-2 shards");
});
