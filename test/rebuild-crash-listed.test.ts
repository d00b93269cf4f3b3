// A hard crash (SIGKILL of the daemon) during a whole-pool rebuild of a cold
// pool that had no incomplete-rebuild entry: after the restart the pool is
// listed (GET /v1/cold incompleteRebuilds, interrupted; the
// couchestor_rebuild_incomplete gauge at 1), and the retry timer rebuilds the
// whole pool on its own, after which every stripe verifies (scrub, offline
// fsck) and the volume reads back byte-exact with two other pools lost.
// Before, nothing was written until the rebuild ended: after the restart the
// pool was not listed and nothing rebuilt it (the cold tier stayed at reduced
// redundancy, silently). Real daemon processes, real SIGKILL, landed while
// the rebuild is held mid-way by the daemon's test hook
// (COUCHESTOR_TEST_PAUSE_POOL_REBUILD): raced against a 32-stripe rebuild by
// polling the pool's size, the kill could come after its end under load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { POOL_REBUILD_GROUPS_AT_ONCE, SCRUB_GROUP_STRIPES } from '../src/dataplane/ec/reconstruction.js';
import { TestDaemon } from './helpers/daemon.js';
import {
  MiB,
  allHealthy,
  api,
  coldStatus,
  fsck,
  loseAndReplacePool,
  readBackWithPoolsLost,
  rebuildPool,
  scrub,
  segmentBytes,
  startWithColdVolume,
} from './helpers/cold.js';
import { poolGauge, type ListedRebuild } from './helpers/rebuild.js';

/**
 * A group more than the held rebuild writes at most (a group per worker), so that group at least
 * has no record on the pool at the kill: written ones can sit exactly where the old references
 * point (same order, same sizes) and then verify without a flip.
 */
const STRIPES = (POOL_REBUILD_GROUPS_AT_ONCE + 1) * SCRUB_GROUP_STRIPES;
const LOST = 2;
/** The held rebuild's first group written: seconds at most. */
const PAUSE_WAIT_MS = 60_000;
/** The daemon's retry interval is 10 s: its first pass after the restart, with room for a loaded box. */
const TIMER_WAIT_MS = 60_000;

interface ColdListing {
  incompleteRebuilds: ListedRebuild[];
  rebuilding: { pool: string; wholePool: boolean; startedBy: string; queued: string | null } | null;
}

test('SIGKILL during a whole-pool rebuild of a pool with no entry: listed after the restart, and the retry timer rebuilds the whole pool', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'rebuild-crash-listed-'));
  let { d, model } = await startWithColdVolume(work, STRIPES * MiB, STRIPES * MiB, 0x3c71, { COUCHESTOR_TEST_PAUSE_POOL_REBUILD: '1' });
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  assert.deepEqual((await coldStatus(d)).stripes, allHealthy(STRIPES));
  assert.deepEqual((await api<ColdListing>(d, 'GET', '/v1/cold')).incompleteRebuilds, [], 'no entry before');

  // Killed once the rebuild has written its first group of shard records on the replaced pool
  // (held there by the hook; its flips come after the window's sync: none yet).
  loseAndReplacePool(d, LOST);
  const pending = rebuildPool(d, LOST).then(
    () => 'finished',
    () => 'killed',
  );
  assert.equal(await d.line(/^couchestor paused pool-rebuild /, PAUSE_WAIT_MS), `couchestor paused pool-rebuild {"pool":"cold-${LOST}"}`);
  assert.ok(segmentBytes(d, LOST) > 0, 'shard records written on the pool before the kill');
  await d.kill();
  assert.equal(await pending, 'killed');
  const { report, stdout } = fsck(d);
  assert.equal(report.halfWrittenStripes, 0, stdout);
  assert.equal(report.stripes.Failed, 0, stdout);
  for (const b of report.badShards) assert.equal(b.pool, `cold-${LOST}`, stdout);
  const degraded = report.stripes.Degraded;
  t.diagnostic(`killed mid-rebuild: ${degraded} of ${STRIPES} stripes still without their cold-${LOST} shard, ${segmentBytes(d, LOST)} bytes on the pool`);
  assert.ok(degraded >= SCRUB_GROUP_STRIPES, `stripes still without their cold-${LOST} shard after the kill: ${stdout}`);
  d = await TestDaemon.start({ dataDir: d.dataDir }); // without the hook

  // After the restart: listed (API and gauge), before the timer's first pass (10 s after start).
  const listing = await api<ColdListing>(d, 'GET', '/v1/cold');
  assert.deepEqual(listing.incompleteRebuilds, [{ pool: `cold-${LOST}`, volumesSkipped: [], notRebuilt: 1, interrupted: true }], 'the pool is listed after the restart');
  assert.equal(await poolGauge(d, 'couchestor_rebuild_incomplete', `cold-${LOST}`), 1);
  assert.equal(await poolGauge(d, 'couchestor_rebuild_stripes_not_rebuilt', `cold-${LOST}`), 1, 'at least one: how many is not known');
  assert.equal(await poolGauge(d, 'couchestor_rebuild_incomplete', 'cold-0'), 0);

  // No rebuild is asked for: the retry timer rebuilds the whole pool. Polled through the API
  // (no event crosses the process boundary), bounded.
  const deadline = Date.now() + TIMER_WAIT_MS;
  let now = listing;
  while (now.incompleteRebuilds.length > 0 || now.rebuilding !== null) {
    assert.ok(Date.now() < deadline, `the retry timer rebuilt the pool within ${TIMER_WAIT_MS} ms: ${JSON.stringify(now)}`);
    await new Promise((r) => setTimeout(r, 250));
    now = await api<ColdListing>(d, 'GET', '/v1/cold');
  }
  assert.equal(await poolGauge(d, 'couchestor_rebuild_incomplete', `cold-${LOST}`), 0);
  const status = await coldStatus(d);
  assert.ok(status.shardsRebuilt >= degraded, `the timer's rebuild rebuilt the ${degraded} missing shards: ${JSON.stringify(status)}`);

  // Every stripe verifies: the scrub finds nothing to repair, and offline fsck agrees.
  const checked = await scrub(d);
  assert.equal(checked.stripesChecked, STRIPES);
  assert.equal(checked.badStripes, 0, 'no stripe lacks its shard on the rebuilt pool');
  await d.kill();
  const final = fsck(d);
  assert.deepEqual(final.report.stripes, { Healthy: STRIPES, Degraded: 0, Failed: 0 }, final.stdout);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.deepEqual((await api<ColdListing>(d, 'GET', '/v1/cold')).incompleteRebuilds, [], 'the clear is durable');
  // k = 4 survivors with cold-0 and cold-5 gone: the rebuilt shards carry every read.
  const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'after the timer rebuilt the pool');
  assert.equal(after.failedReads, 0);
});
