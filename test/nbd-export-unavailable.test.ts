// An export whose volume exists but cannot be opened (here: its warm pool's
// directory is missing at start) is refused with NBD_REP_ERR_UNKNOWN (proto.md:
// "the requested export is not available") and a message that says so and
// why, instead of "unknown export", which is kept for names with no volume.
// libnbd 1.14 maps ERR_UNKNOWN to "server has no export named" and shows the
// server's message on its debug channel (LIBNBD_DEBUG=1 / h.set_debug).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { OPT, RawNbd, REP, goData } from './helpers/nbd-client.js';

test('a volume whose pool is offline: the client is told it is not available and why; an unknown name stays unknown', async (t) => {
  const d0 = await startWarmDaemon();
  let d = d0;
  t.after(() => d.cleanup());
  d.createVolume('v', '4M', '--tier', 'warm');
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  assert.equal(await d.stop(), 0);
  fs.renameSync(warm0, `${warm0}.unmounted`);
  d = await TestDaemon.start({ dataDir: d0.dataDir });

  // The real client: nbdinfo with libnbd's debug channel shows the server's message.
  const info = spawnSync('nbdinfo', [d.exportUri('v')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(info.status, 0);
  assert.match(info.stderr, /server error message: export "v" is not available: pool warm-0: directory .*warm-0 is missing or not writable/);
  assert.doesNotMatch(info.stderr, /server error message: unknown export "v"/);
  const unknown = spawnSync('nbdinfo', [d.exportUri('nosuch')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /server error message: unknown export "nosuch"/);

  // nbdsh: the error is ENOENT (ERR_UNKNOWN) for both, the handle stays usable, and the
  // debug line names the reason.
  const sh = spawnSync(
    'nbdsh',
    [
      '-c',
      `
import nbd
h.set_debug(True)
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(d.exportUri('v'))})
for name in ["v", "nosuch"]:
    h.set_export_name(name)
    try:
        h.opt_info()
        print("ok")
    except nbd.Error as e:
        print(e.errno)
h.opt_abort()
`,
    ],
    { encoding: 'utf8', env: CLIENT_ENV },
  );
  assert.equal(sh.status, 0, sh.stderr);
  assert.deepEqual(sh.stdout.trim().split('\n'), ['ENOENT', 'ENOENT']);
  assert.match(sh.stderr, /nbd_opt_info: handshake: server error message: export "v" is not available: pool warm-0: directory .* is missing or not writable/);
  assert.match(sh.stderr, /nbd_opt_info: handshake: server error message: unknown export "nosuch"/);

  // On the wire: the reply type for both, and the texts (within the 4096-byte string limit).
  const c = await RawNbd.connect({ port: d.info.nbd.port });
  t.after(() => c.close());
  await c.greeting();
  c.sendClientFlags(3);
  for (const opt of [OPT.INFO, OPT.GO]) {
    c.sendOption(opt, goData('v'));
    const r = await c.readOptionReply();
    assert.equal(r.type, REP.ERR_UNKNOWN);
    assert.match(r.data.toString('utf8'), /^export "v" is not available: pool warm-0: directory .*warm-0 is missing or not writable/);
    assert.ok(r.data.length <= 4096);
    c.sendOption(opt, goData('nosuch'));
    const u = await c.readOptionReply();
    assert.equal(u.type, REP.ERR_UNKNOWN);
    assert.equal(u.data.toString('utf8'), 'unknown export "nosuch"');
  }

  // Back: the same name exports.
  fs.renameSync(`${warm0}.unmounted`, warm0);
  const back = spawnSync('nbdinfo', ['--size', d.exportUri('v')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(back.status, 0, back.stderr);
  assert.equal(back.stdout.trim(), String(4 * 1024 * 1024));
});
