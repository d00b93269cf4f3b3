// The hot pool holding the cold tier's journal is missing with the daemon
// stopped (its disk not mounted): `serve` refuses to start (80f2e53). The
// operator's tools must still work in that state and say what is wrong:
// - `couchestor pools list` / `volumes list` (offline) were refused too: the
//   offline path opened the cold tier, which refuses without its journal.
//   `pools list` is what the README says to run to find a missing pool.
// - `couchestor fsck` exited 0, "clean", with 0 journal files scanned: it
//   checked cold pools only, and the missing journal directory read as empty.
// Real daemon, real CLI processes, nbdcopy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { MiB, assertSameBytes, coldStatus, dropCache, readExport } from './helpers/cold.js';
import { coldVolumeWithWork, writeJournaled } from './helpers/missing-pool.js';

interface PoolRow {
  name: string;
  tier: string;
  path: string;
  usedBytes: number | null;
  online: boolean;
}

interface FsckOut {
  unreachablePools: { pool: string; tier: string; path: string; problem: string; holds: string }[];
  journal: { filesScanned: number; problem: string | null };
}

function segmentBytes(poolDir: string): number {
  const dir = path.join(poolDir, 'segments');
  return fs.readdirSync(dir).reduce((sum, n) => sum + fs.statSync(path.join(dir, n)).size, 0);
}

