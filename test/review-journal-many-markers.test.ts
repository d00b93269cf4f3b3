// A journal file holding more sync markers than a JavaScript call takes arguments: one marker
// per record when every write is flushed on its own (a guest zeroing or trimming 4 KiB at a time
// with a FLUSH after each: 80 bytes per pair, up to 838,000 pairs in a 64 MiB file).
// judgeJournal took the highest claim with Math.max(...markers), which throws RangeError past
// ~120,000 arguments: the open of an intact journal failed (cold volumes offline) and fsck crashed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { checkJournalDir, JOURNAL_HEADER_BYTES, RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, journalFiles, openTestJournal, nameNonce } from './helpers/journal.js';

const PAIRS = 140_000;

/** A header-only item (Zero record or sync marker) as the journal writes it. */
function item(type: number, seq: number, offsetBytes: number, lengthBytes: number, nonce: number, endsFile = false): Buffer {
  const h = Buffer.alloc(JOURNAL_HEADER_BYTES);
  h.writeUInt32LE(0x4e524a43, 0);
  h.writeUInt8(1, 4);
  h.writeUInt8(type, 5);
  if (endsFile) h.writeUInt8(1, 6);
  h.writeUInt32LE(type === RecordType.Zero ? 1 : 0, 8);
  h.writeUInt32LE(lengthBytes, 12);
  h.writeUInt32LE(seq, 16);
  h.writeUInt32LE(offsetBytes, 24);
  h.writeUInt32LE(crc32c(h.subarray(0, 32)), 32);
  h.writeUInt32LE(nonce, 36);
  return h;
}

test(`a journal file of ${PAIRS} zero writes each flushed on its own (a marker after each) opens, replays, and fsck checks it`, async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-many-markers-');
  // The pattern, written by the journal itself: zero write, FLUSH, zero write, FLUSH (its marker at close).
  const j = openTestJournal(dir, { fileBytes: 1024 * 1024 * 1024 });
  for (let i = 0; i < 2; i++) {
    await j.append(RecordType.Zero, 1, i * BLOCK_BYTES, BLOCK_BYTES, null);
    await j.sync();
  }
  await j.close();
  const [file] = journalFiles(dir);
  const real = fs.readFileSync(file!);
  const nonce = nameNonce(file!)!;
  const pair = (i: number) => [item(RecordType.Zero, i + 1, (i % 256) * BLOCK_BYTES, BLOCK_BYTES, nonce), item(3, i + 1, 0, 0, nonce)];
  // Then the end marker a clean close leaves (claiming the last sync), not part of the pattern.
  assert.deepEqual(Buffer.concat([...pair(0), ...pair(1), item(3, 2, 0, 0, nonce, true)]), real, 'the pairs below are byte for byte what the journal writes');
  // Continued to PAIRS pairs (a real run takes ~1.4 ms a pair here: 3 minutes), then a torn last write.
  const bytes = Buffer.concat([...Array.from({ length: PAIRS }, (_, i) => pair(i)).flat(), item(RecordType.Zero, PAIRS + 1, 0, BLOCK_BYTES, nonce).subarray(0, 20)]);
  fs.writeFileSync(file!, bytes);
  // Before: RangeError (Maximum call stack size exceeded) from both.
  const fsck = checkJournalDir(dir);
  assert.equal(fsck.recordsScanned, PAIRS);
  assert.deepEqual(fsck.damaged, []);
  assert.equal(fsck.tornTails, 1);
  const j2 = openTestJournal(dir, { destagedSeq: () => PAIRS - 3 });
  try {
    assert.deepEqual(
      (j2.extents(1, 0) ?? []).map((e) => e.seq),
      [PAIRS - 2, PAIRS - 1, PAIRS],
    );
    assert.equal(fs.statSync(file!).size, bytes.length - 20, 'the torn write is cut');
  } finally {
    await j2.close();
  }
});
