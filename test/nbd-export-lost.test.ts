// A volume marked lost by `pools replace --discard-volumes` (its data was
// only on the replaced disk) is refused with a reason that says so and what
// to do, not "the volume cannot be opened (VolumeFailed ...)"; it is left
// out of the list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon, nbdsh } from './helpers/daemon.js';
import { startWarmDaemon } from './helpers/hot-warm.js';

test('a volume lost with its replaced pool disk: the client is told its data was lost and that it can only be deleted', async (t) => {
  const d0 = await startWarmDaemon();
  let d: TestDaemon = d0;
  t.after(() => d.cleanup());
  d.createVolume('v', '4M', '--tier', 'warm');
  d.createVolume('kept', '4M');
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('v'))})\nh.pwrite(b"x" * 4096, 0)\nh.flush()\nh.shutdown()`);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  assert.equal(await d.stop(), 0);
  fs.rmSync(warm0, { recursive: true });
  fs.mkdirSync(warm0);
  const discarded = d.cli('pools', 'replace', 'warm-0', '--discard-volumes');
  assert.equal(discarded.status, 0, discarded.stderr);
  d = await TestDaemon.start({ dataDir: d0.dataDir });

  const info = spawnSync('nbdinfo', [d.exportUri('v')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(info.status, 0);
  assert.ok(info.stderr.includes('server error message: export "v" is not available: its data was lost with pool warm-0\'s disk (replaced with `pools replace --discard-volumes`): it can only be deleted'), info.stderr);
  const list = spawnSync('nbdinfo', ['--list', '--json', d.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual((JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']), ['kept']);
});