test('journal pool missing, daemon stopped: pools list and volumes list work and show it offline; fsck exits 1 naming it; back: clean, serve reads the journaled writes', async (t) => {
  const fx = await coldVolumeWithWork(t, 'missing-pool-cli-', 8 * MiB, 4 * MiB, 0x3d1);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  // Acknowledged writes in the journal only (destage is manual in this configuration).
  writeJournaled(d, work, model, 2 * MiB, 0x3d2);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  const hot0 = path.join(dataDir, 'pools', 'hot-0');
  fs.renameSync(hot0, `${hot0}.unmounted`);

  // pools list: answers, hot-0 offline and named on stderr; cold pools' usage is their segment files'.
  const pools = d.cli('pools', 'list');
  assert.equal(pools.status, 0, `pools list works with the journal pool missing:\n${pools.stderr}`);
  const rows = JSON.parse(pools.stdout) as PoolRow[];
  assert.deepEqual(rows.filter((p) => !p.online).map((p) => p.name), ['hot-0']);
  assert.match(pools.stderr, /pool hot-0 \(hot\) is offline: its directory .*hot-0 is missing or not writable; it holds the cold tier's journal/);
  for (const p of rows.filter((r) => r.tier === 'cold')) {
    assert.ok(p.online);
    assert.ok((p.usedBytes ?? 0) > 0, `${p.name} holds shards`);
    assert.equal(p.usedBytes, segmentBytes(p.path), `${p.name} usage is its segment files' bytes`);
  }
  // volumes list: the cold volume, its size.
  const vols = d.cli('volumes', 'list');
  assert.equal(vols.status, 0, `volumes list works with the journal pool missing:\n${vols.stderr}`);
  assert.match(vols.stdout, /^c1\s+8388608\s+cold\s/m);
  const volsJson = d.cli('volumes', 'list', '--json');
  assert.deepEqual((JSON.parse(volsJson.stdout) as { name: string; sizeBytes: number; tier: string }[]).map((v) => [v.name, v.sizeBytes, v.tier]), [['c1', 8 * MiB, 'cold']]);
  // A command that writes is still refused, with the reason.
  const create = d.cli('volumes', 'create', 'x', '4M', '--tier', 'cold');
  assert.equal(create.status, 1);
  assert.match(create.stderr, /pool hot-0 holds the cold tier's journal, and its directory .*hot-0 is missing or not writable: mount its disk/);
  assert.equal(fs.existsSync(hot0), false, 'nothing made the directory again');

  // fsck: exit 1, the pool named with what it holds, the journal not scanned (not "0 files: clean").
  const bad = d.cli('fsck');
  assert.equal(bad.status, 1, `fsck fails while the journal pool is missing:\n${bad.stdout}\n${bad.stderr}`);
  const report = JSON.parse(bad.stdout) as FsckOut;
  assert.equal(report.unreachablePools.length, 1);
  assert.deepEqual({ ...report.unreachablePools[0]!, holds: '' }, { pool: 'hot-0', tier: 'hot', path: hot0, problem: 'directory missing', holds: '' });
  assert.match(report.unreachablePools[0]!.holds, /the cold tier's journal: its acknowledged writes not yet destaged are unreachable until its disk is mounted/);
  assert.match(report.journal.problem ?? '', /its pool hot-0 is unreachable/);
  assert.match(bad.stderr, /fsck: pool hot-0 \(hot\) at .*hot-0: directory missing/);
  assert.equal(fs.existsSync(hot0), false, 'fsck made nothing');

  // The disk is back: fsck clean, serve starts, the journaled writes read back.
  fs.renameSync(`${hot0}.unmounted`, hot0);
  const good = d.cli('fsck');
  assert.equal(good.status, 0, `fsck clean once hot-0 is back:\n${good.stdout}\n${good.stderr}`);
  const clean = JSON.parse(good.stdout) as FsckOut;
  assert.deepEqual(clean.unreachablePools, []);
  assert.equal(clean.journal.problem, null);
  assert.ok(clean.journal.filesScanned > 0, 'the journal is scanned');
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journal back');
});

test('fsck: the journal directory missing on an online journal pool (cold volumes exist) exits 1 naming it', async (t) => {
  const { d } = await coldVolumeWithWork(t, 'missing-pool-cli-', 4 * MiB, 1 * MiB, 0x3d3);
  assert.equal(await d.stop(), 0);
  assert.equal(d.cli('fsck').status, 0, 'clean to begin with');

  const journal = path.join(d.dataDir, 'pools', 'hot-0', 'journal');
  fs.renameSync(journal, `${journal}.gone`);
  const noJournal = d.cli('fsck');
  assert.equal(noJournal.status, 1, `a missing journal directory is damage:\n${noJournal.stdout}`);
  assert.match((JSON.parse(noJournal.stdout) as FsckOut).journal.problem ?? '', /directory .*hot-0\/journal is missing on pool hot-0, and cold volumes write through it/);
  assert.match(noJournal.stderr, /fsck: journal: directory .*journal is missing/);
  fs.renameSync(`${journal}.gone`, journal);
  assert.equal(d.cli('fsck').status, 0);
});

test('fsck: a warm pool missing exits 1 naming it and the volume placed on it (no chunk written: nothing else reported it)', async (t) => {
  const d = await startWarmDaemon();
  t.after(() => d.cleanup());
  d.createVolume('w', '4M', '--tier', 'warm');
  assert.equal(await d.stop(), 0);
  assert.equal(d.cli('fsck').status, 0, 'clean to begin with');
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  fs.renameSync(warm0, `${warm0}.unmounted`);
  const bad = d.cli('fsck');
  assert.equal(bad.status, 1, `a missing warm pool is damage:\n${bad.stdout}`);
  const report = JSON.parse(bad.stdout) as FsckOut;
  assert.deepEqual(report.unreachablePools.map((p) => [p.pool, p.tier, p.path, p.problem]), [['warm-0', 'warm', warm0, 'directory missing']]);
  assert.match(report.unreachablePools[0]!.holds, /^the volume files of w, until its disk is mounted$/);
  const pools = d.cli('pools', 'list');
  assert.equal(pools.status, 0);
  assert.deepEqual((JSON.parse(pools.stdout) as PoolRow[]).filter((p) => !p.online).map((p) => p.name), ['warm-0']);
  fs.renameSync(`${warm0}.unmounted`, warm0);
  assert.equal(d.cli('fsck').status, 0);
});
