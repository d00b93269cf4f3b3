// Review of 1117d8c. The hot pool holding the cold tier's journal is on a
// file system that went read-only (ext4 errors=remount-ro after a disk error),
// daemon stopped: `serve` refuses to start (the pool is "missing or not
// writable"). fsck must not say clean then: it checked the directory for
// read access only, scanned the journal and exited 0. Real daemon, real CLI,
// a read-only bind mount (root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, dropCache, readExport } from './helpers/cold.js';
import { coldVolumeWithWork, startOrError, writeJournaled } from './helpers/missing-pool.js';

interface FsckOut {
  unreachablePools: { pool: string; tier: string; path: string; problem: string; holds: string }[];
  journal: { filesScanned: number; problem: string | null };
}

test('journal pool read-only, daemon stopped: serve refuses; fsck exits 1 naming it (not clean); writable again: clean, serve reads the journaled writes', async (t) => {
  let mounted = false;
  const fx = await coldVolumeWithWork(t, 'review-ro-journal-', 8 * MiB, 4 * MiB, 0x3e1, () => {
    if (mounted) execFileSync('umount', [hot0]);
  });
  const { work, model } = fx;
  let d = fx.d;
  const hot0 = path.join(d.dataDir, 'pools', 'hot-0');
  writeJournaled(d, work, model, 2 * MiB, 0x3e2);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  const dataDir = d.dataDir;

  execFileSync('mount', ['--bind', hot0, hot0]);
  mounted = true;
  execFileSync('mount', ['-o', 'remount,bind,ro', hot0]);
  assert.throws(() => fs.writeFileSync(path.join(hot0, 'probe'), 'x'), /EROFS/, 'the test made hot-0 read-only');

  const started = await startOrError(dataDir);
  if (started instanceof TestDaemon) await started.cleanup();
  assert.ok(started instanceof Error, 'serve refuses to start with the journal pool read-only');

  const bad = d.cli('fsck');
  assert.equal(bad.status, 1, `fsck must not say clean while serve refuses:\n${bad.stdout}\n${bad.stderr}`);
  const report = JSON.parse(bad.stdout) as FsckOut;
  assert.deepEqual(report.unreachablePools.map((p) => [p.pool, p.tier]), [['hot-0', 'hot']]);
  assert.match(report.unreachablePools[0]!.problem, /not writable/);
  assert.match(report.unreachablePools[0]!.holds, /the cold tier's journal/);

  execFileSync('umount', [hot0]);
  mounted = false;
  const good = d.cli('fsck');
  assert.equal(good.status, 0, `${good.stdout}\n${good.stderr}`);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journal writable again');
});
