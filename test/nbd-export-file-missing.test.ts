// A volume whose data file is gone from an online pool (removed outside the
// daemon) with chunks in it cannot be opened (never made again empty). The
// first NBD_OPT_LIST after the start leaves it out, so `nbdinfo --list`
// exits 0, and a client asking for it is told the file is missing, not that
// the pool's directory is (the pool is online; its other volumes serve).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon, nbdsh } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';

test('a volume whose file is gone from an online pool: left out of the first list, and the client is told the file is missing', async (t) => {
  const d = await startNbdTestDaemon();
  const restarted: TestDaemon[] = [];
  t.after(async () => {
    for (const r of restarted) await r.kill();
    await d.cleanup();
  });
  d.createVolume('other', '4M');
  const volumesDir = path.join(d.dataDir, 'pools', 'hot-0', 'volumes');
  const before = new Set(fs.readdirSync(volumesDir));
  d.createVolume('gone', '4M');
  const file = fs.readdirSync(volumesDir).find((f) => !before.has(f));
  assert.ok(file, 'the new volume has a file');
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('gone'))})\nh.pwrite(b"x" * 4096, 0)\nh.flush()\nh.shutdown()`);
  assert.equal(await d.stop(), 0);
  fs.rmSync(path.join(volumesDir, file));

  const d2 = await TestDaemon.start({ dataDir: d.dataDir });
  restarted.push(d2);
  const list = spawnSync('nbdinfo', ['--list', '--json', d2.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual((JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']).sort(), ['other', 'vol']);

  const info = spawnSync('nbdinfo', [d2.exportUri('gone')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(info.status, 0);
  assert.ok(info.stderr.includes('server error message: export "gone" is not available: pool hot-0: a data file of the volume is missing'), info.stderr);
  assert.ok(!info.stderr.includes(d2.dataDir), info.stderr);
});
