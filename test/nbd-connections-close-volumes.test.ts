// An NBD connection pinned its volume until the daemon stopped, long after
// the client had gone: on a node whose clients reach thousands of volumes
// over a day (VMs booting, nbdcopy backups) the daemon's descriptors and
// chunk maps grew without bound. Now a connection borrows its volume at the
// option that names it (NBD_OPT_GO / EXPORT_NAME / INFO) and gives it back
// when it ends, whichever way (NBD_CMD_DISC, the client's reset, NBD_OPT_ABORT
// after INFO, a protocol error); the last one closes the volume once it is
// quiet (writes no FLUSH covered are made durable first). A failed volume
// (EIO) stays open and failed across reconnects until a restart, and
// several connections to one volume share one Volume (NBD_FLAG_CAN_MULTI_CONN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { metric, scrape } from './helpers/control-loop.js';
import { addVolumesLike, processFds } from './helpers/many-volumes.js';
import { OPT, RawNbd } from './helpers/nbd-client.js';

const VOLUMES = 100;
const VOLUME_BYTES = 1024 * 1024;
/** Descriptors beside the baseline a scrape or an API call may hold for a moment: not one per volume. */
const SLACK_FDS = 10;

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;


async function openVolumes(d: TestDaemon): Promise<{ pinned: number; lent: number; idle: number }> {
  const text = await scrape(d);
  const held = (h: string) => metric(text, 'couchestor_open_volumes', { held: h }) ?? NaN;
  return { pinned: held('pinned'), lent: held('lent'), idle: held('idle') };
}

/**
 * Waits until the open volumes are exactly `want` and no volume file beside
 * theirs is open (the server closes a volume after the client's close: a few
 * event-loop turns); fails with the last reading after 5 s.
 */
