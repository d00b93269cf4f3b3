// /metrics passes the real `promtool check metrics` (Prometheus' own parser
// and linter) and has no series twice, on a fresh daemon, after a volume is
// deleted, and while a cold pool's directory is missing; /readyz answers 503
// naming the missing pool and 200 once it is back. Before, every scrape
// failed promtool (exit 3): prom-client's default metrics include three
// gauges named like counters (nodejs_active_{handles,requests,resources}_total).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { metric, scrape } from './helpers/control-loop.js';

const PROMTOOL = '/usr/bin/promtool';

/** promtool's verdict, and a check of our own that no family is typed twice and no series appears twice. */
function check(text: string, when: string): void {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `${when}: promtool check metrics exited ${r.status}:\n${r.stdout}${r.stderr}`);
  const types = new Map<string, number>();
  const series = new Set<string>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) /.exec(line);
    if (t) types.set(t[1]!, (types.get(t[1]!) ?? 0) + 1);
    if (line === '' || line.startsWith('#')) continue;
    const key = line.slice(0, line.lastIndexOf(' '));
    assert.ok(!series.has(key), `${when}: series ${key} appears twice`);
    series.add(key);
  }
  for (const [name, n] of types) assert.equal(n, 1, `${when}: # TYPE ${name} given ${n} times`);
}

async function readyz(d: TestDaemon): Promise<{ status: number; reasons: string[] }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/readyz`);
  return { status: res.status, reasons: ((await res.json()) as { reasons: string[] }).reasons };
}

test('promtool accepts /metrics fresh, after a delete and with a cold pool missing; /readyz follows the pool', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  assert.ok(fs.existsSync(PROMTOOL), 'the prometheus package provides promtool');
  d.createVolume('v1', '4M');
  d.createVolume('v2', '4M');
  d.createVolume('c1', '4M', '--tier', 'cold');
  // A volume has series once it is open: a client connects to each.
  for (const v of ['v1', 'v2', 'c1']) {
    const r = spawnSync('nbdinfo', [d.exportUri(v)], { encoding: 'utf8', env: CLIENT_ENV });
    assert.equal(r.status, 0, r.stderr);
  }
  const fresh = await scrape(d);
  check(fresh, 'fresh');
  assert.equal(metric(fresh, 'couchestor_volume_tier', { volume: 'c1', tier: 'cold' }), 1);
  assert.equal(metric(fresh, 'couchestor_volume_tier', { volume: 'v1', tier: 'hot' }), 1);
  assert.equal((await readyz(d)).status, 200);

  const del = d.cli('volumes', 'delete', 'v1');
  assert.equal(del.status, 0, del.stderr);
  const afterDelete = await scrape(d);
  check(afterDelete, 'after delete');
  assert.equal(metric(afterDelete, 'couchestor_volume_read_ops_total', { volume: 'v1' }), undefined, 'no series for a deleted volume');
  assert.equal(metric(afterDelete, 'couchestor_volume_tier', { volume: 'v2', tier: 'hot' }), 1);

  const cold3 = path.join(d.dataDir, 'pools', 'cold-3');
  fs.renameSync(cold3, `${cold3}.away`);
  const missing = await scrape(d);
  check(missing, 'cold-3 missing');
  assert.equal(metric(missing, 'couchestor_pool_capacity_bytes', { pool: 'cold-3' }) !== undefined, true);
  const notReady = await readyz(d);
  assert.equal(notReady.status, 503);
  assert.ok(notReady.reasons.some((r) => r.includes('pool cold-3 missing')), JSON.stringify(notReady.reasons));

  fs.renameSync(`${cold3}.away`, cold3);
  check(await scrape(d), 'cold-3 back');
  assert.equal((await readyz(d)).status, 200);
});
