// Review of 80f2e53: a known pool whose directory is missing at start stays
// offline, not made again. The same pool given a new path in couchestor.yaml
// (moved to a new disk, or the path mistyped) whose new directory is missing
// was still made, empty: for the hot pool holding the cold tier's journal,
// serve started with an empty journal and the acknowledged writes waiting in
// the old one were silently gone from the volume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, dropCache, patternBytes, readExport, startWithColdVolume } from './helpers/cold.js';

test('the journal hot pool given a new path whose directory is missing: serve refuses, makes nothing; moved there, the journaled writes read back', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-pool-path-'));
  let { d, model } = await startWithColdVolume(work, 8 * MiB, 4 * MiB, 0x7a1);
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const dataDir = d.dataDir;
  const more = patternBytes(2 * MiB, 0x7a2);
  fs.writeFileSync(path.join(work, 'more.bin'), more);
  run('nbdcopy', [path.join(work, 'more.bin'), d.exportUri('c1')]);
  more.copy(model, 0);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'acknowledged writes wait in the journal');
  assert.equal(await d.stop(), 0);

  // The operator points hot-0 at its new disk's directory, not there yet.
  const cfgFile = path.join(dataDir, 'couchestor.yaml');
  const cfg = fs.readFileSync(cfgFile, 'utf8');
  assert.doesNotMatch(cfg, /^pools:/m, 'the embedded default pools');
  const pool = (name: string, tier: string, dir = `pools/${name}`) => `  - { name: ${name}, tier: ${tier}, path: ${dir}, capacity: auto }\n`;
  fs.writeFileSync(cfgFile, cfg + 'pools:\n' + pool('hot-0', 'hot', 'pools/hot-0-newdisk') + [0, 1, 2, 3, 4, 5].map((i) => pool(`cold-${i}`, 'cold')).join(''));
  const moved = path.join(dataDir, 'pools', 'hot-0-newdisk');

  const started = await TestDaemon.start({ dataDir }).then(
    (wrongly) => wrongly,
    (err: Error) => err,
  );
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
  d = await TestDaemon.start({ dataDir });
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with hot-0 at its new path');
});
