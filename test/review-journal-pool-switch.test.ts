// Review finding (r11, session 10): the cold tier's journal lives on "the
// first hot pool" of the manager's pool map (VolumeManager.journalDir). That
// map is filled from the index in name order, then new configured pools are
// appended. A hot pool added to couchestor.yaml whose name sorts before the
// journal's pool is appended at its first start (the journal stays put), but
// at the next start it comes first: the journal moves to it, empty, and
// refuseLostJournal does not refuse (a journal was made before, on another
// pool). The acknowledged writes still in the old pool's journal are dropped
// without a word: the cold volume reads its older bytes. Worse, with two hot
// pools listed out of name order in couchestor.yaml from the first start
// (hot-b, hot-a), a plain restart moves the journal (test 2).
// Fixed by 2f2bda7 (VolumeManager.journalPool: the pool the index records
// the journal was made on); both failed before it.
// Real daemon processes, nbdcopy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, assertSameBytes, coldStatus, createVolume, dropCache, patternBytes, readExport, startColdDaemon, startWithColdVolume } from './helpers/cold.js';

test('a hot pool added whose name sorts first: the journaled writes still read back after two restarts', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-journal-switch-'));
  let { d, model } = await startWithColdVolume(work, 8 * MiB, 4 * MiB, 0x3f1);
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const dataDir = d.dataDir;
  const more = patternBytes(2 * MiB, 0x3f2);
  fs.writeFileSync(path.join(work, 'more.bin'), more);
  run('nbdcopy', [path.join(work, 'more.bin'), d.exportUri('c1')]);
  more.copy(model, 0);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);

  // The operator adds a second hot pool, "a-hot" (sorts before hot-0).
  const yamlPath = path.join(dataDir, 'couchestor.yaml');
  const yaml = fs.readFileSync(yamlPath, 'utf8');
  assert.doesNotMatch(yaml, /pools:/, 'the default pools (hot-0, cold-0..5)');
  fs.writeFileSync(
    yamlPath,
    yaml +
      'pools:\n  - { name: a-hot, tier: hot, path: pools/a-hot, capacity: auto }\n  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }\n' +
      Array.from({ length: 6 }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join(''),
  );

  for (let start = 1; start <= 2; start++) {
    d = await TestDaemon.start({ dataDir });
    await dropCache(d);
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, `c1 after start ${start} with a-hot added`);
    assert.equal(await d.stop(), 0);
  }
});

test('two hot pools listed out of name order from the first start: the journaled writes still read back after a restart', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-journal-switch-'));
  const config =
    MANUAL_DESTAGE_CONFIG +
    'pools:\n  - { name: hot-b, tier: hot, path: pools/hot-b, capacity: auto }\n  - { name: hot-a, tier: hot, path: pools/hot-a, capacity: auto }\n' +
    Array.from({ length: 6 }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');
  let d = await startColdDaemon(config);
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const model = Buffer.alloc(4 * MiB);
  patternBytes(4 * MiB, 0x3f3).copy(model);
  await createVolume(d, 'c1', 4 * MiB, 'cold');
  fs.writeFileSync(path.join(work, 'in.bin'), model);
  run('nbdcopy', [path.join(work, 'in.bin'), d.exportUri('c1')]);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 after a restart');
});
