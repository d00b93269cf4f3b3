// An operator's rebuild of one cold pool asked while the retry timer's
// rebuild of another runs waits for it and then runs (GET /v1/cold names it
// as queued), instead of failing with PoolRebuildBusy: the operator did not
// start the timer's run and could not know. Bounded: one request waits; one
// for yet another pool is refused (409), as it is while an operator's own
// rebuild runs. In process: real manager, stripe store, segment files, LMDB
// index, Reconstructor and API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PoolRebuildBusy, type PoolRebuildReport } from '../src/dataplane/ec/reconstruction.js';
import { buildApi } from '../src/control/api.js';
import { readVolume } from './helpers/volume.js';
import { holdNextRebuildGroup, pairWithSkippedRebuild, replacePoolDir } from './helpers/rebuild.js';

test("an operator's rebuild of another pool waits for the retry timer's rebuild, then runs; a third pool is refused", async (t) => {
  // a on hot-1 (offline), b on hot-0: two stripes each. cold-2 is lost; its rebuild skips a.
  const { dir, m, r, hot1, want, first } = await pairWithSkippedRebuild(t, 'couchestor-rebuild-queued-behind-timer-');
  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);

  // hot-1 is back, and cold-3 is lost too (4+2: two shards per stripe still missing at most).
  fs.renameSync(`${hot1}.gone`, hot1);
  replacePoolDir(dir, 'cold-3');

  // The retry timer's step for skipped volumes starts its rebuild of cold-2 (a's stripes),
  // held at its first group until the API has been asked below (the API's start and a GET
  // took about as long as this two-stripe run, within 30-50 ms at load 11-13: unheld, the
  // run could end before the GET and the operator's cold-3 run be the one listed).
  const held = holdNextRebuildGroup(m);
  const order: string[] = [];
  const timerRun = r.retrySkippedVolumes().then((reports) => (order.push('timer'), reports));
  assert.deepEqual(r.rebuildRunning(), { pool: 'cold-2', wholePool: false, startedBy: 'timer', queued: null });

  // The operator asks for cold-3, then again through the API (the same wait), and for yet other pools.
  const asked = r.rebuildPool('cold-3').then((report) => (order.push('operator'), report));
  const app = buildApi(m);
  t.after(() => app.close());
  const askedByApi = app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: 'cold-3' } });
  const during = (await app.inject({ method: 'GET', url: '/v1/cold' })).json() as { rebuilding: unknown; incompleteRebuilds: { pool: string }[] };
  assert.deepEqual(during.rebuilding, { pool: 'cold-2', wholePool: false, startedBy: 'timer', queued: 'cold-3' });
  assert.deepEqual(during.incompleteRebuilds.map((e) => e.pool), ['cold-2'], 'the list is what the last finished rebuild left');
  await assert.rejects(r.rebuildPool('cold-4'), PoolRebuildBusy, 'one request waits; another pool is refused');
  const refused = await app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: 'cold-5' } });
  assert.equal(refused.statusCode, 409, refused.body);
  assert.match(refused.body, /retry timer.*cold-3 is queued/);
  await held.reached;
  assert.deepEqual(order, [], 'nothing ended while the timer\'s run was held');
  held.release();

  const [timerReports, report, res] = await Promise.all([timerRun, asked, askedByApi]);
  assert.deepEqual(order, ['timer', 'operator'], "the operator's rebuild ran after the timer's");
  assert.equal(timerReports.length, 1);
  assert.equal(timerReports[0]!.pool, 'cold-2');
  assert.equal(timerReports[0]!.complete, true, JSON.stringify(timerReports[0]));
  assert.equal(report.pool, 'cold-3');
  assert.equal(report.retryOfSkipped, false, 'a whole-pool rebuild');
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.equal(report.stripesChecked, 4, 'every stripe has a shard on cold-3');
  assert.equal(res.statusCode, 200, res.body);
  assert.equal((res.json() as PoolRebuildReport).durationMs, report.durationMs, 'the API request shared the same run');
  assert.equal(r.rebuildRunning(), null);
  assert.deepEqual(r.incompleteRebuilds(), []);

  // Every stripe verifies and reads back, with cold-2 and cold-3 both rebuilt.
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0);
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);
});
