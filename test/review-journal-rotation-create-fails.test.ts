// A rotation whose new file cannot be opened (EMFILE under many connections,
// ENOSPC with no inode left) fails that one append, and must leave the file
// it was leaving as it was: no end marker in it while it stays the head. The
// scan stops at an end marker, so a later record or sync marker written after
// one (a smaller record still fits) was never replayed: a flushed write lost.
// With a spare, the spare must not be left renamed to the new number (the
// retried rotation then made a second file with that number: the next open
// refused the journal, JournalDuplicateFile).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_HEADER_BYTES, RecordType, parseJournalFileName, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, journalFiles, openTestJournal } from './helpers/journal.js';

/**
 * Two 4 KiB records and a marker fill a file to its last 80 bytes: a third
 * 4 KiB record rotates, a zero write (40 bytes) still fits once the end
 * marker a rotation writes would have taken 40.
 */
const FILE_BYTES = 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES + 2 * JOURNAL_HEADER_BYTES;

/**
 * While armed, every open of a journal file or spare in `dir` fails with
 * EMFILE (what a process out of descriptors gets: every open fails, not one).
 */
function failJournalOpens(t: TestContext, dir: string): { armed: boolean; failed: number } {
  const real = fs.openSync;
  const state = { armed: false, failed: 0 };
  t.mock.method(fs, 'openSync', (p: fs.PathLike, ...rest: unknown[]) => {
    const name = path.basename(String(p));
    if (state.armed && path.dirname(String(p)) === dir && name.startsWith('journal-')) {
      state.failed++;
      throw Object.assign(new Error(`EMFILE: too many open files, open '${p}'`), { code: 'EMFILE', errno: -24, syscall: 'open' });
    }
    return (real as (...a: unknown[]) => number)(p, ...rest);
  });
  return state;
}

/** Two flushed 4 KiB writes (blocks 0 and 1): the head is 80 bytes short of FILE_BYTES. */
async function fillHead(j: Journal, from: number): Promise<void> {
  for (let i = from; i < from + 2; i++) {
    await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j.sync();
  }
}

test('a rotation whose new file cannot be opened leaves no end marker in the head: a smaller write after it, flushed, is replayed', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-rotation-emfile-');
  const j = openTestJournal(dir, { fileBytes: FILE_BYTES });
  await fillHead(j, 0);
  const inject = failJournalOpens(t, dir);
  inject.armed = true;
  await assert.rejects(j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, block(2)), { code: 'EMFILE' });
  inject.armed = false;
  assert.ok(inject.failed > 0, 'the rotation tried to open its new file');
  assert.equal(j.failed, null, 'one failed open does not fail the journal');
  // Fits in the head (no rotation): acknowledged and flushed.
  await j.append(RecordType.Zero, 1, 5 * BLOCK_BYTES, BLOCK_BYTES, null);
  await j.sync();
  await j.close();
  t.mock.restoreAll();
  const j2 = openTestJournal(dir, { fileBytes: FILE_BYTES });
  const replayed = (j2.extents(1, 0) ?? []).map((e) => [e.type, e.offsetBytes / BLOCK_BYTES]);
  await j2.close();
  // Before: [[1, 0], [1, 1]]: the zero write lay after the rotation's end marker, never scanned.
  assert.deepEqual(replayed, [
    [RecordType.Write, 0],
    [RecordType.Write, 1],
    [RecordType.Zero, 5],
  ]);
});

test('a rotation that took a spare and cannot open it leaves no file under the new number: the next open does not refuse the journal', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-rotation-spare-emfile-');
  // A first run whose files are destaged and kept as spares.
  const j0 = openTestJournal(dir, { fileBytes: FILE_BYTES });
  for (let i = 0; i < 12; i++) {
    await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j0.sync();
  }
  j0.release(1, 0, 12);
  await j0.close();
  const destaged = { destagedSeq: () => 12, highestDestagedSeq: 12 };
  const j = openTestJournal(dir, { fileBytes: FILE_BYTES, ...destaged });
  assert.ok(j.spareFiles.length >= 1, 'a spare is left for the rotation');
  await fillHead(j, 20);
  const inject = failJournalOpens(t, dir);
  inject.armed = true;
  await assert.rejects(j.append(RecordType.Write, 1, 22 * BLOCK_BYTES, BLOCK_BYTES, block(22)), { code: 'EMFILE' });
  inject.armed = false;
  assert.ok(inject.failed > 0);
  // The retried rotation succeeds: records go to the new file.
  await j.append(RecordType.Write, 1, 23 * BLOCK_BYTES, BLOCK_BYTES, block(23));
  await j.sync();
  await j.close();
  t.mock.restoreAll();
  const nos = journalFiles(dir).map((f) => parseJournalFileName(path.basename(f))!.no);
  assert.equal(new Set(nos).size, nos.length, `two journal files share a number: ${fs.readdirSync(dir).join(', ')}`);
  // Before: JournalDuplicateFile (the spare renamed to the new number, then a second file made with it).
  const j2 = openTestJournal(dir, { fileBytes: FILE_BYTES, ...destaged });
  assert.deepEqual(
    (j2.extents(1, 0) ?? []).map((e) => e.offsetBytes / BLOCK_BYTES),
    [20, 21, 23],
  );
  await j2.close();
});
