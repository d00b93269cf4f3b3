// An export whose volume exists but cannot be opened (here: its warm pool's
// directory is missing at start) is refused with NBD_REP_ERR_UNKNOWN (proto.md:
// "the requested export is not available") and a message that says so and
// why (the pool and the kind of failure, not the host's paths), instead of
// "unknown export", which is kept for names with no volume. libnbd 1.14 maps
// ERR_UNKNOWN to "server has no export named" and shows the server's message
// on its debug channel (LIBNBD_DEBUG=1 / h.set_debug). NBD_OPT_LIST leaves it
// out, so `nbdinfo --list` (which probes every listed export and exits 1 when
// one is refused) lists the others and exits 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV } from './helpers/daemon.js';
import { warmPoolGoneAtStart } from './helpers/missing-pool.js';
import { OPT, RawNbd, REP, goData } from './helpers/nbd-client.js';
import { waitForLog } from './helpers/control-loop.js';

const REASON = 'pool warm-0 is offline (its directory is missing or not writable)';

test('a volume whose pool is offline: the client is told it is not available and why; an unknown name stays unknown', async (t) => {
  const { d, remount } = await warmPoolGoneAtStart(t);

  // The real client: nbdinfo with libnbd's debug channel shows the server's message.
  const info = spawnSync('nbdinfo', [d.exportUri('v')], { encoding: 'utf8', env: { ...CLIENT_ENV, LIBNBD_DEBUG: '1' } });
  assert.notEqual(info.status, 0);
  assert.ok(info.stderr.includes(`server error message: export "v" is not available: ${REASON}`), info.stderr);
  // The host's filesystem layout is not told to a network client.
  assert.ok(!info.stderr.includes(d.dataDir), info.stderr);
  assert.doesNotMatch(info.stderr, /server error message: unknown export "v"/);
  // qemu-img prints the server's message as it is.
  const qemu = spawnSync('qemu-img', ['info', d.exportUri('v')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.notEqual(qemu.status, 0);
  assert.match(qemu.stderr, /Requested export not available/);
  assert.ok(qemu.stderr.includes(`server reported: export "v" is not available: ${REASON}\n`), qemu.stderr);
  assert.ok(!qemu.stderr.includes(d.dataDir), qemu.stderr);
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
  assert.ok(sh.stderr.includes(`nbd_opt_info: handshake: server error message: export "v" is not available: ${REASON}`), sh.stderr);
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
    assert.equal(r.data.toString('utf8'), `export "v" is not available: ${REASON}`);
    assert.ok(r.data.length <= 4096);
    c.sendOption(opt, goData('nosuch'));
    const u = await c.readOptionReply();
    assert.equal(u.type, REP.ERR_UNKNOWN);
    assert.equal(u.data.toString('utf8'), 'unknown export "nosuch"');
  }

  // The operator's log keeps the path.
  await waitForLog(d, /nbd: export unavailable.*pool warm-0: directory \S*warm-0 is missing or not writable/);

  // Back: the same name exports.
  remount();
  const back = spawnSync('nbdinfo', ['--size', d.exportUri('v')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(back.status, 0, back.stderr);
  assert.equal(back.stdout.trim(), String(4 * 1024 * 1024));
});

test('nbdinfo --list (and --json, nbdsh opt_list) with one export unavailable: the others are listed, exit 0; it is listed again once its pool is back', async (t) => {
  const { d, remount } = await warmPoolGoneAtStart(t);

  const list = spawnSync('nbdinfo', ['--list', d.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(list.status, 0, list.stderr);
  assert.equal(list.stderr, '');
  assert.deepEqual([...list.stdout.matchAll(/^export="([^"]*)":$/gm)].map((m) => m[1]), ['good']);
  assert.match(list.stdout, /description: CoucheStor volume good \(hot, pool hot-0\)\n\texport-size: 4194304 /);

  const json = spawnSync('nbdinfo', ['--list', '--json', d.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(json.status, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { exports: { 'export-name': string; 'export-size': number }[] };
  assert.deepEqual(
    parsed.exports.map((e) => [e['export-name'], e['export-size']]),
    [['good', 4 * 1024 * 1024]],
  );

  const script = `
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(d.uri)})
names = []
h.opt_list(lambda name, desc: names.append(name))
print(",".join(names))
h.opt_abort()
`;
  const sh = spawnSync('nbdsh', ['-c', script], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(sh.status, 0, sh.stderr);
  assert.equal(sh.stdout.trim(), 'good');
  // The operator sees why it is left out, with the path, once for the three lists: the
  // line of a later request to the daemon (an OPT_INFO for v) has been read by then.
  const info = spawnSync('nbdinfo', [d.exportUri('v')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.notEqual(info.status, 0);
  await waitForLog(d, /nbd: export unavailable name="v"/);
  assert.equal(d.stderr.match(/nbd: export left out of the export list/g)?.length, 1, d.stderr);
  assert.match(d.stderr, /nbd: export left out of the export list: its volume cannot be opened name=v pool=warm-0 err=pool warm-0: directory \S*warm-0 is missing or not writable/);

  remount();
  const back = spawnSync('nbdsh', ['-c', script], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(back.status, 0, back.stderr);
  assert.equal(back.stdout.trim(), 'good,v');
  const again = spawnSync('nbdinfo', ['--list', '--json', d.uri], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(again.status, 0, again.stderr);
  assert.deepEqual((JSON.parse(again.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']), ['good', 'v']);
});
