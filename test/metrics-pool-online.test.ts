// couchestor_pool_online{pool,tier}: 1 while a pool's directory is there,
// 0 while it is missing (the check /readyz makes, Pool.isOnline), following
// the directory at runtime; a pool no longer listed has no series. Before,
// an offline pool showed only as /readyz 503, couchestor_volume_unavailable
// and degraded reads: no per-pool series to alert on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { metric, scrape } from './helpers/control-loop.js';
import { createMetrics, type MetricsSource, type PoolUsage } from '../src/control/metrics/index.js';

const PROMTOOL = '/usr/bin/promtool';

function promtool(text: string, when: string): void {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `${when}: promtool check metrics exited ${r.status}:\n${r.stdout}${r.stderr}`);
}

async function readyz(d: TestDaemon): Promise<{ status: number; reasons: string[] }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/readyz`);
  return { status: res.status, reasons: ((await res.json()) as { reasons: string[] }).reasons };
}

function onlineSeries(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^couchestor_pool_online\{pool="([^"]+)",tier="([^"]+)"\} (\S+)$/gm)) out.set(`${m[1]}/${m[2]}`, Number(m[3]));
  return out;
}

test('couchestor_pool_online follows a cold pool directory removed and put back at runtime, like /readyz', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  const all = await scrape(d);
  promtool(all, 'all online');
  assert.match(all, /^# HELP couchestor_pool_online .*\/readyz/m);
  assert.match(all, /^# TYPE couchestor_pool_online gauge$/m);
  const pools = (await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/pools`)).json()) as { name: string; tier: string }[];
  assert.ok(pools.length >= 7, `pools: ${pools.map((p) => p.name).join(',')}`);
  // One series per pool the daemon knows, labelled with its tier, all 1.
  assert.deepEqual(onlineSeries(all), new Map(pools.map((p) => [`${p.name}/${p.tier}`, 1])));

  const cold3 = path.join(d.dataDir, 'pools', 'cold-3');
  fs.renameSync(cold3, `${cold3}.away`);
  const missing = await scrape(d);
  promtool(missing, 'cold-3 missing');
  assert.equal(metric(missing, 'couchestor_pool_online', { pool: 'cold-3', tier: 'cold' }), 0);
  // The other pools stay 1, and /readyz names the same pool the gauge says is offline.
  const zeros = [...onlineSeries(missing)].filter(([, v]) => v === 0).map(([k]) => k);
  assert.deepEqual(zeros, ['cold-3/cold']);
  const notReady = await readyz(d);
  assert.equal(notReady.status, 503);
  assert.deepEqual(notReady.reasons, [`pool cold-3 missing (${cold3})`]);

  fs.renameSync(`${cold3}.away`, cold3);
  const back = await scrape(d);
  promtool(back, 'cold-3 back');
  assert.equal(metric(back, 'couchestor_pool_online', { pool: 'cold-3', tier: 'cold' }), 1);
  assert.deepEqual(onlineSeries(back), onlineSeries(all));
  assert.equal((await readyz(d)).status, 200);
});

test('couchestor_pool_online: a pool the source no longer lists leaves no series; a source that does not say gives none', async () => {
  let pools: PoolUsage[] = [
    { pool: 'hot-0', tier: 'hot', capacityBytes: 100, usedBytes: 0, online: true },
    { pool: 'cold-0', tier: 'cold', capacityBytes: 100, usedBytes: 0, online: false },
  ];
  const source: MetricsSource = {
    volumes: () => [],
    pools: () => pools,
    migrations: () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 }),
    degradedReadsTotal: () => 0,
    journalBytes: () => 0,
    stripes: () => ({}),
  };
  const registry = createMetrics(source);
  const first = await registry.metrics();
  assert.deepEqual(onlineSeries(first), new Map([['hot-0/hot', 1], ['cold-0/cold', 0]]));
  pools = [pools[0]!];
  const second = await registry.metrics();
  promtool(second, 'cold-0 gone');
  assert.deepEqual(onlineSeries(second), new Map([['hot-0/hot', 1]]));
  pools = [{ pool: 'hot-0', tier: 'hot', capacityBytes: 100, usedBytes: 0 }];
  assert.deepEqual(onlineSeries(await registry.metrics()), new Map());
});