async function settlesTo(d: TestDaemon, want: { pinned: number; lent: number; idle: number }, files: number): Promise<{ all: number; volumeFiles: number }> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const open = await openVolumes(d);
    const f = processFds(d.info.pid);
    if ((open.pinned === want.pinned && open.lent === want.lent && open.idle === want.idle && f.volumeFiles === files) || Date.now() > deadline) {
      assert.deepEqual({ ...open, volumeFiles: f.volumeFiles }, { ...want, volumeFiles: files });
      return f;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function createVolumes(d: TestDaemon, names: string[]): Promise<void> {
  const api = `http://127.0.0.1:${d.info.api.port}`;
  for (let i = 0; i < names.length; i += 40) {
    await Promise.all(
      names.slice(i, i + 40).map(async (name) => {
        const r = await fetch(`${api}/v1/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, sizeBytes: VOLUME_BYTES, tier: 'hot' }) });
        assert.ok(r.ok, `create ${name}: ${r.status} ${await r.text()}`);
      }),
    );
  }
}

/** Python for nbdsh: the 4 KiB block volume i holds at offset (i % 8) * 64 KiB. */
const PY_BLOCK = `
def block(i):
    return bytes([(i * 7 + j) % 251 for j in range(4096)])
def at(i):
    return (i % 8) * 65536
`;

test(`${VOLUMES} volumes, connected one after another by nbdsh (written, flushed or not, ended by DISC, a reset, ABORT after INFO): the descriptors and open volumes return to the baseline; each reads its bytes back on a later connection and after a restart`, async (t) => {
  let d = await TestDaemon.start({ config: CONFIG });
  t.after(() => d.cleanup());
  // The volumes go straight into the index (through the API each create costs ~15 ms at load 10).
  await createVolumes(d, ['template']);
  assert.equal(await d.stop(), 0);
  await addVolumesLike(d.dataDir, 'template', 'v', VOLUMES);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const base = await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);
  const uri = (name: string) => d.unixUri(name);
  // Python's % formatting: the name goes where %s is (the socket path holds no %).
  const uriTemplate = `nbd+unix:///%s?socket=${d.info.nbd.socketPath}`;

  // Every way a connection ends, round robin over the volumes.
  const out = nbdsh(`${PY_BLOCK}
import nbd
for i in range(${VOLUMES}):
    if i == 6:
        continue       # v6: NBD_OPT_EXPORT_NAME, below
    u = ${JSON.stringify(uriTemplate)} % ('v%d' % i)
    h = nbd.NBD()
    mode = i % 4
    if mode == 3:
        # NBD_OPT_INFO first (it opens the volume), then NBD_OPT_GO.
        h.set_opt_mode(True)
        h.connect_uri(u)
        h.opt_info()
        assert h.get_size() == ${VOLUME_BYTES}
        h.opt_go()
    else:
        h.connect_uri(u)
    assert h.can_multi_conn()
    h.pwrite(block(i), at(i))
    if mode != 2:
        h.flush()
    if mode == 1:
        del h          # no NBD_CMD_DISC: the socket just closes (a client reset)
    else:
        h.shutdown()   # NBD_CMD_DISC (mode 2: writes no FLUSH covered)
# INFO then ABORT, never entering transmission; an unknown export.
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(uri('v0'))})
h.opt_info()
h.opt_abort()
h = nbd.NBD()
try:
    h.connect_uri(${JSON.stringify(uri('no-such-volume'))})
    raise Exception('connected to an unknown export')
except nbd.Error:
    pass
print('done')
`);
  assert.match(out, /done/);
  // A protocol error in transmission: the server drops the connection.
  const raw = await RawNbd.connect({ path: d.info.nbd.socketPath });
  await raw.handshake('v5');
  raw.write(Buffer.alloc(28, 0xee));
  await raw.closed;
  // NBD_OPT_EXPORT_NAME, then a reset with 16 writes sent and not answered: the loan ends once they complete.
  const old = await RawNbd.connect({ path: d.info.nbd.socketPath });
  await old.greeting();
  old.sendClientFlags(3);
  old.sendOption(OPT.EXPORT_NAME, Buffer.from('v6'));
  assert.equal(Number((await old.read(10)).readBigUInt64BE(0)), VOLUME_BYTES);
  for (let k = 0; k < 16; k++) void old.writeAt(k * 65536, Buffer.alloc(65536, 0x66)).catch(() => undefined);
  old.close();

  const after = await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);
  assert.ok(after.all <= base.all + SLACK_FDS, `descriptors ${after.all} after ${VOLUMES} connections, ${base.all} before`);

  // Two connections to one volume share it: what one writes the other reads, its FLUSH covers it.
  const readBack = `${PY_BLOCK}
import nbd
for i in range(${VOLUMES}):
    h = nbd.NBD()
    h.connect_uri(${JSON.stringify(uriTemplate)} % ('v%d' % i))
    got = h.pread(4096, at(i))
    # v6: how many of the writes before its reset were read and served is up to the kernel.
    assert i == 6 or got == block(i), 'volume v%d read back other bytes' % i
    h.shutdown()
print('read back')
`;
  {
    const shared = nbdsh(`
import nbd
a = nbd.NBD(); a.connect_uri(${JSON.stringify(uri('v7'))})
b = nbd.NBD(); b.connect_uri(${JSON.stringify(uri('v7'))})
a.pwrite(b'\\x5a' * 4096, 512 * 1024)
b.flush()
assert b.pread(4096, 512 * 1024) == b'\\x5a' * 4096
a.shutdown()
assert b.pread(4096, 512 * 1024) == b'\\x5a' * 4096
b.shutdown()
print('shared')
`);
    assert.match(shared, /shared/);
  }
  await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);

  // Every volume's block read back on a new connection, after a restart.
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.match(nbdsh(readBack), /read back/);
  assert.match(nbdsh(`import nbd\nh = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('v7'))})\nassert h.pread(4096, 512 * 1024) == b'\\x5a' * 4096\nh.shutdown()\nprint('ok')`), /ok/);
  await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);

  // The API calls that open a volume for one request (resize, `volumes release`) give it back too.
  const api = `http://127.0.0.1:${d.info.api.port}`;
  const resized = await fetch(`${api}/v1/volumes/v3`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sizeBytes: 2 * VOLUME_BYTES }) });
  assert.equal(resized.status, 200, await resized.text());
  const released = await fetch(`${api}/v1/volumes/v4/release`, { method: 'POST' });
  assert.equal(released.status, 200, await released.text());
  await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);
  assert.match(nbdsh(`${PY_BLOCK}\nimport nbd\nh = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('v3'))})\nassert h.get_size() == ${2 * VOLUME_BYTES}\nassert h.pread(4096, at(3)) == block(3)\nh.shutdown()\nprint('ok')`), /ok/);
});

