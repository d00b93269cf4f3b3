// A clean close whose end marker cannot be written (the file system is full
// under the head's tail: ENOSPC, or EFBIG where only a file-size limit can
// stand for it) still fdatasyncs every journal file, so a write that landed
// before the stop survives a power cut after it, and the next open replays
// it (the head has no end: no clean stop). Before, the end's failure was
// latched and close skipped every fdatasync: the landed, unflushed write
// was only in the page cache, and a power cut after the "clean" stop lost it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { journalFiles, modelledTinyJournal, powerCutNow, replayedWrites, stopModelledJournal } from './helpers/journal.js';

const PAGE_BYTES = 4096;
/** Write A's payload; B's is what is left of two pages, so the end marker needs a page the full file system lacks. */
const A_BYTES = PAGE_BYTES - 2 * JOURNAL_HEADER_BYTES;

test('the end marker at close fails for want of room: every file is still fdatasynced, the unflushed write survives a power cut, the next open replays it', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const mj = await modelledTinyJournal(t, 'couchestor-journal-end-fails-', 11);
  const { plfs, tiny, dir, rng, j } = mj;
  const a = Buffer.alloc(A_BYTES, 0xa1);
  await plfs.pumpUntil(j.append(RecordType.Write, 1, 0, A_BYTES, a), rng);
  await plfs.pumpUntil(j.sync(), rng);
  // A's sync marker, written alone by its timer: the head's size is then known.
  t.mock.timers.tick(50);
  await plfs.drain(rng);
  const [head] = journalFiles(dir);
  const b = Buffer.alloc(2 * PAGE_BYTES - fs.statSync(head!).size - JOURNAL_HEADER_BYTES, 0xb2);
  // B landed (its writev returned) but no FLUSH covered it: only close's fdatasync makes it durable.
  await plfs.pumpUntil(j.append(RecordType.Write, 1, PAGE_BYTES, b.length, b), rng);
  assert.equal(fs.statSync(head!).size, 2 * PAGE_BYTES, 'the head ends on a page boundary (the case under test)');
  tiny.fill(head!);

  const { lines, syncsOf } = await stopModelledJournal(mj);
  assert.equal(fs.statSync(head!).size, 2 * PAGE_BYTES, 'the end marker found room after all');
  assert.match(j.failed?.message ?? '', new RegExp(tiny.fullErrorCode), 'the end marker failure is latched');
  assert.ok(
    lines.some((l) => l.includes('closed without its end marker') && l.includes('every journal file was fdatasynced')),
    `close did not report the missing end:\n${lines.join('\n')}`,
  );
  // Before: no barrier at all from close (the failure skipped every fdatasync).
  const closeSyncs = syncsOf(head!);
  assert.ok(closeSyncs.length >= 1, 'close did not fdatasync the head after its end marker failed');

  // A power cut right after the stop, losing everything not made durable.
  const { into, head: cutHead } = powerCutNow(t, mj, 'couchestor-journal-end-fails-cut-');
  assert.equal(scanJournalFile(cutHead!).ended, false, 'the head has no end: the next start sees no clean stop');
  assert.deepEqual(checkJournalDir(into).damaged, []);
  const replayed = replayedWrites(t, into, 1);
  assert.deepEqual(replayed, [
    { offsetBytes: 0, data: a },
    { offsetBytes: PAGE_BYTES, data: b },
  ]);
});
