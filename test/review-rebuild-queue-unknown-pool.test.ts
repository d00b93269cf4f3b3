// Review of 93a2580: an operator's rebuild of a pool that is not a cold pool
// (a typo), asked while the retry timer's rebuild runs, is refused at once
// (UnknownPool, 404), not queued: queued, it waited for the whole timer run
// before its 404, and held the one waiting slot meanwhile, so a real
// request for another pool was refused (409). In process: real manager,
// stripe store, segment files, LMDB index, Reconstructor and API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { UnknownPool } from '../src/dataplane/ec/reconstruction.js';
import { buildApi } from '../src/control/api.js';
import { pairWithSkippedRebuild } from './helpers/rebuild.js';

test("a rebuild of a pool that does not exist, asked while the timer's rebuild runs, is refused at once and takes no waiting slot", async (t) => {
  const { m, r, hot1, first } = await pairWithSkippedRebuild(t, 'couchestor-review-rebuild-queue-unknown-');
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  fs.renameSync(`${hot1}.gone`, hot1);

  const timerRun = r.retrySkippedVolumes();
  assert.equal(r.rebuildRunning()?.startedBy, 'timer');
  const app = buildApi(m);
  t.after(() => app.close());
  const asked = r.rebuildPool('cold-9');
  assert.deepEqual(r.rebuildRunning(), { pool: 'cold-2', wholePool: false, startedBy: 'timer', queued: null }, 'no slot taken');
  const real = r.rebuildPool('cold-3');
  assert.equal(r.rebuildRunning()?.queued, 'cold-3', 'the slot is free for a real request');
  const byApi = app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: 'cold-9' } });
  let settled = '';
  const refused = assert.rejects(asked, UnknownPool).then(() => (settled ||= 'typo refused'));
  const timerEnded = timerRun.then(() => (settled ||= 'timer run ended'));
  await Promise.all([refused, timerEnded]);
  assert.equal(settled, 'typo refused', "refused before the timer's run ends, not after waiting for it");
  const res = await byApi;
  assert.equal(res.statusCode, 404, res.body);
  assert.match(res.body, /no cold pool named cold-9/);
  assert.equal((await real).complete, true);
});
