// The pool identity (POOL/.couchestor-pool, pools/identity.ts): a pool directory that is there but
// is not the pool (an unmounted disk's empty mount point, another pool's disk) is offline like a
// missing one. Before, it was taken for the pool: /readyz 200, new volume files, shards and the
// journal went to the root filesystem under the mount point (to vanish when the disk was mounted
// again), a cold pool's shards "rebuilt" there, and with the journal's pool unmounted the daemon
// started with an empty journal, every acknowledged, not yet destaged cold write gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon, run } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, destage, dropCache, fsckDataDir, patternBytes, readExport, scrub } from './helpers/cold.js';
import { coldVolumeWithWork, mountPool, poolOnlineGauge, readyz, startOrError, unmountPool, writeJournaled } from './helpers/missing-pool.js';
import { startWarmDaemon } from './helpers/hot-warm.js';

function identityOf(dir: string): { pool: string; poolUuid: string } {
  return JSON.parse(fs.readFileSync(path.join(dir, '.couchestor-pool'), 'utf8')) as { pool: string; poolUuid: string };
}

test('a warm pool whose disk is not mounted (empty mount point) at start: offline, nothing written there; mounted, its volume reads back', async (t) => {
  const d0 = await startWarmDaemon();
  let d = d0;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-identity-warm-'));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  d.createVolume('v', '4M', '--tier', 'warm');
  const model = patternBytes(4 * MiB, 0x1d1);
  fs.writeFileSync(path.join(work, 'src.bin'), model);
  run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('v')]);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  assert.equal(await d.stop(), 0);
  unmountPool(warm0);
  d = await TestDaemon.start({ dataDir: d0.dataDir });

  const ready = await readyz(d);
  assert.equal(ready.status, 503, 'the empty mount point is not the pool');
  assert.deepEqual(ready.reasons, [`pool warm-0 offline (${warm0}): no pool identity in ${warm0}: is its disk mounted? If this is a new disk replacing a dead one, run \`couchestor pools replace warm-0\``]);
  assert.equal(await poolOnlineGauge(d, 'warm-0'), 0);
  const listed = d.cli('pools', 'list');
  assert.equal(listed.status, 0, listed.stderr);
  assert.match(listed.stdout, /warm-0/);
  // Its volume does not open (no fresh file of zeros), and a new warm volume has nowhere to go.
  const read = spawnSync('nbdcopy', [d.exportUri('v'), path.join(work, 'out.bin')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.notEqual(read.status, 0, 'the volume of the unmounted pool is not served');
  const created = d.cli('volumes', 'create', 'w', '4M', '--tier', 'warm');
  assert.notEqual(created.status, 0, 'no warm volume is made on the empty mount point');
  assert.deepEqual(fs.readdirSync(warm0), [], 'nothing written into the empty mount point');

  // The disk is mounted: the running daemon takes it (its identity matches) and v reads back.
  mountPool(warm0);
  assert.equal((await readyz(d)).status, 200);
  assert.equal(await poolOnlineGauge(d, 'warm-0'), 1);
  assertSameBytes(readExport(d, 'v', path.join(work, 'out.bin')), model, 'v once warm-0 is mounted');
});

