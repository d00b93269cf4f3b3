// Review of 763f5e3 (close waits for running syncs and writes the pending
// marker): close racing appends in flight across rotations, syncs asked for
// before and during it, a release that removes older files (a claim marker
// written into the head) while it waits, and a second close. Nothing may
// fail with a closed descriptor, hang, or lose a write that resolved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JournalClosed, RecordType, checkJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, MiB, RECORD_BYTES, block, journalFiles, openTestJournal } from './helpers/journal.js';

test('close racing appends, rotations, syncs and a release settles everything, and every resolved write reopens', { timeout: 20_000 }, async (t) => {
  const dir = tempDir(t, 'couchestor-rv-close-races-');
  const j = openTestJournal(dir, { fileBytes: 3 * RECORD_BYTES });
  // Seqs 1-10 in chunk 0, flushed: destaged below (released while close waits).
  for (let i = 0; i < 10; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
  await j.sync();
  // Seqs 11-20 in chunk 1, in flight (rotating files) when close starts, with syncs among them.
  const appends: Promise<void>[] = [];
  const syncs: Promise<void>[] = [];
  for (let i = 10; i < 20; i++) {
    appends.push(j.append(RecordType.Write, 1, MiB + i * BLOCK_BYTES, BLOCK_BYTES, block(i)));
    if (i % 3 === 0) syncs.push(j.sync());
  }
  const closed = j.close();
  // While close waits: a FLUSH, a destage's release (older files go, their claims re-written into the head), an append and a second close.
  syncs.push(j.sync());
  j.release(1, 0, 10);
  await assert.rejects(j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(99)), JournalClosed);
  const closedAgain = j.close();
  await closed;
  await closedAgain;
  const settled = await Promise.allSettled([...appends, ...syncs]);
  assert.deepEqual(
    settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason)),
    [],
  );
  assert.equal(j.failed, null);
  await assert.rejects(j.sync(), JournalClosed);
  // The last sync's marker claims every write: it is in the files, after every record.
  const files = journalFiles(dir, { nonEmpty: true });
  const scans = files.map((f) => scanJournalFile(f));
  assert.equal(Math.max(...scans.flatMap((s) => s.markers.map((m) => m.syncedSeq))), 20, 'no marker claims the last FLUSH');
  assert.deepEqual(checkJournalDir(dir), { filesScanned: journalFiles(dir).length, recordsScanned: scans.reduce((n, s) => n + s.records.length, 0), tornTails: 0, damaged: [] });
  const j2 = openTestJournal(dir, { destagedSeq: (_v, c) => (c === 0 ? 10 : 0), highestDestagedSeq: 10 });
  t.after(() => j2.close());
  assert.equal(j2.extents(1, 0), undefined);
  assert.deepEqual(
    j2.extents(1, 1)!.map((e) => [e.seq, e.offsetBytes, e.data!.equals(block(e.seq - 1))]),
    Array.from({ length: 10 }, (_, k) => [11 + k, MiB + (10 + k) * BLOCK_BYTES, true]),
  );
});
