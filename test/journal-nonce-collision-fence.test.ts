// A head reused from a spare whose fresh nonce happens to equal the old one
// (a 2^-32 chance per reuse): after a crash (no end marker), the old file's
// records past the new tail carry the head's nonce, and where the new tail
// falls on an old record's start they verify as items. The seq fence every
// file made by this build starts with rejects them: no old record is scanned
// or counted, fsck reports the crash's torn tail (not a clean end), and the
// next open cuts the file at its last own record and replays exactly the
// writes of the run. The collision is made by hand: the nonce is outside the
// CRC, so the old items with the head's nonce written over theirs are the
// bytes a collision leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_SPARE_FILES, RecordType, checkJournalDir, scanJournalBytes, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, journalFiles, nameNonce, openTestJournal, sparedJournal } from './helpers/journal.js';

/** Seqs the first run wrote and destaged (blocks 0-19 of volume 1). */
const DESTAGED_SEQ = 20;
/** The first write's length: the head's items then end on an old record's start. */
const FIRST_BYTES = BLOCK_BYTES - 40;
/** Where an item header carries its file's nonce (outside the CRC). */
const NONCE_OFFSET = 36;

function open(dir: string): Journal {
  return openTestJournal(dir, { fileBytes: 6 * RECORD_BYTES, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
}

test("a head reused from a spare with the old file's nonce: after a crash no old record is taken, fsck reports the torn tail, the open cuts it and replays the run's writes", async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-collision-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: 6 * RECORD_BYTES });
  // The spares' old nonces, read from their first items before the open takes one.
  const oldNonces = new Set(fs.readdirSync(dir).filter((n) => n.startsWith('journal-spare-')).map((n) => fs.readFileSync(path.join(dir, n)).readUInt32LE(NONCE_OFFSET)));
  assert.equal(oldNonces.size, JOURNAL_SPARE_FILES);

  const killed = open(dir);
  // A write flushed, then one not: with the head's first items (two markers: the open's, a claim) and
  // the flush's marker they end where the old file's third record starts (its first two records, each
  // followed by its marker), the first write 40 bytes short of a block for that.
  await killed.append(RecordType.Write, 1, 20 * BLOCK_BYTES, FIRST_BYTES, block(20).subarray(0, FIRST_BYTES));
  await killed.sync();
  await killed.append(RecordType.Write, 1, 21 * BLOCK_BYTES, BLOCK_BYTES, block(21));
  // Not closed: a crash (every write landed, no end marker).
  const [head] = journalFiles(dir).slice(-1);
  const headNonce = nameNonce(head!)!;
  const bytes = fs.readFileSync(head!);
  const own = scanJournalBytes(bytes, headNonce);
  assert.deepEqual(own.records.map((r) => r.rec.seq), [21, 22]);
  const oldNonce = [...oldNonces].find((n) => scanJournalBytes(bytes, n).records.some((r) => r.posBytes >= own.endBytes));
  assert.ok(oldNonce !== undefined, 'the head holds an old file\'s records past its tail (the case under test)');
  const stale = scanJournalBytes(bytes, oldNonce).records.filter((r) => r.posBytes >= own.endBytes);
  assert.ok(stale.some((r) => r.posBytes === own.endBytes), 'the new tail falls on an old record\'s start (the case under test)');
  // The collision: the old items carry the head's nonce.
  const oldItems = [...scanJournalBytes(bytes, oldNonce).records.map((r) => r.posBytes), ...scanJournalBytes(bytes, oldNonce).markers.map((m) => m.posBytes)].filter((p) => p >= own.endBytes);
  for (const p of oldItems) bytes.writeUInt32LE(headNonce, p + NONCE_OFFSET);
  fs.writeFileSync(head!, bytes);

  // Before: the old records (seqs 1-20, below the fence) were the head's, and the old end marker after them its clean end.
  const scan = scanJournalFile(head!);
  assert.deepEqual(scan.records.map((r) => r.rec.seq), [21, 22], 'old records taken as the head\'s');
  assert.equal(scan.ended, false, 'an old end marker read as a clean stop');
  const fsck = checkJournalDir(dir);
  assert.equal(fsck.tornTails, 1, 'the crash is not reported');
  assert.deepEqual(fsck.damaged, []);

  const j = open(dir);
  assert.equal(fs.statSync(head!).size, own.endBytes, 'the open did not cut the old bytes at the last own record');
  assert.deepEqual(
    (j.extents(1, 0) ?? []).map((e) => ({ seq: e.seq, ok: e.data?.equals(block(e.offsetBytes / BLOCK_BYTES).subarray(0, e.lengthBytes)) })),
    [
      { seq: 21, ok: true },
      { seq: 22, ok: true },
    ],
  );
  await j.close();
  // Only now: its descriptors must outlive the checks above (its own close writes into a file the open cut).
  await killed.close();
});
