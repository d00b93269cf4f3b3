// The seq fence a rotation writes first into a new journal file: a crash
// that cuts the new file's first write, after the older files were all
// destaged and removed, while the marker of an older sync landed after it,
// is a plain crash cut (no FLUSH covered the write): the next open cuts it.
// Without the fence the cut range had no lower bound for its seqs (P = 0),
// the older marker "covered" it, and the daemon refused to start until an
// operator ran salvage. Damage to a flushed first write is still refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JournalCorrupt, JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { VolumeFailed } from '../src/dataplane/errors.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, flipBit, journalFiles, openTestJournal, tinyFileSystem, journalFile } from './helpers/journal.js';

/** Write 1 (seq 1) is destaged: the stripe holds chunk 0 up to seq 1. */
function openJournal(dir: string): Journal {
  return openTestJournal(dir, { fileBytes: 2 * BLOCK_BYTES, destagedSeq: () => 1, highestDestagedSeq: 1 });
}

/**
 * Write 1 in file 1, then write 2, which rotates into file 2; `flushSecond`
 * says whether a FLUSH covers write 2 too (else only write 1's sync, taken
 * before write 2 was numbered, whose marker then lands after write 2).
 * Write 1 is released (destaged) and file 1 removed. Returns file 2 and
 * where write 2 sits in it.
 */
async function rotatedJournal(dir: string, flushSecond: boolean): Promise<{ file: string; secondAtBytes: number }> {
  const j = openTestJournal(dir, { fileBytes: 2 * BLOCK_BYTES });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x31));
  const first = j.sync(); // numbers up to seq 1 only: it starts before write 2 is numbered
  const second = j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x32));
  await Promise.all([first, second]);
  if (flushSecond) await j.sync();
  j.release(1, 0, 1);
  await j.close(); // the pending marker is written alone, after write 2
  // File 1's removal (decided by the release above) is asynchronous: made
  // here too, so the test does not race it.
  const file2 = journalFile(dir, 2);
  for (const f of journalFiles(dir)) if (f !== file2) fs.rmSync(f, { force: true });
  assert.deepEqual(journalFiles(dir), [file2]);
  const scan = scanJournalFile(file2);
  const rec = scan.records.find((r) => r.rec.seq === 2);
  assert.ok(rec, 'write 2 is not in file 2');
  const claim = Math.max(0, ...scan.markers.filter((m) => m.posBytes > rec.posBytes).map((m) => m.syncedSeq));
  assert.equal(claim, flushSecond ? 2 : 1, 'the markers after write 2 are not as planned');
  return { file: file2, secondAtBytes: rec.posBytes };
}

test('a crash cut of the first write of a rotated file, with the older files gone and an older sync marker after it, is cut at open', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-fence-cut-');
  const { file, secondAtBytes } = await rotatedJournal(dir, false);
  // The crash: write 2's writev never landed (zeros), the marker after it did.
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(RECORD_BYTES), 0, RECORD_BYTES, secondAtBytes);
  fs.closeSync(fd);
  assert.deepEqual(checkJournalDir(dir).damaged, [], 'fsck reports a plain crash cut as damage to flushed writes');
  const j = openJournal(dir);
  t.after(() => j.close());
  assert.equal(j.extents(1, 0), undefined, 'the cut write was replayed');
  assert.equal(fs.statSync(file).size, secondAtBytes, 'file 2 was not cut where write 2 began');
  assert.equal(j.failed, null);
});

test('damage to the flushed first write of a rotated file, with the older files gone, is still refused at open', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-fence-flushed-');
  const { file, secondAtBytes } = await rotatedJournal(dir, true);
  flipBit(file, secondAtBytes + JOURNAL_HEADER_BYTES + 7);
  assert.equal(checkJournalDir(dir).damaged.length, 1);
  assert.throws(() => openJournal(dir), JournalCorrupt);
});

test('a fence that cannot be written (the file system full at a rotation) fails the append and every FLUSH after it', async (t) => {
  const tiny = await tinyFileSystem(t, 16 * BLOCK_BYTES, 'couchestor-journal-fence-full-');
  const dir = path.join(tiny.dir, 'journal');
  // No room check: the test drives the fence that finds the disk full (the race the check leaves).
  const j = openTestJournal(dir, { fileBytes: 2 * BLOCK_BYTES, roomMarginBytes: null });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x41));
  await j.sync();
  // File 2 does not exist yet (its name carries the nonce it is made with): no room for it to grow.
  tiny.fill(path.join(dir, 'file-2-not-made-yet'));
  // Write 2 rotates into a new file, whose fence finds no room.
  await assert.rejects(j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x42)), (err: unknown) => err instanceof VolumeFailed && err.message.includes(tiny.fullErrorCode));
  await assert.rejects(j.sync(), VolumeFailed);
  await j.close();
  const file2 = journalFile(dir, 2);
  assert.equal(fs.statSync(file2).size, 0, 'the new file holds bytes of a write that failed');
});
