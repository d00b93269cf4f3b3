// Review of 93a2580: a stop while an operator's whole-pool rebuild waits for
// the retry timer's retry of the same pool. stop() waits for the running
// rebuild and refuses the queued one; the waiting one must not start once
// stopped either: it started a new run after stop() had returned (the daemon
// then closes the index and stripe store under it). In process: real
// manager, stripe store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PoolRebuildBusy } from '../src/dataplane/ec/reconstruction.js';
import { pairWithSkippedRebuild } from './helpers/rebuild.js';

test("a stop while a whole-pool rebuild waits for the timer's retry of its pool: nothing starts after stop() returns", async (t) => {
  const { r, hot1, first } = await pairWithSkippedRebuild(t, 'couchestor-review-rebuild-stop-waiting-');
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  fs.renameSync(`${hot1}.gone`, hot1);

  // The timer's retry of a on cold-2 runs; the operator asks cold-2 whole (waits for it).
  const timerRun = r.retrySkippedVolumes();
  assert.deepEqual(r.rebuildRunning(), { pool: 'cold-2', wholePool: false, startedBy: 'timer', queued: null });
  const asked = r.rebuildPool('cold-2').then(
    (report) => ({ ran: true as const, report }),
    (err: Error) => ({ ran: false as const, err }),
  );
  await r.stop();
  assert.equal(r.rebuildRunning(), null, 'no pool rebuild runs once stop() has returned');
  await timerRun;
  const outcome = await asked;
  assert.equal(outcome.ran, false, `the waiting request did not run after the stop: ${JSON.stringify(outcome)}`);
  assert.ok(!outcome.ran && outcome.err instanceof PoolRebuildBusy, 'refused as the queued one is: the daemon is stopping');
});
