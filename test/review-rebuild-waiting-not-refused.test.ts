// Review of 93a2580: an operator's whole-pool rebuild asked while the retry
// timer retries skipped volumes of the same pool waits for that retry, then
// runs (it was accepted: no 409 at the time). If another operator request is
// queued behind the timer's run meanwhile, the waiting one must still run
// when its turn comes, after the queued one, not be refused then with
// PoolRebuildBusy ("about to be rebuilt"), after having waited. In process:
// real manager, stripe store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { PoolRebuildReport } from '../src/dataplane/ec/reconstruction.js';
import { readVolume } from './helpers/volume.js';
import { pairWithSkippedRebuild, replacePoolDir } from './helpers/rebuild.js';

test("a whole-pool rebuild waiting for the timer's retry of its pool runs after an operator rebuild queued meanwhile, not refused", async (t) => {
  // a on hot-1 (offline), b on hot-0: two stripes each. cold-2 is lost; its rebuild skips a.
  const { dir, m, r, hot1, want, first } = await pairWithSkippedRebuild(t, 'couchestor-review-rebuild-waiting-');
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);

  // hot-1 is back, cold-3 lost too. The timer's pass starts its retry of a on cold-2.
  fs.renameSync(`${hot1}.gone`, hot1);
  replacePoolDir(dir, 'cold-3');
  const order: string[] = [];
  const timerRun = r.retrySkippedVolumes().then((reports) => (order.push('timer cold-2 retry'), reports));
  assert.deepEqual(r.rebuildRunning(), { pool: 'cold-2', wholePool: false, startedBy: 'timer', queued: null });

  // The operator asks cold-3 (queued behind the timer's run), then cold-2 whole (waits for the retry).
  const asked3 = r.rebuildPool('cold-3').then((rep) => (order.push(`operator ${rep.pool}`), rep));
  const asked2 = r.rebuildPool('cold-2').then(
    (rep) => (order.push(`operator ${rep.pool}`), rep),
    (err: Error) => err,
  );
  assert.equal(r.rebuildRunning()?.queued, 'cold-3');

  const [, report3, report2] = await Promise.all([timerRun, asked3, asked2]);
  assert.ok(!(report2 instanceof Error), `the waiting whole-pool rebuild of cold-2 ran: ${report2 instanceof Error ? `${report2.name}: ${report2.message}` : ''}`);
  const whole2 = report2 as PoolRebuildReport;
  assert.equal(whole2.pool, 'cold-2');
  assert.equal(whole2.retryOfSkipped, false, 'a whole-pool rebuild, as asked');
  assert.equal(whole2.complete, true, JSON.stringify(whole2));
  assert.equal(whole2.stripesChecked, 4, 'every stripe with a shard on cold-2 looked at');
  assert.equal(report3.complete, true, JSON.stringify(report3));
  assert.deepEqual(order, ['timer cold-2 retry', 'operator cold-3', 'operator cold-2'], 'each ran once, in the order asked');
  assert.equal(r.rebuildRunning(), null);
  assert.deepEqual(r.incompleteRebuilds(), []);

  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0);
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);
});
