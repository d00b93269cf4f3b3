// Deleting a volume an NBD client has open: refused (API 409 VolumeInUse
// naming the clients, the CLI exits 1), as RBD refuses an image with
// watchers; before, the delete went ahead and the client's next request got
// EIO. `--force` (?force=true) disconnects the clients first, the NBD way,
// then deletes; a client opening the export while a delete runs is told the
// export is unknown, never lent the volume the delete then pulls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFile, spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { ConnectionClosed, OPT, REP, RawNbd, attachedNbdsh, goData } from './helpers/nbd-client.js';
import { holdIndexDelete, openHotManager, tempManager } from './helpers/volume.js';
import { NbdServer } from '../src/dataplane/nbd/server.js';
import { VolumeInUse } from '../src/dataplane/errors.js';

const MiB = 1024 * 1024;
/** What the clients write at 4 KiB and read back: 64 KiB of 0xab. */
const SETUP = "h.pwrite(b'\\xab' * 65536, 4096)\nh.flush()";
const READ_BACK = 'hashlib.sha256(h.pread(65536, 4096)).hexdigest()';
const WRITTEN_SHA = `'${crypto.createHash('sha256').update(Buffer.alloc(65536, 0xab)).digest('hex')}'`;

/** libnbd's words for NBD_REP_ERR_UNKNOWN (ENOENT) to NBD_OPT_GO: the export is not there. */
const UNKNOWN_EXPORT_V = /server replied with error to opt_go request: No such file or directory for export: v\n/;