test('a volume whose fdatasync failed answers EIO on every later connection until the daemon restarts; it stays open (idle) after its clients leave, a sound one beside it closes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-nbd-failed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // In the daemon (a preload through NODE_OPTIONS): fdatasync of the files listed in failList fails with EIO.
  const failList = path.join(dir, 'fail-sync');
  fs.writeFileSync(failList, '');
  const preload = path.join(dir, 'fail-sync.mjs');
  fs.writeFileSync(
    preload,
    `import fs from 'node:fs';
const real = fs.fdatasync;
fs.fdatasync = (fd, cb) => {
  let target = '';
  try { target = fs.readlinkSync('/proc/self/fd/' + fd); } catch {}
  const failing = fs.readFileSync(${JSON.stringify(failList)}, 'utf8').split('\\n').filter((l) => l !== '');
  if (failing.includes(target)) return process.nextTick(cb, Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' }));
  return real(fd, cb);
};
`,
  );
  let d = await TestDaemon.start({ config: CONFIG, env: { NODE_OPTIONS: `--import ${preload}` } });
  t.after(() => d.cleanup());
  await createVolumes(d, ['bad', 'good']);
  const rec = (await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes/bad`)).json()) as { id: number; poolName: string };
  fs.writeFileSync(failList, fs.realpathSync(path.join(d.dataDir, 'pools', rec.poolName, 'volumes', `${rec.id}.dat`)) + '\n');

  const eio = (what: string) => `
try:
    ${what}
    raise Exception('${what.replace(/'/g, '')} succeeded')
except nbd.Error as e:
    assert e.errno in (errno.EIO, 'EIO'), (e.errno, e.string)
`;
  const first = nbdsh(`
import nbd, errno
h = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('bad'))})
h.pwrite(b'\\x11' * 4096, 0)
${eio('h.flush()')}
h.shutdown()
g = nbd.NBD(); g.connect_uri(${JSON.stringify(d.unixUri('good'))})
g.pwrite(b'\\x22' * 4096, 0)
g.flush()
g.shutdown()
print('failed')
`);
  assert.match(first, /failed/);
  // The failed volume stays open, held by nothing (EIO until a restart); the sound one closed.
  await settlesTo(d, { pinned: 0, lent: 0, idle: 1 }, 1);
  for (let round = 0; round < 3; round++) {
    const again = nbdsh(`
import nbd, errno
h = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('bad'))})
${eio('h.pread(4096, 0)')}
${eio("h.pwrite(b'\\\\x33' * 4096, 0)")}
${eio('h.flush()')}
h.shutdown()
print('still failed')
`);
    assert.match(again, /still failed/);
  }
  await settlesTo(d, { pinned: 0, lent: 0, idle: 1 }, 1);

  // A restart (the disk fault gone) opens it again.
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const healed = nbdsh(`
import nbd
h = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('bad'))})
h.pwrite(b'\\x44' * 4096, 0)
h.flush()
assert h.pread(4096, 0) == b'\\x44' * 4096
h.shutdown()
g = nbd.NBD(); g.connect_uri(${JSON.stringify(d.unixUri('good'))})
assert g.pread(4096, 0) == b'\\x22' * 4096
g.shutdown()
print('healed')
`);
  assert.match(healed, /healed/);
  await settlesTo(d, { pinned: 0, lent: 0, idle: 0 }, 0);
});
