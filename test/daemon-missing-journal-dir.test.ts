// The cold tier's journal DIRECTORY missing on an online hot pool (a wiped
// disk, or the wrong one, mounted at the pool's path). Before, `serve` made
// a new empty journal/ and started: the acknowledged, flushed writes to cold
// volumes not yet destaged were silently gone (the volume read its older
// bytes). Now serve refuses, naming the directory and the two ways out: the
// disk that holds it back, or an empty journal/ made by the operator (the
// loss accepted). "Existed before" is the index's record that the journal was
// made on that pool; an index from before that record falls back to "a cold
// volume exists, or a destaged seq is recorded".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, dropCache, fsckDataDir, readExport } from './helpers/cold.js';
import { coldVolumeWithWork, startOrError, writeJournaled } from './helpers/missing-pool.js';

/** Starts serve on `dataDir`, which must refuse: returns its error (the daemon's exit and stderr). */
async function refusedStart(dataDir: string): Promise<Error> {
  const started = await startOrError(dataDir);
  if (started instanceof TestDaemon) {
    await started.stop(); // so the test ends (its own assertion fails below); the data dir is kept
    assert.fail('serve started without its journal directory');
  }
  const code = /daemon exited \((\w+)\) before ready/.exec(started.message)?.[1];
  assert.ok(code !== undefined && code !== '0', `serve exits non-zero (${code})`);
  return started;
}

/** Every file under `dir` with its SHA-256, by relative path (but the lock file: its holder changes). */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const file = path.join(dir, rel);
    if (rel !== 'couchestor.lock' && fs.statSync(file).isFile()) out[rel] = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  }
  return out;
}

/** Drops the index's record of the journal directories made, as in a data dir from a build before it. */
async function forgetJournalRecord(dataDir: string): Promise<void> {
  const root = open({ path: path.join(dataDir, 'meta'), maxDbs: 64 });
  const db = root.openDB<string, string>({ name: 'journal-dirs' });
  assert.ok(db.getKeysCount() > 0, 'the index recorded the journal directory');
  await db.clearAsync();
  await root.close();
}

const REFUSAL = (dir: string) =>
  new RegExp(
    `the cold tier's journal directory ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} on pool hot-0 is missing, but the journal was there before: .*Mount or restore the disk that holds it.*or, accepting the loss of those writes .*make an empty directory .*serve then starts with an empty journal`,
  );

test('journal/ missing on an online hot pool: serve refuses and changes nothing; back, the journaled writes read back; an empty journal/ starts', async (t) => {
  const fx = await coldVolumeWithWork(t, 'missing-journal-dir-', 8 * MiB, 4 * MiB, 0x4a1);
  const { work, dataDir, model } = fx;
  let d = fx.d;
  const destaged = Buffer.from(model);
  // 1 MiB of acknowledged, flushed writes still only in the journal (manual destage, none asked).
  writeJournaled(d, work, model, 1 * MiB, 0x4a2);
  assert.ok((await coldStatus(d)).journalBytes >= MiB, 'the writes wait in the journal');
  assert.equal(await d.stop(), 0);

  const hot0 = path.join(dataDir, 'pools', 'hot-0');
  const journal = path.join(hot0, 'journal');
  const away = path.join(dataDir, 'journal.away');
  fs.renameSync(journal, away);
  const hotBefore = tree(hot0);
  const journalBefore = tree(away);

  const refused = await refusedStart(dataDir);
  assert.match(refused.message, REFUSAL(journal));
  assert.equal(fs.existsSync(journal), false, 'no empty journal made');
  assert.deepEqual(tree(hot0), hotBefore, 'the hot pool unchanged');
  assert.deepEqual(tree(away), journalBefore, 'the journal unchanged');
  // Offline, fsck names the missing directory.
  const f = fsckDataDir(dataDir);
  assert.equal(f.status, 1);
  assert.match((f.report as unknown as { journal: { problem: string | null } }).journal.problem ?? '', new RegExp(`directory ${journal.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is missing on pool hot-0`));
  // journal salvage says so too (serve's words), exits 1 and makes nothing (journal-salvage-missing-dir.test.ts).
  const salvage = d.cli('journal', 'salvage');
  assert.equal(salvage.status, 1, salvage.stderr);
  assert.match(salvage.stderr, REFUSAL(journal));
  assert.equal(fs.existsSync(journal), false, 'journal salvage makes no journal');
  // Refused again: nothing recorded by the refused start, or fsck, made it look new.
  assert.match((await refusedStart(dataDir)).message, REFUSAL(journal));

  // The disk is back: the journaled writes read back byte-exact.
  fs.renameSync(away, journal);
  d = await fx.restart();
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with its journal back');
  assert.ok((await coldStatus(d)).journalBytes >= MiB, 'replayed, not yet destaged');
  assert.equal(await d.stop(), 0);

  // The way out accepting the loss: an empty journal/ made by the operator.
  fs.renameSync(journal, away);
  fs.mkdirSync(journal);
  d = await fx.restart();
  assert.equal((await coldStatus(d)).journalBytes, 0, 'an empty journal');
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out2.bin')), destaged, 'c1 without its journal: the destaged bytes');
});

