// Review of 93a2580: a SIGTERM while an operator's rebuild waits behind the
// retry timer's rebuild. The daemon's stop closes the admin API first, and
// closing waits for in-flight requests: the queued request waited for the
// timer's run (not cut: the reconstructor was stopped only later, with the
// index) and then started a whole-pool rebuild of its own during the stop.
// A stop must cut the timer's run (the pool is listed interrupted after the
// restart) and refuse the queued request (409, the daemon is stopping), as
// Reconstructor.stop() does in process. Real daemon processes; the timer's
// run is held mid-way by the daemon's test hook (COUCHESTOR_TEST_PAUSE_POOL_REBUILD,
// released by the reconstructor's stop): a run of a few hundred ms polled for
// through GET /v1/cold ended between two polls under load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { POOL_REBUILD_GROUPS_AT_ONCE, SCRUB_GROUP_STRIPES } from '../src/dataplane/ec/reconstruction.js';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, api, loseAndReplacePool, postRebuild, scrub, startWithColdVolume } from './helpers/cold.js';

/** Stripes of the volume: a group more than the held run lands at most (a group per worker). */
const STRIPES = (POOL_REBUILD_GROUPS_AT_ONCE + 1) * SCRUB_GROUP_STRIPES;
/** The retry timer's first pass comes 10 s after the start. */
const TIMER_WAIT_MS = 60_000;
/** Bound on the stop: seconds with the fix; without it the stop never ends (the API's close waits for the held run). */
const STOP_BOUND_MS = 60_000;
const QUEUED_WAIT_MS = 10_000;

/** `p`, or a rejection saying `what` did not happen within `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

interface ColdListing {
  incompleteRebuilds: { pool: string; notRebuilt: number; interrupted?: true }[];
  rebuilding: { pool: string; wholePool: boolean; startedBy: string; queued: string | null } | null;
}

test("SIGTERM while an operator's rebuild is queued behind the timer's: the timer's run is cut, the queued one refused and never started", { timeout: 240_000 }, async (t) => {
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
  d = await TestDaemon.start({ dataDir: d.dataDir, env: { COUCHESTOR_TEST_PAUSE_POOL_REBUILD: '1' } });

  // The timer's run has landed its first group and is held there until the reconstructor stops.
  const paused = await d.line(/^couchestor paused pool-rebuild /, TIMER_WAIT_MS);
  assert.equal(paused, 'couchestor paused pool-rebuild {"pool":"cold-2"}');
  const held = await api<ColdListing>(d, 'GET', '/v1/cold');
  assert.deepEqual(held.rebuilding, { pool: 'cold-2', wholePool: true, startedBy: 'timer', queued: null }, JSON.stringify(held));
  const asked = postRebuild(d, 'cold-3');
  // The request waits behind the held run: polled until the listing names it (it stays so until the stop).
  const deadline = Date.now() + QUEUED_WAIT_MS;
  let queued = await api<ColdListing>(d, 'GET', '/v1/cold');
  while (queued.rebuilding?.queued !== 'cold-3' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    queued = await api<ColdListing>(d, 'GET', '/v1/cold');
  }
  assert.deepEqual(queued.rebuilding, { pool: 'cold-2', wholePool: true, startedBy: 'timer', queued: 'cold-3' }, 'the request waits behind the timer');

  const code = await within(d.stop(), STOP_BOUND_MS, "the daemon's exit after SIGTERM (the stop waits for the queued request, which waits for the timer's held run: the admin API closed before the rebuilds were stopped?)");
  assert.equal(code, 0, 'a clean exit');
  const res = await asked;
  const body = await res.text();
  const afterStop = d.stderr.slice(d.stderr.indexOf('stopping'));
  const cut = /pool rebuild finished pool=cold-2 complete=false .*stripesRebuilt=(\d+)/.exec(afterStop);
  assert.ok(cut, `the stop cut the timer's run:\n${afterStop}`);
  assert.ok(Number(cut[1]) > 0 && Number(cut[1]) < STRIPES, `cut mid-way: ${cut[0]}`);
  t.diagnostic(`the timer's run was cut after ${cut[1]} of ${STRIPES} stripes`);
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
