// A pool's path that is a file, not a directory (a mistyped path in
// couchestor.yaml; a file left where an unmounted disk's directory was).
// README: fsck lists such a pool in unreachablePools ("not a directory") and
// exits 1; the daemon takes it offline. Every command instead died at once
// with a bare "couchestor: ENOTDIR: not a directory, scandir '.../cold-2'"
// (the pool lock's directory listing): fsck, pools list, volumes list and
// serve, naming neither the pool nor the configuration. A new pool so
// configured made the pools before it, then died the same way.
// Real daemon, real CLI processes, nbdcopy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnServe } from './helpers/daemon.js';
import { MiB, assertSameBytes, dropCache, readExport } from './helpers/cold.js';
import { coldVolumeWithWork } from './helpers/missing-pool.js';

test('a known cold pool whose path is a file: fsck exits 1 naming it, pools list works, serve starts with it offline and reads byte-exact', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pool-path-file-', 4 * MiB, 4 * MiB, 0x7f1);
  const { work, dataDir, model } = fx;
  assert.equal(await fx.d.stop(), 0);
  const cold2 = path.join(dataDir, 'pools', 'cold-2');
  fs.renameSync(cold2, path.join(work, 'cold-2.unmounted'));
  fs.writeFileSync(cold2, 'not a pool\n');

  const fsck = fx.d.cli('fsck');
  assert.equal(fsck.status, 1, `fsck: a pool that is not a directory is unreachable:\n${fsck.stdout}\n${fsck.stderr}`);
  const report = JSON.parse(fsck.stdout) as { unreachablePools: { pool: string; problem: string }[] };
  assert.deepEqual(report.unreachablePools.map((p) => [p.pool, p.problem]), [['cold-2', 'not a directory']]);

  const pools = fx.d.cli('pools', 'list');
  assert.equal(pools.status, 0, `pools list:\n${pools.stderr}`);
  assert.deepEqual((JSON.parse(pools.stdout) as { name: string; online: boolean }[]).filter((p) => !p.online).map((p) => p.name), ['cold-2']);

  // serve: starts, cold-2 offline; c1 reads degraded, byte-exact.
  const d = await fx.restart();
  assert.match(d.stderr, /pool=cold-2/);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-2 a file');
});

test('a new pool whose path is a file: serve exits 1 naming couchestor.yaml, the pool and its path, having made no pool', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-path-file-new-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dataDir, 'pools'));
  const file = path.join(dataDir, 'pools', 'cold-2');
  fs.writeFileSync(file, 'x\n');
  const s = spawnServe(dataDir);
  const end = await s.exited;
  assert.equal(end.code, 1, end.stderr);
  assert.ok(end.stderr.includes(`${path.join(dataDir, 'couchestor.yaml')}: pool cold-2: its path ${file} is not a directory`), end.stderr);
  assert.deepEqual(fs.readdirSync(path.join(dataDir, 'pools')), ['cold-2'], 'no pool made');
});
