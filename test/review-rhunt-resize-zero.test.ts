// `couchestor volumes resize NAME 0` through the daemon printed the admin
// API's schema wording, "body/sizeBytes must be >= 1", while the same command
// offline said "volume size must be a whole number of bytes between 1 and
// ...": what 4fdfef0 fixed for `volumes create`, left on PATCH
// /v1/volumes/NAME. Now the size range is resizeVolume's both ways (400 as
// before through the API).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';

test('volumes resize to 0: the same clear message with the daemon running and offline', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  const made = d.cli('volumes', 'create', 'v', '1M');
  assert.equal(made.status, 0, made.stderr);
  const check = (how: string) => {
    const zero = d.cli('volumes', 'resize', 'v', '0');
    assert.equal(zero.status, 1, `${how}: ${zero.stderr}`);
    assert.match(zero.stderr, /^couchestor: volume size must be a whole number of bytes between 1 and \d+$/m, how);
  };
  check('daemon running');
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes/v`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sizeBytes: -512 }),
  });
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as { message: string }).message, /^volume size must be a whole number of bytes between 1 and \d+$/);
  assert.equal(await d.stop(), 0);
  check('offline');
  const list = d.cli('volumes', 'list', '--json');
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual((JSON.parse(list.stdout) as { name: string; sizeBytes: number }[]).map((v) => [v.name, v.sizeBytes]), [['v', 1048576]]);
});
