// Review of 80f2e53: a known pool whose directory is missing at start stays
// offline, not made again. The same pool given a new path in couchestor.yaml
// (moved to a new disk, or the path mistyped) whose new directory is missing
// was still made, empty: for the hot pool holding the cold tier's journal,
// serve started with an empty journal and the acknowledged writes waiting in
// the old one were silently gone from the volume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, dropCache, readExport } from './helpers/cold.js';
import { coldVolumeWithWork, poolsYaml, startOrError, writeJournaled } from './helpers/missing-pool.js';

test('the journal hot pool given a new path whose directory is missing: serve refuses, makes nothing; moved there, the journaled writes read back', async (t) => {
  const fx = await coldVolumeWithWork(t, 'review-pool-path-', 8 * MiB, 4 * MiB, 0x7a1);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  const more = writeJournaled(d, work, model, 2 * MiB, 0x7a2);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'acknowledged writes wait in the journal');
  assert.equal(await d.stop(), 0);

  // The operator points hot-0 at its new disk's directory, not there yet.
  const cfgFile = path.join(dataDir, 'couchestor.yaml');
  const cfg = fs.readFileSync(cfgFile, 'utf8');
  assert.doesNotMatch(cfg, /^pools:/m, 'the embedded default pools');
  fs.writeFileSync(cfgFile, cfg + poolsYaml(['hot-0', 'hot', 'pools/hot-0-newdisk']));
  const moved = path.join(dataDir, 'pools', 'hot-0-newdisk');

  const started = await startOrError(dataDir);
  if (started instanceof TestDaemon) {
    // Before the fix: it started on an empty journal. Show what that cost before failing.
    await dropCache(started);
    const seen = readExport(started, 'c1', path.join(work, 'out.bin'));
    await started.cleanup();
    assert.fail(`serve started with hot-0's new directory made empty (journaled writes lost: ${seen.subarray(0, 2 * MiB).equals(more) ? 'no' : 'yes'})`);
  }
  assert.match(started.message, /pool hot-0 holds the cold tier's journal, and its directory .*hot-0-newdisk is missing/);
  assert.match(started.message, /pool directory missing .*pool=hot-0/);
  assert.equal(fs.existsSync(moved), false, 'the new path is not made');

  // Its contents moved to the new path: the journal's writes read back.
  fs.renameSync(path.join(dataDir, 'pools', 'hot-0'), moved);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with hot-0 at its new path');
});
