// Review of 30ad499 (close syncs every file when its end marker fails): the
// same stop can fail one write earlier, on the last sync's marker that close
// itself writes (pending: no append came to carry it and its 50 ms timer had
// not fired). That failure was latched before close looked, so close took
// the journal for one that had failed before the stop and skipped every
// fdatasync: a write that landed after that sync began, acknowledged but not
// flushed, stayed in the page cache only, and a power cut after the "clean"
// stop lost it (what 30ad499 fixed for the end marker). Close's own marker
// is now judged as its end is: the files are all fdatasynced, no end is
// written after the failed marker (the next start sees no clean stop and
// cuts the partial marker as a torn tail), and the stop is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { journalFiles, modelledTinyJournal, powerCutNow, replayedWrites, stopModelledJournal } from './helpers/journal.js';

const PAGE_BYTES = 4096;
/** Write A (flushed) is one page of payload; B's fills the head to two pages, so close's marker needs a page the full file system lacks. */
const A_BYTES = PAGE_BYTES;
const B_BYTES = 2 * PAGE_BYTES - 2 * JOURNAL_HEADER_BYTES - A_BYTES;

test("close's pending sync marker fails for want of room: every file is still fdatasynced, the unflushed write survives a power cut, the next open replays it", async (t) => {
  // The marker's 50 ms timer never fires: close writes it.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const mj = await modelledTinyJournal(t, 'couchestor-review-close-marker-fails-', 13);
  const { plfs, tiny, dir, rng, j } = mj;
  const a = Buffer.alloc(A_BYTES, 0xa1);
  const b = Buffer.alloc(B_BYTES, 0xb2);
  await plfs.pumpUntil(j.append(RecordType.Write, 1, 0, A_BYTES, a), rng);
  // A FLUSH of A; B is appended while it runs: issued before its marker exists (nothing for B to
  // carry), and not covered by it. Its marker is then pending when close starts.
  const synced = j.sync();
  const bWritten = j.append(RecordType.Write, 1, PAGE_BYTES, B_BYTES, b);
  await plfs.pumpUntil(bWritten, rng);
  await plfs.pumpUntil(synced, rng);
  const [head] = journalFiles(dir);
  assert.equal(fs.statSync(head!).size, 2 * PAGE_BYTES, 'the head ends on a page boundary, no marker after B (the case under test)');
  tiny.fill(head!);

  const { lines, syncsOf } = await stopModelledJournal(mj);
  assert.equal(fs.statSync(head!).size, 2 * PAGE_BYTES, "close's marker found room after all");
  assert.match(j.failed?.message ?? '', new RegExp(tiny.fullErrorCode), "the marker's failure is latched");
  assert.ok(
    lines.some((l) => l.includes('closed without its end marker') && l.includes('every journal file was fdatasynced')),
    `close did not report the missing end:\n${lines.join('\n')}`,
  );
  // Before: no barrier at all from close (the marker's failure skipped every fdatasync).
  const closeSyncs = syncsOf(head!);
  assert.ok(closeSyncs.length >= 1, "close did not fdatasync the head after its marker failed");

  // A power cut right after the stop, losing everything not made durable.
  const { into, head: cutHead } = powerCutNow(t, mj, 'couchestor-review-close-marker-fails-cut-');
  assert.equal(scanJournalFile(cutHead!).ended, false, 'the head has no end: the next start sees no clean stop');
  assert.deepEqual(checkJournalDir(into).damaged, []);
  const replayed = replayedWrites(t, into, 1);
  assert.deepEqual(replayed, [
    { offsetBytes: 0, data: a },
    { offsetBytes: PAGE_BYTES, data: b },
  ]);
});
