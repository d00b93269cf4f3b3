// Review of 7e96923 (the nonce in the journal file's name): an upgrade leaves files named before
// nonces (journal-<no>.log, zeros where items now carry a nonce) beside the new build's
// (journal-<no>-<nonce hex>.log). One directory then holds both: they are taken in number order,
// replayed in seq order, and an old-named file whose records are all destaged is removed under its
// own name, as the new ones are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { checkJournalDir, parseJournalFileName, RecordType, scanJournalBytes, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, journalFiles, nameNonce, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const NONCE_OFFSET = 36;
const FILE_BYTES = 2 * RECORD_BYTES;

/** Every replayed extent of volume 1 (chunk 0), as [seq, block]. */
function replayed(j: Journal): [number, number][] {
  return (j.extents(1, 0) ?? []).map((e) => [e.seq, e.data![0]! - 1] as [number, number]);
}

test('an upgrade: old-named files 1..n beside new-named ones replay in order, and are removed under their own names once destaged', async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-name-upgrade-');
  // The old build's journal: enough rotations that numbers pass 9 (ten-digit names either way).
  const j0 = openTestJournal(dir, { fileBytes: FILE_BYTES });
  for (let i = 0; i < 20; i++) {
    await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j0.sync();
  }
  await j0.close();
  const made = journalFiles(dir);
  assert.ok(made.length >= 10, `rotations made: ${made.length} files`);
  const oldNames: string[] = [];
  for (const f of made) {
    const bytes = fs.readFileSync(f);
    const scan = scanJournalBytes(bytes, nameNonce(f));
    for (const pos of [...scan.records.map((r) => r.posBytes), ...scan.markers.map((m) => m.posBytes), ...scan.fences.map((fe) => fe.posBytes)]) bytes.fill(0, pos + NONCE_OFFSET, pos + NONCE_OFFSET + 4);
    const old = path.join(dir, `journal-${String(parseJournalFileName(path.basename(f))!.no).padStart(10, '0')}.log`);
    fs.writeFileSync(old, bytes);
    fs.rmSync(f);
    oldNames.push(old);
  }
  // The new build: replays them, writes on under new names.
  const j1 = openTestJournal(dir, { fileBytes: FILE_BYTES });
  assert.deepEqual(
    replayed(j1),
    Array.from({ length: 20 }, (_, i) => [i + 1, i]),
  );
  for (let i = 20; i < 26; i++) {
    await j1.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j1.sync();
  }
  await j1.close();
  const mixed = journalFiles(dir);
  const nos = mixed.map((f) => parseJournalFileName(path.basename(f))!.no);
  assert.deepEqual(nos, [...nos].sort((a, b) => a - b), 'listed in number order');
  assert.ok(oldNames.every((f) => mixed.includes(f)), 'the old names are kept');
  assert.ok(mixed.some((f) => nameNonce(f) !== null), 'and new-named files follow them');
  const lastOldNo = parseJournalFileName(path.basename(oldNames.at(-1)!))!.no;
  assert.ok(mixed.filter((f) => nameNonce(f) !== null).every((f) => parseJournalFileName(path.basename(f))!.no > lastOldNo), 'numbered after every old one');
  assert.deepEqual(checkJournalDir(dir).damaged, []);
  assert.equal(checkJournalDir(dir).tornTails, 0);

  const j2 = openTestJournal(dir, { fileBytes: FILE_BYTES });
  t.after(() => j2.close());
  assert.deepEqual(
    replayed(j2),
    Array.from({ length: 26 }, (_, i) => [i + 1, i]),
    'every write, old files and new, in seq order',
  );
  // Destaged: every file but the head goes, old names included.
  j2.release(1, 0, 26);
  await j2.close();
  const left = fs.readdirSync(dir);
  assert.ok(
    oldNames.every((f) => !left.includes(path.basename(f))),
    `the old-named files are removed: ${left.join(',')}`,
  );
  assert.equal(journalFiles(dir).filter((f) => nameNonce(f) === null).length, 0);
});
