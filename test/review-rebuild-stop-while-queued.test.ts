// Review of 93a2580: a SIGTERM while an operator's rebuild waits behind the
// retry timer's rebuild. The daemon's stop closes the admin API first, and
// closing waits for in-flight requests: the queued request waited for the
// timer's run (not cut: the reconstructor was stopped only later, with the
// index) and then started a whole-pool rebuild of its own during the stop.
// A stop must cut the timer's run (the pool is listed interrupted after the
// restart) and refuse the queued request (409, the daemon is stopping), as
// Reconstructor.stop() does in process. Real daemon processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, api, loseAndReplacePool, postRebuild, scrub, startWithColdVolume } from './helpers/cold.js';

/** Enough stripes that the timer's rebuild of a replaced pool lasts a few hundred ms at least. */
const STRIPES = 256;
const TIMER_WAIT_MS = 60_000;

interface ColdListing {
  incompleteRebuilds: { pool: string; notRebuilt: number; interrupted?: true }[];
  rebuilding: { pool: string; wholePool: boolean; startedBy: string; queued: string | null } | null;
}

test("SIGTERM while an operator's rebuild is queued behind the timer's: the timer's run is cut, the queued one refused and never started", async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-stop-queued-'));
  let { d } = await startWithColdVolume(work, STRIPES * MiB, STRIPES * MiB, 0x5e7);
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  await d.stop();
  // cold-2 replaced empty, its last rebuild cut: the retry timer rebuilds it whole after the start.
  loseAndReplacePool(d, 2);
  const meta = MetaStore.open(d.dataDir);
  await meta.incompleteRebuilds.put('cold-2', { volumesSkipped: [], notRebuilt: 0, state: 'interrupted' });
  await meta.close();
  d = await TestDaemon.start({ dataDir: d.dataDir });

  // Polled through the API (no event crosses the process boundary), bounded.
  const deadline = Date.now() + TIMER_WAIT_MS;
  let now = await api<ColdListing>(d, 'GET', '/v1/cold');
  while (now.rebuilding?.startedBy !== 'timer') {
    assert.ok(Date.now() < deadline && now.incompleteRebuilds.length > 0, `the timer's rebuild of cold-2 started: ${JSON.stringify(now)}`);
    await new Promise((r) => setTimeout(r, 5));
    now = await api<ColdListing>(d, 'GET', '/v1/cold');
  }
  const asked = postRebuild(d, 'cold-3');
  let queued = await api<ColdListing>(d, 'GET', '/v1/cold');
  for (let i = 0; i < 20 && queued.rebuilding?.queued !== 'cold-3'; i++) queued = await api<ColdListing>(d, 'GET', '/v1/cold');
  assert.deepEqual(queued.rebuilding, { pool: 'cold-2', wholePool: true, startedBy: 'timer', queued: 'cold-3' }, 'the request waits behind the timer (a longer volume if the run ended first)');

  const exited = d.stop();
  const res = await asked;
  const body = await res.text();
  assert.equal(await exited, 0, 'a clean exit');
  const afterStop = d.stderr.slice(d.stderr.indexOf('stopping'));
  assert.doesNotMatch(afterStop, /pool rebuild finished pool=cold-3/, 'no rebuild of cold-3 started during the stop');
  assert.equal(res.status, 409, `the queued request is refused: the daemon is stopping: ${body}`);
  assert.match(body, /stopping/);

  // The timer's run was cut: cold-2 is listed interrupted after the restart, and a rebuild completes it.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const listed = (await api<ColdListing>(d, 'GET', '/v1/cold')).incompleteRebuilds;
  assert.deepEqual(listed.map((e) => [e.pool, e.interrupted]), [['cold-2', true]]);
  const report = await api<{ complete: boolean }>(d, 'POST', '/v1/rebuild', { pool: 'cold-2' });
  assert.equal(report.complete, true, JSON.stringify(report));
  const checked = await scrub(d);
  assert.equal(checked.stripesChecked, STRIPES);
  assert.equal(checked.badStripes, 0);
});
