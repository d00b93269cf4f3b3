// A volume whose pool's disk is not mounted (its mount point there, empty:
// no pool identity) is refused with a reason that says so, not "its
// directory is missing or not writable" (the directory is there and
// writable). Left out of the list; once the disk is mounted it exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { mountPool, unmountPool } from './helpers/missing-pool.js';

test('a volume whose pool disk is not mounted: the client is told the directory does not hold the pool; mounted, it exports', async (t) => {
  const d0 = await startWarmDaemon();
  let d = d0;
  t.after(() => d.cleanup());
  d.createVolume('v', '4M', '--tier', 'warm');
  assert.equal(await d.stop(), 0);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  unmountPool(warm0);
  d = await TestDaemon.start({ dataDir: d0.dataDir });

  const info = spawnSync('nbdinfo', [d.exportUri('v')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(info.status, 0);
  assert.ok(info.stderr.includes('server error message: export "v" is not available: pool warm-0 is offline (its directory is there but does not hold the pool: its disk not mounted, another disk, or in use elsewhere; the server log has the details)'), info.stderr);
  assert.ok(!info.stderr.includes(d.dataDir), info.stderr);
  const list = spawnSync('nbdinfo', ['--list', '--json', d.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual((JSON.parse(list.stdout) as { exports: unknown[] }).exports, []);

  mountPool(warm0);
  const back = spawnSync('nbdinfo', ['--size', d.exportUri('v')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(back.status, 0, back.stderr);
  assert.equal(back.stdout.trim(), String(4 * 1024 * 1024));
});
