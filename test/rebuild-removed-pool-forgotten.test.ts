// A cold pool made another tier in the daemon's configuration loses its
// incomplete-rebuild entry and its rebuild gauge series at the next start:
// nothing rebuilds a pool that is no longer a cold pool, so the entry
// (GET /v1/cold incompleteRebuilds, the index record) and the series
// (couchestor_rebuild_* {pool}) stayed forever. A configured cold pool's
// entry is kept. (A cold pool only taken out of the configuration stays a
// cold pool in the index, and keeps its entry: review-rebuild-removed-pool-kept.)
// Real daemon processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, api, startColdDaemon } from './helpers/cold.js';

const poolsConfig = (cold: number) =>
  MANUAL_DESTAGE_CONFIG +
  'pools:\n  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }\n' +
  Array.from({ length: cold }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

const GAUGES = ['couchestor_rebuild_incomplete', 'couchestor_rebuild_volumes_skipped', 'couchestor_rebuild_stripes_not_rebuilt'];

async function listed(d: TestDaemon): Promise<{ pool: string; notRebuilt: number }[]> {
  return (await api<{ incompleteRebuilds: { pool: string; notRebuilt: number }[] }>(d, 'GET', '/v1/cold')).incompleteRebuilds;
}

/** Every rebuild gauge line of one /metrics scrape, by "name{pool}". */
async function rebuildSeries(d: TestDaemon): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${d.info.metrics.host}:${d.info.metrics.port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(couchestor_rebuild_[a-z_]+)\{pool="([^"]+)"\} (\S+)$/.exec(line);
    if (m && GAUGES.includes(m[1]!)) out.set(`${m[1]}{${m[2]}}`, Number(m[3]));
  }
  return out;
}

async function recordsIn(dataDir: string): Promise<string[]> {
  const meta = MetaStore.open(dataDir);
  try {
    return [...meta.incompleteRebuilds.getKeys()].sort();
  } finally {
    await meta.close();
  }
}

test("a cold pool made another tier: its incomplete-rebuild entry and gauge series are gone after the restart; a configured pool's stay", async (t) => {
  let d = await startColdDaemon(poolsConfig(7));
  t.after(() => d.cleanup());
  assert.deepEqual(await listed(d), []);
  await d.stop();
  // Two pools not fully rebuilt, as a finished rebuild that left stripes not rebuilt records them.
  const meta = MetaStore.open(d.dataDir);
  await meta.incompleteRebuilds.put('cold-1', { volumesSkipped: [], notRebuilt: 2 });
  await meta.incompleteRebuilds.put('cold-6', { volumesSkipped: [], notRebuilt: 3 });
  await meta.close();

  // Both still configured: both listed, with series.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.deepEqual((await listed(d)).map((e) => e.pool), ['cold-1', 'cold-6']);
  const before = await rebuildSeries(d);
  assert.equal(before.get('couchestor_rebuild_incomplete{cold-6}'), 1);
  assert.equal(before.get('couchestor_rebuild_stripes_not_rebuilt{cold-6}'), 3);
  await d.stop();

  // cold-6 made a warm pool (six cold pools left: the 4+2 tier still starts).
  fs.writeFileSync(`${d.dataDir}/couchestor.yaml`, poolsConfig(6) + '  - { name: cold-6, tier: warm, path: pools/cold-6, capacity: auto }\n');
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.deepEqual(await listed(d), [{ pool: 'cold-1', volumesSkipped: [], notRebuilt: 2 }], "cold-6's entry is gone, cold-1's kept");
  const after = await rebuildSeries(d);
  for (const g of GAUGES) assert.equal(after.has(`${g}{cold-6}`), false, `no ${g} series for the pool no longer cold`);
  assert.equal(after.get('couchestor_rebuild_incomplete{cold-1}'), 1);
  assert.equal(after.get('couchestor_rebuild_incomplete{cold-0}'), 0, 'a configured cold pool still has its 0');
  assert.match(d.stderr, /dropped the incomplete-rebuild record of a pool no longer configured/);
  await d.stop();
  assert.deepEqual(await recordsIn(d.dataDir), ['cold-1'], 'the record is gone from the index');
});
