// One volume that cannot be opened (its hot pool's directory gone, as when a
// disk drops out) must not take /metrics or the cold-tier API calls down
// with it: the other volumes' stripe figures still come out, and the
// unopenable volume is named with its pool (a gauge; an entry in the answer;
// the scrub's list of volumes it skipped).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { createMetrics } from '../src/control/metrics/index.js';
import { metricsSource } from '../src/control/observe.js';
import { HeatTracker } from '../src/control/heat.js';
import { buildApi } from '../src/control/api.js';
import { coldPairWithHot1Offline, openColdTierManager, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('with one volume unopenable, /metrics, GET /v1/cold and POST /v1/scrub report the others and name it with its pool', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-offline-metrics-', () => m!);
  m = await openColdTierManager(dir);
  // a on hot-1, b on hot-0, destaged; a restart (neither volume open), then hot-1 drops out.
  const pair = await coldPairWithHot1Offline(m, dir);
  m = pair.m;
  const hot1 = pair.hot1;
  const mgr = m;

  const registry = createMetrics(metricsSource(mgr, new HeatTracker(mgr, 60_000, 1_000), () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 })));
  const text = await registry.metrics();
  // b's two stripes (a's two are not counted: a cannot be opened).
  assert.match(text, /^couchestor_stripes\{state="healthy"\} 2$/m);
  assert.match(text, /^couchestor_volume_unavailable\{volume="a",pool="hot-1"\} 1$/m);
  assert.doesNotMatch(text, /couchestor_volume_unavailable\{volume="b"/);

  const app = buildApi(mgr);
  t.after(() => app.close());
  const res = await app.inject({ method: 'GET', url: '/v1/cold' });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json() as { stripes: { Healthy: number }; unavailableVolumes: { volume: string; pool: string; error: string }[] };
  assert.equal(body.stripes.Healthy, 2);
  assert.equal(body.unavailableVolumes.length, 1);
  assert.equal(body.unavailableVolumes[0]!.volume, 'a');
  assert.equal(body.unavailableVolumes[0]!.pool, 'hot-1');
  assert.match(body.unavailableVolumes[0]!.error, /hot-1/);
  // POST /v1/scrub (`couchestor scrub`): b is scrubbed, a named as skipped.
  const scrub = await app.inject({ method: 'POST', url: '/v1/scrub' });
  assert.equal(scrub.statusCode, 200, scrub.body);
  const scrubbed = scrub.json() as { stripesChecked: number; volumesSkipped: { volume: string; pool: string }[]; unavailableVolumes: { volume: string; pool: string }[] };
  assert.equal(scrubbed.stripesChecked, 2);
  assert.deepEqual(scrubbed.volumesSkipped.map((u) => `${u.volume}@${u.pool}`), ['a@hot-1']);
  assert.deepEqual(scrubbed.unavailableVolumes.map((u) => `${u.volume}@${u.pool}`), ['a@hot-1']);

  // hot-1 is back: a opens again, its stripes count and the gauge is gone.
  fs.renameSync(`${hot1}.gone`, hot1);
  const after = await registry.metrics();
  assert.match(after, /^couchestor_stripes\{state="healthy"\} 4$/m);
  assert.doesNotMatch(after, /^couchestor_volume_unavailable\{/m);
  const again = (await app.inject({ method: 'GET', url: '/v1/cold' })).json() as { stripes: { Healthy: number }; unavailableVolumes: unknown[] };
  assert.equal(again.stripes.Healthy, 4);
  assert.deepEqual(again.unavailableVolumes, []);
});