test('journal/ missing: an index from before the journal record refuses when a cold volume exists; a fresh data dir starts and records it', async (t) => {
  const fx = await coldVolumeWithWork(t, 'missing-journal-dir-old-', 4 * MiB, 1 * MiB, 0x4a3);
  const dataDir = fx.dataDir;
  let d = fx.d;
  assert.equal(await d.stop(), 0);
  await forgetJournalRecord(dataDir);
  const journal = path.join(dataDir, 'pools', 'hot-0', 'journal');
  fs.rmSync(journal, { recursive: true });
  assert.match((await refusedStart(dataDir)).message, REFUSAL(journal));
  assert.equal(fs.existsSync(journal), false, 'no empty journal made');
  fs.mkdirSync(journal);
  d = await fx.restart();
  assert.equal(await d.stop(), 0);

  // A brand-new data dir with no configuration (`npm start`): starts, makes its journal and
  // records it; the journal missing later is refused although no cold volume exists.
  const fresh = await TestDaemon.start({});
  t.after(() => fresh.cleanup());
  assert.equal(await fresh.stop(), 0);
  const freshJournal = path.join(fresh.dataDir, 'pools', 'hot-0', 'journal');
  assert.ok(fs.existsSync(freshJournal));
  fs.rmSync(freshJournal, { recursive: true });
  assert.match((await refusedStart(fresh.dataDir)).message, REFUSAL(freshJournal));
  // Without the record (an older build's data dir) and no cold volume nor destaged seq: nothing
  // says a journal held writes, so it starts (as before) and records the journal it makes.
  await forgetJournalRecord(fresh.dataDir);
  const again = await TestDaemon.start({ dataDir: fresh.dataDir });
  assert.equal(await again.stop(), 0);
  assert.ok(fs.existsSync(freshJournal), 'made at this start');

  // The whole journal pool missing: the start-up warning says a replaced disk needs an empty journal/ too.
  const hot0 = path.dirname(freshJournal);
  fs.renameSync(hot0, `${hot0}.unmounted`);
  const refused = await refusedStart(fresh.dataDir);
  assert.match(refused.message, /pool directory missing: the pool is offline \(not made again\); mount its disk; for a replaced disk, make the directory and an empty journal\/ in it \(the cold tier's journal it held is lost/);
  assert.match(refused.message, /pool hot-0 holds the cold tier's journal, and its directory .*hot-0 is missing or not writable: mount its disk; a replaced disk's journal is lost \(make the directory, and an empty journal\/ in it/);
  fs.renameSync(`${hot0}.unmounted`, hot0);
});
