// The journal's files the index recorded (Journal.fileLog: named, not yet removed once destaged) must be
// there at open. Before, `journal/` present but emptied (`rm journal/*.log`, an old backup restored, the
// wrong disk's journal) started with an empty journal: `/readyz` 200, the acknowledged, flushed, not yet
// destaged cold writes gone, their volumes reading their older bytes without a word.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MiB, assertSameBytes, coldStatus, dropCache, fsckDataDir, readExport } from './helpers/cold.js';
import { coldVolumeWithWork, startOrError, writeJournaled } from './helpers/missing-pool.js';

test('journal log files removed (rm journal/*.log, and rm -r journal/*): serve refuses naming them; put back, the writes read back; an empty journal/ made by hand is the accepted loss', async (t) => {
  const fx = await coldVolumeWithWork(t, 'journal-files-missing-', 8 * MiB, 4 * MiB, 0x3e1);
  const { work, model } = fx;
  const destaged = Buffer.from(model);
  writeJournaled(fx.d, work, model, 3 * MiB, 0x3e2); // acknowledged, flushed, left in the journal
  assert.ok((await coldStatus(fx.d)).journalBytes > 0);
  const journal = path.join(fx.dataDir, 'pools', 'hot-0', 'journal');
  assert.equal(await fx.d.stop(), 0);

  const logs = fs.readdirSync(journal).filter((n) => /^journal-\d{10}-[0-9a-f]{8}\.log$/.test(n));
  assert.ok(logs.length > 0, `journal files: ${fs.readdirSync(journal).join(', ')}`);
  const aside = path.join(work, 'logs');
  fs.mkdirSync(aside);
  for (const n of logs) fs.renameSync(path.join(journal, n), path.join(aside, n));
  const before = fs.readdirSync(journal).sort();
  const refused = await startOrError(fx.dataDir);
  if (!(refused instanceof Error)) await refused.kill();
  assert.ok(refused instanceof Error, 'serve must not start without the journal files holding acknowledged writes');
  assert.match(refused.message, /the cold tier's journal in .*journal on pool hot-0 is missing \d+ of its files \(journal-\d{10}-\*\.log.*which the index recorded and were not yet destaged/);
  assert.deepEqual(fs.readdirSync(journal).sort(), before, 'a refused start changes nothing in journal/');
  // fsck says the same (journal.problem, exit 1) and changes nothing either.
  const fsck = fsckDataDir(fx.dataDir);
  assert.equal(fsck.status, 1, fsck.stdout);
  assert.match(fsck.stderr, /journal: the cold tier's journal in .*journal on pool hot-0 is missing \d+ of its files/);
  assert.deepEqual(fs.readdirSync(journal).sort(), before);

  // rm -r journal/* takes the rollback guard directory too: still refused (the journal identity is a dotfile).
  for (const n of fs.readdirSync(journal)) if (!n.startsWith('.')) fs.rmSync(path.join(journal, n), { recursive: true });
  const again = await startOrError(fx.dataDir);
  if (!(again instanceof Error)) await again.kill();
  assert.ok(again instanceof Error, 'refused with journal/ emptied by rm -r journal/*');

  // Put back: every acknowledged write reads back.
  for (const n of logs) fs.renameSync(path.join(aside, n), path.join(journal, n));
  let d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journal files back');
  assert.equal(await d.stop(), 0);

  // The way out the message gives: journal/ moved away, an empty one made: the loss accepted, serve starts.
  fs.renameSync(journal, path.join(work, 'journal.old'));
  fs.mkdirSync(journal);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), destaged, 'c1 reads its destaged bytes once the loss is accepted');
});
