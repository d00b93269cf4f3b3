// Review finding (r11, session 10), seen reviewing 1117d8c (offline `pools
// list` counts a cold pool's usage from its segment files): the running
// daemon's own figure for a cold pool was 0 after a restart until the first
// compaction pass (never with compaction off). Fixed: openManager sets it
// once the cold tier has started (StripeStore.refreshPoolUsage, from the
// segment stores' file sizes; offline `pools list` counts the same files).
// Real daemon processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MiB, api } from './helpers/cold.js';
import { coldVolumeWithWork } from './helpers/missing-pool.js';

interface PoolRow {
  name: string;
  tier: string;
  path: string;
  usedBytes: number | null;
}

function segmentBytes(poolDir: string): number {
  const dir = path.join(poolDir, 'segments');
  return fs.readdirSync(dir).reduce((sum, n) => sum + fs.statSync(path.join(dir, n)).size, 0);
}

test('a cold pool\'s usedBytes after a restart is its segment files\' bytes, as before the restart and as offline `pools list` says', async (t) => {
  const fx = await coldVolumeWithWork(t, 'review-cold-usage-', 8 * MiB, 8 * MiB, 0x3f5);
  let d = fx.d;
  const cold = (rows: PoolRow[]) => rows.filter((p) => p.tier === 'cold');
  const before = cold(await api<PoolRow[]>(d, 'GET', '/v1/pools'));
  for (const p of before) assert.equal(p.usedBytes, segmentBytes(p.path), `${p.name} before the restart`);
  assert.equal(await d.stop(), 0);
  const offline = cold(JSON.parse(d.cli('pools', 'list', '--json').stdout) as PoolRow[]);
  for (const p of offline) assert.equal(p.usedBytes, segmentBytes(p.path), `${p.name} offline`);
  d = await fx.restart();
  const after = cold(await api<PoolRow[]>(d, 'GET', '/v1/pools'));
  for (const p of after) assert.equal(p.usedBytes, segmentBytes(p.path), `${p.name} after the restart`);
});
