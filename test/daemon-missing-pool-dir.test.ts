// A pool the index knows whose directory is missing at start (its disk not
// mounted, or dead) stays offline: not made again as an empty directory that
// would pass for the pool. Before, `serve` recreated it (lockPools, putPool,
// the "auto" capacity's statfs each made the directory), /readyz answered 200
// and new shards and files went to whatever filesystem held the mount point.
// A pool new to the configuration still gets its directory made, and locked
// like the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon, run } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, destage, dropCache, patternBytes, readExport, scrub } from './helpers/cold.js';
import { coldVolumeWithWork, poolsYaml, startOrError, writeJournaled } from './helpers/missing-pool.js';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { DataDirLock } from '../src/data-dir-lock.js';

const CONFIG = 'demoVolume: null\n';

async function api<T>(d: TestDaemon, urlPath: string): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}${urlPath}`);
  return { status: res.status, body: (await res.json()) as T };
}

test('a known pool whose directory is gone stays offline and missing; a new pool is made and locked', async (t) => {
  let d = await TestDaemon.start({ config: CONFIG });
  t.after(() => d.cleanup());
  const pools = path.join(d.dataDir, 'pools');
  // First start: every pool directory made and locked by the daemon.
  for (const p of ['hot-0', 'cold-0', 'cold-5']) assert.ok(DataDirLock.isHeld(path.join(pools, p)), `${p} locked`);
  assert.equal(await d.stop(), 0);

  // cold-3's disk is not mounted at the next start.
  fs.renameSync(path.join(pools, 'cold-3'), path.join(d.dataDir, 'cold-3-unmounted'));
  // And the operator adds a warm pool to the configuration.
  const cfgFile = path.join(d.dataDir, 'couchestor.yaml');
  fs.writeFileSync(cfgFile, CONFIG + poolsYaml(['hot-0', 'hot'], ['warm-0', 'warm']));
  d = await TestDaemon.start({ dataDir: d.dataDir });

  assert.equal(fs.existsSync(path.join(pools, 'cold-3')), false, 'the missing pool directory is not made again');
  const ready = await api<{ reasons: string[] }>(d, '/readyz');
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.body.reasons, [`pool cold-3 missing (${path.join(pools, 'cold-3')})`]);
  const listed = (await api<{ name: string; online: boolean }[]>(d, '/v1/pools')).body;
  assert.deepEqual(listed.filter((p) => !p.online).map((p) => p.name), ['cold-3']);
  assert.match(d.stderr, /pool directory missing: the pool is offline \(not made again\).*pool=cold-3/);
  // The new pool: made, online, locked by this daemon.
  assert.ok(listed.some((p) => p.name === 'warm-0' && p.online));
  assert.ok(DataDirLock.isHeld(path.join(pools, 'warm-0')), 'a pool made at this start is locked');

  // The disk is back: the pool is online again without a restart.
  fs.renameSync(path.join(d.dataDir, 'cold-3-unmounted'), path.join(pools, 'cold-3'));
  assert.equal((await api(d, '/readyz')).status, 200);
});

async function metrics(d: TestDaemon): Promise<string> {
  return (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
}

test('a cold pool missing at start: reads degraded but byte-exact, destage waits for it, picked up again when it is back', async (t) => {
  const fx = await coldVolumeWithWork(t, 'missing-pool-cold-', 8 * MiB, 4 * MiB, 0x3c2);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  const cold2 = path.join(dataDir, 'pools', 'cold-2');
  assert.equal(await d.stop(), 0);
  fs.renameSync(cold2, `${cold2}.unmounted`);
  d = await fx.restart();

  assert.equal(fs.existsSync(cold2), false, 'not made again');
  const ready = await api<{ reasons: string[] }>(d, '/readyz');
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.body.reasons, [`pool cold-2 missing (${cold2})`]);
  assert.match(d.stderr, /pool directory missing: the pool is offline \(not made again\); mount its disk; for a replaced disk, make the directory \(empty\) and run `couchestor pools replace cold-2`.*pool=cold-2/);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-2 missing at start');
  const st = await coldStatus(d);
  assert.ok(st.degradedReads > 0, `stripes with a shard on cold-2 were decoded (${st.degradedReads})`);
  assert.equal(st.failedReads, 0);
  assert.match(await metrics(d), /^couchestor_degraded_reads_total [1-9]/m);

  // New writes while it is out stay in the journal: no 4+2 stripe is placed on five pools,
  // and nothing lands in (or makes) its directory.
  const more = patternBytes(4 * MiB, 0x3c3);
  const src = path.join(work, 'more.bin');
  fs.writeFileSync(src, more);
  run('nbdcopy', [src, d.exportUri('c1')]);
  more.copy(model, 0);
  const refused = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/destage`, { method: 'POST' });
  assert.match(await refused.text(), /need 6 online cold pools for a stripe, have 5/);
  assert.equal(fs.existsSync(cold2), false, 'a destage with cold-2 out does not make its directory');
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 written with cold-2 out (journal)');

  // The disk is mounted again while the daemon runs: picked up without a restart.
  fs.renameSync(`${cold2}.unmounted`, cold2);
  assert.equal((await api(d, '/readyz')).status, 200);
  await destage(d);
  assert.equal((await coldStatus(d)).journalBytes, 0, 'destaged once cold-2 is back');
  assert.equal((await scrub(d)).badStripes, 0, 'cold-2 shards verify again (and the stripes written without it are whole)');
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-2 back');
});

