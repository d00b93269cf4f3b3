// Review of 3998c3d (seq fences): how a fence or claim is computed across
// restarts. The journal numbered new records above the highest record seq
// its files hold and the index's highest destagedSeq, but not above what its
// sync markers and fences claim. Once the records are gone (destaged, the
// file removed, and their volume deleted since, or moved off the cold tier,
// so the index no longer holds their destagedSeq), two opens in a row
// without a write leave heads holding only markers: the next open numbered
// from 1 again and kept the old markedSeq, so no FLUSH of the new run wrote a
// sync marker (each claimed no more than markedSeq) until the numbering
// passed it again (a run of millions of writes, for a deleted volume that
// had as many), and the old claims, carried in the head's first marker, were
// the bound a damaged range's seqs are judged against. Damage at rest to one
// flushed record was then judged a crash cut: the open dropped it and every
// intact flushed record after it in the file, silently, where the journal
// refuses and salvage keeps the intact ones. New records now number above
// every claim and fence the files hold too (the open's fence then carries
// that number to the next start).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JOURNAL_HEADER_BYTES, JournalCorrupt, RecordType, checkJournalDir, salvageJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, block, flipBit, journalFiles, openTestJournal } from './helpers/journal.js';

/** Writes the first run made (volume 1, each flushed), destaged, and then the volume deleted. */
const OLD_WRITES = 5;

test('two opens without a write after the records are gone: the next run numbers above the old claims, and damage to its first flushed write is refused, not cut with the intact one after it', async (t) => {
  const dir = tempDir(t, 'couchestor-review-seq-regression-');
  // Run 1: volume 1's writes, flushed, destaged; a clean stop.
  const j1 = openTestJournal(dir);
  for (let i = 0; i < OLD_WRITES; i++) {
    await j1.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j1.sync();
  }
  j1.release(1, 0, OLD_WRITES);
  await j1.close();
  // Volume 1 deleted: the index holds no destagedSeq of it (highestDestagedSeq 0), and it does not exist.
  const gone = { volumeExists: (id: number) => id !== 1, highestDestagedSeq: 0 };
  // Run 2 and run 3 start and stop without a write: run 2 drops run 1's file (nothing live in it).
  await openTestJournal(dir, gone).close();
  await openTestJournal(dir, gone).close();
  const j4 = openTestJournal(dir, gone);
  // Two writes of volume 2, flushed, and a clean stop.
  await j4.append(RecordType.Write, 2, 0, BLOCK_BYTES, block(20));
  await j4.append(RecordType.Write, 2, BLOCK_BYTES, BLOCK_BYTES, block(21));
  await j4.sync();
  await j4.close();
  const [head] = journalFiles(dir, { nonEmpty: true }).slice(-1);
  const scan = scanJournalFile(head!);
  assert.equal(scan.records.length, 2);
  assert.ok(scan.records[0]!.rec.seq > OLD_WRITES, `the new run numbered from ${scan.records[0]!.rec.seq} again, under the ${OLD_WRITES} its markers claim`);
  // Damage at rest to the first (flushed) write's payload.
  const first = scan.records[0]!;
  flipBit(head!, first.posBytes + JOURNAL_HEADER_BYTES + 100);
  const fsck = checkJournalDir(dir);
  assert.deepEqual(
    fsck.damaged.map((d) => ({ offsetBytes: d.offsetBytes, intactRecordsAfter: d.intactRecordsAfter })),
    [{ offsetBytes: first.posBytes, intactRecordsAfter: 1 }],
    'fsck: damage to a flushed write reported as a crash cut',
  );
  assert.throws(() => openTestJournal(dir, gone), JournalCorrupt, 'the open dropped two flushed writes (one intact) as a crash cut');
  assert.equal(fs.statSync(head!).size, scan.lengthBytes, 'the refused open changed the file');
  // The operator's salvage drops the damaged write only; the intact flushed one is replayed.
  assert.equal(salvageJournalDir(dir).dropped.length, 1);
  const j5 = openTestJournal(dir, gone);
  t.after(() => j5.close());
  assert.deepEqual(
    (j5.extents(2, 0) ?? []).map((e) => ({ offsetBytes: e.offsetBytes, ok: e.data?.equals(block(21)) })),
    [{ offsetBytes: BLOCK_BYTES, ok: true }],
  );
});
