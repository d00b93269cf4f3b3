// Journal.close with a sync (a FLUSH) still running: close waits for it, the
// FLUSH is answered by a real fdatasync (never one on a descriptor close
// already closed), and its sync marker is written and made durable before
// the files close. Without that marker, damage to the flushed records before
// the next start is judged a crash cut: the records are dropped at open, an
// acknowledged write lost with no error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JournalClosed, JournalCorrupt, JOURNAL_HEADER_BYTES, RecordType, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, flipBit, journalFiles, openTestJournal } from './helpers/journal.js';

test('close waits for a running sync, writes its marker, and damage to the write it flushed is refused at the next open', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-close-sync-');
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j.sync();
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  // A FLUSH of write 2, then the stop before its fdatasync has returned.
  const flush = j.sync();
  const closed = j.close();
  // From the stop on, nothing new is taken.
  await assert.rejects(j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x12)), JournalClosed);
  await flush;
  await closed;
  await assert.rejects(j.sync(), JournalClosed);

  const [file] = journalFiles(dir);
  const scan = scanJournalFile(file!);
  const second = scan.records.find((r) => r.rec.seq === 2);
  assert.ok(second, 'write 2 is not in the file');
  assert.ok(
    scan.markers.some((m) => m.syncedSeq >= 2 && m.posBytes > second.posBytes),
    `no sync marker after write 2 claims it (markers: ${JSON.stringify(scan.markers)})`,
  );

  // Media damage to the flushed write while the daemon is stopped: the next
  // open must refuse (salvage is the operator's call), not cut it silently.
  flipBit(file!, second.posBytes + JOURNAL_HEADER_BYTES + 100);
  assert.throws(() => openTestJournal(dir), JournalCorrupt);
});

test('a sync asked for while close waits for another is waited for too, and its marker is the one left behind', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-close-sync2-');
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x20));
  const first = j.sync();
  const a2 = j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x21));
  const closed = j.close();
  // A FLUSH covering write 2 (appended before the stop: taken), asked for
  // while close waits for the first sync: it queues behind that one.
  const second = j.sync();
  await Promise.all([a2, first, second, closed]);
  const [file] = journalFiles(dir);
  const scan = scanJournalFile(file!);
  const claim = Math.max(0, ...scan.markers.map((m) => m.syncedSeq));
  assert.equal(claim, 2, `the markers left behind claim up to seq ${claim}, not the second sync's write`);
});