test('a cold pool whose disk is not mounted at start: offline, reads degraded but exact, no shard in the mount point; mounted, destage and scrub clean', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pool-identity-cold-', 8 * MiB, 4 * MiB, 0x1d2);
  const { work, model } = fx;
  let d = fx.d;
  const cold2 = path.join(fx.dataDir, 'pools', 'cold-2');
  assert.equal(await d.stop(), 0);
  unmountPool(cold2);
  d = await fx.restart();

  const ready = await readyz(d);
  assert.equal(ready.status, 503);
  assert.match(ready.reasons.join('\n'), /^pool cold-2 offline \(.*cold-2\): no pool identity in .*cold-2: is its disk mounted\?/);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-2 unmounted');
  assert.ok((await coldStatus(d)).degradedReads > 0, 'stripes with a shard on cold-2 were decoded');
  writeJournaled(d, work, model, 2 * MiB, 0x1d3);
  const refused = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/destage`, { method: 'POST' });
  assert.equal(refused.status, 503, 'no stripe is written with cold-2 out');
  assert.deepEqual(fs.readdirSync(cold2), [], 'no shard (nor segments/) written into the empty mount point');

  mountPool(cold2);
  assert.equal((await readyz(d)).status, 200);
  await destage(d);
  assert.equal((await coldStatus(d)).journalBytes, 0);
  assert.equal((await scrub(d)).badStripes, 0, 'cold-2 shards verify (nothing was "rebuilt" onto the mount point)');
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-2 mounted again');
});

test("the journal's hot pool not mounted at start: serve refuses and writes nothing there; mounted, the journaled writes read back", async (t) => {
  const fx = await coldVolumeWithWork(t, 'pool-identity-journal-', 8 * MiB, 4 * MiB, 0x1d4);
  const { work, model } = fx;
  writeJournaled(fx.d, work, model, 3 * MiB, 0x1d5); // acknowledged, flushed, not destaged
  const hot0 = path.join(fx.dataDir, 'pools', 'hot-0');
  assert.equal(await fx.d.stop(), 0);
  unmountPool(hot0);

  const refused = await startOrError(fx.dataDir);
  if (!(refused instanceof Error)) await refused.kill();
  assert.ok(refused instanceof Error, 'serve must not start with an empty journal on the mount point');
  assert.match(refused.message, /pool hot-0 holds the cold tier's journal, and its directory is not the pool: no pool identity in .*hot-0: is its disk mounted\?/);
  assert.deepEqual(fs.readdirSync(hot0), [], 'no journal/, lock or volume file made in the empty mount point');
  // Offline, fsck says the same and exits 1.
  const fsck = fsckDataDir(fx.dataDir);
  assert.equal(fsck.status, 1, fsck.stdout + fsck.stderr);
  assert.match(fsck.stderr, /pool hot-0 \(hot\) at .*hot-0: not the pool: no pool identity in .*hot-0: is its disk mounted\?/);
  assert.deepEqual(fs.readdirSync(hot0), [], 'fsck wrote nothing there either');

  mountPool(hot0);
  const d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journaled writes');
});

test('two cold pools whose disks are swapped: both offline, each named with the pool it holds; swapped back, online', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pool-identity-swap-', 8 * MiB, 4 * MiB, 0x1d6);
  const { work, model } = fx;
  const pools = path.join(fx.dataDir, 'pools');
  const [c1, c4] = [path.join(pools, 'cold-1'), path.join(pools, 'cold-4')];
  const swap = () => {
    fs.renameSync(c1, `${c1}.x`);
    fs.renameSync(c4, c1);
    fs.renameSync(`${c1}.x`, c4);
  };
  const uuid1 = identityOf(c1).poolUuid;
  const uuid4 = identityOf(c4).poolUuid;
  assert.notEqual(uuid1, uuid4);
  assert.equal(await fx.d.stop(), 0);
  swap();
  const d = await fx.restart();

  const ready = await readyz(d);
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.reasons, [
    `pool cold-1 offline (${c1}): ${c1} holds the identity of pool cold-4 (uuid ${uuid4}), not of pool cold-1 (uuid ${uuid1}): disks swapped or mounted at the wrong path? Mount each pool's disk at its own path`,
    `pool cold-4 offline (${c4}): ${c4} holds the identity of pool cold-1 (uuid ${uuid1}), not of pool cold-4 (uuid ${uuid4}): disks swapped or mounted at the wrong path? Mount each pool's disk at its own path`,
  ]);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 decoded from the 4 other pools');
  const before = [fs.readdirSync(path.join(c1, 'segments')).sort(), fs.readdirSync(path.join(c4, 'segments')).sort()];

  swap();
  assert.equal((await readyz(d)).status, 200);
  assert.deepEqual([fs.readdirSync(path.join(c4, 'segments')).sort(), fs.readdirSync(path.join(c1, 'segments')).sort()], before, 'no segment written to the swapped disks');
  assert.equal((await scrub(d)).badStripes, 0);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with the disks back in place');
});
