// Volume lifecycle through the `couchestor` CLI as NBD clients see it:
// create, list, resize (grow only), delete, and volumes with their bytes
// surviving a clean daemon restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon, nbdsh, run } from './helpers/daemon.js';

const MiB = 1024 * 1024;
const daemons: TestDaemon[] = [];
after(async () => {
  for (const d of daemons) await d.cleanup();
});

function exportSizeBytes(uri: string): number {
  const info = JSON.parse(run('nbdinfo', ['--json', uri])) as { exports: { 'export-size': number }[] };
  return info.exports[0]!['export-size'];
}

interface ListedVolume {
  name: string;
  sizeBytes: number;
  readOnly: boolean;
}

function listVolumes(d: TestDaemon): ListedVolume[] {
  const r = d.cli('volumes', 'list', '--json');
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as ListedVolume[];
}

/** Writes seeded random bytes at each offset (then flushes); prints sha256 of what reads back. */
function writeAndHash(uri: string, offsets: number[], lengthBytes: number, seed: number): string {
  return nbdsh(`
import hashlib, random
h.connect_uri(${JSON.stringify(uri)})
rng = random.Random(${seed})
for off in ${JSON.stringify(offsets)}:
    h.pwrite(rng.randbytes(${lengthBytes}), off)
h.flush()
print(hashlib.sha256(b"".join(h.pread(${lengthBytes}, off) for off in ${JSON.stringify(offsets)})).hexdigest())
`).trim();
}

function readHash(uri: string, offsets: number[], lengthBytes: number): string {
  return nbdsh(`
import hashlib
h.connect_uri(${JSON.stringify(uri)})
print(hashlib.sha256(b"".join(h.pread(${lengthBytes}, off) for off in ${JSON.stringify(offsets)})).hexdigest())
`).trim();
}

test('create, list, grow, refuse shrink, delete, and survive a restart with bytes intact', async () => {
  let d = await TestDaemon.start();
  daemons.push(d);

  // create + list
  const created = d.cli('volumes', 'create', 'life', '32M', '--json');
  assert.equal(created.status, 0, created.stderr);
  assert.equal((JSON.parse(created.stdout) as ListedVolume).sizeBytes, 32 * MiB);
  const dup = d.cli('volumes', 'create', 'life', '32M');
  assert.notEqual(dup.status, 0, 'creating a duplicate volume succeeded');
  assert.match(dup.stderr, /already exists/);
  d.createVolume('ro-life', '8M', '--read-only');
  const listed = listVolumes(d);
  assert.deepEqual(
    listed.filter((v) => v.name === 'life' || v.name === 'ro-life').map((v) => [v.name, v.sizeBytes, v.readOnly]).sort(),
    [['life', 32 * MiB, false], ['ro-life', 8 * MiB, true]],
  );
  assert.equal(exportSizeBytes(d.exportUri('life')), 32 * MiB);

  const offsets = [0, MiB - 4096, 31 * MiB];
  const written = writeAndHash(d.exportUri('life'), offsets, 64 * 1024, 1);

  // grow: a new connection sees the new size; old data stays; the new tail works
  const grown = d.cli('volumes', 'resize', 'life', '48M');
  assert.equal(grown.status, 0, grown.stderr);
  assert.equal(exportSizeBytes(d.exportUri('life')), 48 * MiB);
  assert.equal(readHash(d.exportUri('life'), offsets, 64 * 1024), written);
  const tail = writeAndHash(d.exportUri('life'), [48 * MiB - 64 * 1024], 64 * 1024, 2);
  assert.equal(readHash(d.exportUri('life'), [32 * MiB], 64 * 1024), readHash(d.exportUri('life'), [40 * MiB], 64 * 1024), 'grown region does not read as zeros');

  // shrink is refused and changes nothing
  const shrink = d.cli('volumes', 'resize', 'life', '16M');
  assert.notEqual(shrink.status, 0, 'shrinking succeeded');
  assert.match(shrink.stderr, /shrink/i);
  assert.equal(exportSizeBytes(d.exportUri('life')), 48 * MiB);

  // restart: SIGTERM, same data directory, same volumes and bytes
  assert.equal(await d.stop(), 0, `daemon did not exit cleanly:\n${d.stderr}`);
  // With no daemon running the CLI works on the metadata directly.
  const offline = d.cli('volumes', 'create', 'made-offline', '4M');
  assert.equal(offline.status, 0, offline.stderr);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  daemons.push(d);
  const afterRestart = listVolumes(d);
  assert.equal(afterRestart.find((v) => v.name === 'life')?.sizeBytes, 48 * MiB);
  assert.equal(afterRestart.find((v) => v.name === 'ro-life')?.readOnly, true);
  assert.equal(exportSizeBytes(d.exportUri('made-offline')), 4 * MiB);
  assert.equal(readHash(d.exportUri('life'), offsets, 64 * 1024), written, 'bytes changed across the restart');
  assert.equal(readHash(d.exportUri('life'), [48 * MiB - 64 * 1024], 64 * 1024), tail);

  // delete: gone from the list and from NBD; a new volume of the same name starts empty
  const del = d.cli('volumes', 'delete', 'life');
  assert.equal(del.status, 0, del.stderr);
  assert.equal(listVolumes(d).some((v) => v.name === 'life'), false);
  const gone = spawnSync('nbdinfo', [d.exportUri('life')], { env: CLIENT_ENV, encoding: 'utf8' });
  assert.notEqual(gone.status, 0, 'nbdinfo still opens a deleted volume');
  d.createVolume('life', '48M');
  assert.equal(readHash(d.exportUri('life'), offsets, 64 * 1024), readHash(d.exportUri('life'), [16 * MiB, 17 * MiB, 18 * MiB], 64 * 1024), 'a re-created volume shows old bytes');
  assert.equal(d.cli('volumes', 'delete', 'no-such').status === 0, false);
  assert.equal(await d.stop(), 0);
});

test('multi-conn with libnbd: write on one connection, flush and read back on the other', async () => {
  const d = await TestDaemon.start();
  daemons.push(d);
  d.createVolume('mc', '16M');
  const out = nbdsh(`
import os, nbd
a = h
a.connect_uri(${JSON.stringify(d.exportUri('mc'))})
b = nbd.NBD()
b.connect_uri(${JSON.stringify(d.unixUri('mc'))})
assert a.can_multi_conn() and b.can_multi_conn()
data = os.urandom(2 * 1024 * 1024 + 4096)
a.pwrite(data, 1024 * 1024 - 4096)
b.flush()
print("same" if b.pread(len(data), 1024 * 1024 - 4096) == data else "different")
b.trim(1024 * 1024, 1024 * 1024)
a.flush()
print("zeros" if a.pread(1024 * 1024, 1024 * 1024) == bytes(1024 * 1024) else "stale")
`);
  assert.deepEqual(out.trim().split('\n'), ['same', 'zeros']);
  assert.equal(await d.stop(), 0);
});