function nbdinfo(uri: string): { status: number | null; stderr: string } {
  const r = spawnSync('nbdinfo', [uri], { env: CLIENT_ENV, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

function api(d: TestDaemon, method: string, urlPath: string, body?: unknown): Promise<Response> {
  const json = body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
  return fetch(`http://${d.info.api.host}:${d.info.api.port}${urlPath}`, { method, ...json });
}

/** Through the API: a CLI process per volume cost ~1 s of the test at load 10. */
async function createVolumes(d: TestDaemon, ...names: string[]): Promise<void> {
  for (const name of names) assert.equal((await api(d, 'POST', '/v1/volumes', { name, sizeBytes: 8 * MiB })).status, 201);
}

test('a delete is refused while NBD clients have the volume open (CLI exit 1, API 409 naming them); they go on reading; once they disconnect it passes', async (t) => {
  const d = await TestDaemon.start();
  t.after(() => d.cleanup());
  await createVolumes(d, 'v');
  const tcp = await attachedNbdsh(d.exportUri('v'), SETUP);
  t.after(() => tcp.close());
  const unix = await attachedNbdsh(d.unixUri('v'));
  t.after(() => unix.close());

  const cli = d.cli('volumes', 'delete', 'v');
  assert.equal(cli.status, 1, cli.stdout);
  assert.match(cli.stderr, /volume v is in use: 2 NBD clients have it open \((127\.0\.0\.1:\d+, unix|unix, 127\.0\.0\.1:\d+)\); disconnect them first, or delete with --force/);
  const res = await api(d, 'DELETE', '/v1/volumes/v');
  assert.equal(res.status, 409);
  const body = (await res.json()) as { error: string; volume: string; nbdClients: number; peers: string[] };
  assert.equal(body.error, 'VolumeInUse');
  assert.equal(body.volume, 'v');
  assert.equal(body.nbdClients, 2);
  assert.deepEqual(body.peers.map((p) => p.replace(/:\d+$/, ':PORT')).sort(), ['127.0.0.1:PORT', 'unix']);
  const bad = await api(d, 'DELETE', '/v1/volumes/v?force=yes');
  assert.equal(bad.status, 400, 'force is true or false');

  // Nothing was taken from under them: both read what was written.
  assert.equal((await api(d, 'GET', '/v1/volumes/v')).status, 200);
  assert.equal(await tcp.step(READ_BACK), WRITTEN_SHA);
  assert.equal(await unix.step(READ_BACK), WRITTEN_SHA);

  // One left (NBD_CMD_DISC): still refused for the other.
  assert.equal(await tcp.step('h.shutdown()'), 'None');
  assert.equal(await tcp.close(), 0);
  const one = await api(d, 'DELETE', '/v1/volumes/v');
  assert.equal(one.status, 409);
  assert.match(((await one.json()) as { message: string }).message, /volume v is in use: 1 NBD client has it open \(unix\); disconnect it first/);
  assert.equal(await unix.step('h.shutdown()'), 'None');
  assert.equal(await unix.close(), 0);

  assert.equal((await api(d, 'DELETE', '/v1/volumes/v')).status, 204);
  assert.equal((await api(d, 'GET', '/v1/volumes/v')).status, 404);
  assert.match(nbdinfo(d.exportUri('v')).stderr, UNKNOWN_EXPORT_V);
});

test('delete --force disconnects the clients (their connection ends), deletes the volume, and a new client is told the export is unknown', async (t) => {
  const d = await TestDaemon.start();
  t.after(() => d.cleanup());
  await createVolumes(d, 'v', 'other');
  const held = await attachedNbdsh(d.exportUri('v'), SETUP);
  t.after(() => held.close());
  const bystander = await attachedNbdsh(d.exportUri('other'), SETUP);
  t.after(() => bystander.close());

  const del = d.cli('volumes', 'delete', 'v', '--force');
  assert.equal(del.status, 0, del.stderr);
  assert.equal(del.stdout, 'deleted v\n');
  // The connection ended: the next request fails in libnbd, no bytes come back.
  assert.match(await held.step(READ_BACK), /^error: /);
  assert.equal((await api(d, 'GET', '/v1/volumes/v')).status, 404);
  const info = nbdinfo(d.exportUri('v'));
  assert.notEqual(info.status, 0);
  assert.match(info.stderr, UNKNOWN_EXPORT_V);
  // A client of another volume is not touched.
  assert.equal(await bystander.step(READ_BACK), WRITTEN_SHA);
  const misuse = d.cli('volumes', 'list', '--force');
  assert.equal(misuse.status, 2, 'a --force elsewhere is refused');
});

test('a client opening the export while a delete runs gets NBD_REP_ERR_UNKNOWN; one holding it (NBD_OPT_INFO) makes the delete refuse; a forced delete answers the reads in flight, then ends the connections', async (t) => {
  const { m } = await tempManager(t, 'couchestor-del-race-', openHotManager);
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  await m.createVolume({ name: 'w', sizeBytes: MiB });
  const nbd = new NbdServer({ manager: m });
  const { port } = await nbd.listenTcp(0);
  try {
    // The delete held at its index write (past its in-use check, the record still there).
    const held = holdIndexDelete(m);
    const deleting = m.deleteVolume('v');
    await held.atIndex;
    // A real client (nbdinfo) and the exact reply (a raw NBD_OPT_GO).
    const during = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile('nbdinfo', [`nbd://127.0.0.1:${port}/v`], { env: CLIENT_ENV }, (err, _out, stderr) => resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? -1), stderr }));
    });
    const raw = await RawNbd.connect({ port });
    await raw.greeting();
    raw.sendClientFlags(3);
    raw.sendOption(OPT.GO, goData('v'));
    const go = (await raw.readOptionReplies()).at(-1)!;
    raw.close();
    held.release();
    await deleting;
    held.restore();
    assert.notEqual(during.code, 0, 'nbdinfo was lent the volume being deleted');
    assert.match(during.stderr, UNKNOWN_EXPORT_V);
    assert.equal(go.type, REP.ERR_UNKNOWN, `NBD_OPT_GO answered 0x${go.type.toString(16)} ${go.data.toString()}`);
    assert.match(go.data.toString(), /^unknown export "v"$/);
    assert.equal(m.getVolumeRecord('v'), undefined);

    // A client that asked NBD_OPT_INFO holds the export (negotiating, not in transmission yet).
    const c = await RawNbd.connect({ port });
    await c.greeting();
    c.sendClientFlags(3);
    c.sendOption(OPT.INFO, goData('w'));
    assert.equal((await c.readOptionReplies()).at(-1)!.type, REP.ACK);
    await assert.rejects(m.deleteVolume('w'), (err: unknown) => err instanceof VolumeInUse && err.nbdClients.length === 1 && /^127\.0\.0\.1:\d+$/.test(err.nbdClients[0]!));
    assert.ok(m.getVolumeRecord('w'), 'a refused delete keeps the volume');

    // A client in transmission with reads in flight: a forced delete answers
    // what the server has read (right bytes, no EIO), then ends the connection.
    const io = await RawNbd.connect({ port });
    await io.handshake('w');
    const data = crypto.randomBytes(MiB);
    assert.equal((await io.writeAt(0, data)).error, 0);
    assert.equal((await io.flush()).error, 0);
    const reads = Array.from({ length: 32 }, (_, i) => io.readAt(i * 32768, 32768).then((r) => ({ i, r }), (err: Error) => ({ i, err })));
    await reads[0];
    await m.deleteVolume('w', { force: true });
    let answered = 0;
    for (const got of await Promise.all(reads)) {
      if ('err' in got) {
        assert.ok(got.err instanceof ConnectionClosed, `read ${got.i}: ${got.err.message}`);
        continue;
      }
      assert.equal(got.r.error, 0, `read ${got.i} answered an error`);
      assert.ok(got.r.data.equals(data.subarray(got.i * 32768, (got.i + 1) * 32768)), `read ${got.i}: wrong bytes`);
      answered++;
    }
    assert.ok(answered >= 1);
    t.diagnostic(`reads answered before the connection ended: ${answered} of ${reads.length}`);
    await io.closed;
    await c.closed;
    assert.equal(m.getVolumeRecord('w'), undefined);
  } finally {
    await nbd.close();
  }
});
