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
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, assertSameBytes, coldStatus, createVolume, dropCache, patternBytes, readExport } from './helpers/cold.js';
import { coldDaemonWithWork, coldVolumeWithWork, poolsYaml, writeJournaled } from './helpers/missing-pool.js';

test('a hot pool added whose name sorts first: the journaled writes still read back after two restarts', async (t) => {
  const fx = await coldVolumeWithWork(t, 'review-journal-switch-', 8 * MiB, 4 * MiB, 0x3f1);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  writeJournaled(d, work, model, 2 * MiB, 0x3f2);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);

  // The operator adds a second hot pool, "a-hot" (sorts before hot-0).
  const yamlPath = path.join(dataDir, 'couchestor.yaml');
  const yaml = fs.readFileSync(yamlPath, 'utf8');
  assert.doesNotMatch(yaml, /pools:/, 'the default pools (hot-0, cold-0..5)');
  fs.writeFileSync(yamlPath, yaml + poolsYaml(['a-hot', 'hot'], ['hot-0', 'hot']));

  for (let start = 1; start <= 2; start++) {
    d = await fx.restart();
    await dropCache(d);
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, `c1 after start ${start} with a-hot added`);
    assert.equal(await d.stop(), 0);
  }
});

test('two hot pools listed out of name order from the first start: the journaled writes still read back after a restart', async (t) => {
  const fx = await coldDaemonWithWork(t, 'review-journal-switch-', MANUAL_DESTAGE_CONFIG + poolsYaml(['hot-b', 'hot'], ['hot-a', 'hot']));
  const { work } = fx;
  let d = fx.d;
  const model = Buffer.alloc(4 * MiB);
  patternBytes(4 * MiB, 0x3f3).copy(model);
  await createVolume(d, 'c1', 4 * MiB, 'cold');
  fs.writeFileSync(path.join(work, 'in.bin'), model);
  run('nbdcopy', [path.join(work, 'in.bin'), d.exportUri('c1')]);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 after a restart');
});