test('a warm pool missing at start: its volume fails to export (offline), no empty file; back, it reads byte-exact', async (t) => {
  const d0 = await startWarmDaemon();
  let d = d0;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'missing-pool-warm-'));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  d.createVolume('v', '4M', '--tier', 'warm');
  const model = patternBytes(4 * MiB, 0x3c4);
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri('v')]);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  assert.equal(await d.stop(), 0);
  fs.renameSync(warm0, `${warm0}.unmounted`);
  d = await TestDaemon.start({ dataDir: d0.dataDir });

  assert.equal(fs.existsSync(warm0), false, 'not made again');
  assert.match(d.stderr, /pool directory missing: the pool is offline \(not made again\); mount its disk; for a replaced disk, make the directory \(empty\) and run `couchestor pools replace warm-0` \(with --discard-volumes.*pool=warm-0/);
  const ready = await api<{ reasons: string[] }>(d, '/readyz');
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.body.reasons, [`pool warm-0 missing (${warm0})`]);
  // The export fails, saying the pool is offline, instead of serving a fresh file of zeros.
  const read = spawnSync('nbdcopy', [d.exportUri('v'), path.join(work, 'out.bin')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.notEqual(read.status, 0, 'the export of a volume on a missing pool fails');
  // NBD_REP_ERR_UNKNOWN ("not available"): libnbd says "no export named"; the daemon logs why.
  assert.match(read.stderr, /server has no export named 'v'/);
  for (const deadline = Date.now() + 10_000; !/nbd: export unavailable.*pool warm-0: directory .* is missing or not writable/.test(d.stderr); ) {
    assert.ok(Date.now() < deadline, `the daemon logs why v is unavailable:\n${d.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(fs.existsSync(warm0), false, 'the open did not make the directory (or a file in it)');
  assert.match(await metrics(d), /^couchestor_volume_unavailable\{volume="v",pool="warm-0"\} 1$/m);
  // Placement avoids it: a new warm volume has no pool to go to.
  const create = d.cli('volumes', 'create', 'w', '4M', '--tier', 'warm');
  assert.notEqual(create.status, 0);
  assert.match(create.stderr, /no online pool with tier=warm/);

  // Mounted again while the daemon runs: the volume exports its bytes.
  fs.renameSync(`${warm0}.unmounted`, warm0);
  assert.equal((await api(d, '/readyz')).status, 200);
  assertSameBytes(readExport(d, 'v', path.join(work, 'out.bin')), model, 'v once warm-0 is back');
});

test('the hot pool holding the journal missing at start: serve refuses, names it, makes nothing; back, journaled writes read back', async (t) => {
  const fx = await coldVolumeWithWork(t, 'missing-pool-hot-', 8 * MiB, 4 * MiB, 0x3c5);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  // Acknowledged writes still in the journal only (manual destage, none asked).
  writeJournaled(d, work, model, 2 * MiB, 0x3c6);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  const hot0 = path.join(dataDir, 'pools', 'hot-0');
  fs.renameSync(hot0, `${hot0}.unmounted`);

  const started = await startOrError(dataDir);
  if (started instanceof TestDaemon) await started.cleanup(); // so the test ends (its own assertion fails below)
  assert.ok(started instanceof Error, 'serve refuses to start without the journal');
  assert.match(started.message, /pool hot-0 holds the cold tier's journal, and its directory .*hot-0 is missing or not writable: mount its disk/);
  assert.equal(fs.existsSync(hot0), false, 'not made again (an empty journal would drop the acknowledged writes)');

  fs.renameSync(`${hot0}.unmounted`, hot0);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journal back');
});
