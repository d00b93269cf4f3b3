// Spare journal files (destaged files kept for reuse) are inside the
// journal's capacity: live bytes + spare bytes never exceed capacityBytes,
// so the hot pool holds no more than the operator configured. A write that
// needs a spare's room unlinks the spare instead of waiting for a destage;
// an open with spares that no longer fit (less capacity configured) drops them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_SPARE_FILES, RecordType, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, openTestJournal, sparedJournal } from './helpers/journal.js';

/** Files of six records at most (a fence and markers take the rest of the sixth). */
const FILE_BYTES = 6 * RECORD_BYTES;
const CAPACITY_BYTES = 4 * FILE_BYTES;
/** Seqs the first run wrote and destaged. */
const DESTAGED_SEQ = 20;

/** Bytes of the spare files in `dir`, as the file system has them. */
function spareBytesOnDisk(dir: string): number {
  return fs
    .readdirSync(dir)
    .filter((n) => n.startsWith('journal-spare-'))
    .reduce((sum, n) => sum + fs.statSync(path.join(dir, n)).size, 0);
}

/**
 * The second run: files far larger than the spares, so no rotation takes the spare the open's
 * head left (a rotation would take it, and then nothing is left to count).
 */
function open(dir: string, capacityBytes = CAPACITY_BYTES): Journal {
  return openTestJournal(dir, { fileBytes: 64 * FILE_BYTES, capacityBytes, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
}

test('live bytes + spare bytes never exceed the capacity: writes that need a spare\'s room unlink it, and every write fits without waiting', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-spares-capacity-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  const j = open(dir);
  t.after(() => j.close());
  assert.equal(j.spareFiles.length, JOURNAL_SPARE_FILES - 1, "the open's head took a spare");
  assert.ok(j.bytesSpare > 0);
  const records = Math.floor(CAPACITY_BYTES / RECORD_BYTES);
  let maxSumBytes = 0;
  for (let i = 0; i < records; i++) {
    // Spread over chunks as a guest would; none destaged, so every record stays live.
    await j.append(RecordType.Write, 1, DESTAGED_SEQ * BLOCK_BYTES + i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    assert.equal(j.bytesSpare, spareBytesOnDisk(dir), `after write ${i}: the spare bytes counted are not the ones on disk`);
    maxSumBytes = Math.max(maxSumBytes, j.bytesLive + spareBytesOnDisk(dir));
    // Before: the spare stayed while the live bytes grew to the capacity (up to a spare's size over).
    assert.ok(j.bytesLive + spareBytesOnDisk(dir) <= CAPACITY_BYTES, `after write ${i}: ${j.bytesLive} live + ${spareBytesOnDisk(dir)} spare bytes > capacity ${CAPACITY_BYTES}`);
  }
  await j.sync();
  assert.equal(j.bytesLive, records * RECORD_BYTES, 'every write was taken (none waited for a destage: none is run here)');
  assert.deepEqual(j.spareFiles, [], 'the spare was unlinked for the writes that needed its room');
  t.diagnostic(`peak live + spare bytes ${maxSumBytes} of ${CAPACITY_BYTES}`);
});

test('an open whose adopted spares do not fit in the capacity (a smaller one configured since) drops them', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-spares-shrunk-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  const capacityBytes = 2 * RECORD_BYTES;
  assert.ok(spareBytesOnDisk(dir) > capacityBytes);
  const j = open(dir, capacityBytes);
  t.after(() => j.close());
  // Before: the spare the head did not take stayed, larger than the whole capacity.
  assert.ok(j.bytesLive + spareBytesOnDisk(dir) <= capacityBytes, `${j.bytesLive} live + ${spareBytesOnDisk(dir)} spare bytes > capacity ${capacityBytes}`);
  assert.equal(j.bytesSpare, spareBytesOnDisk(dir));
  // Writes still fit, up to the capacity.
  for (let i = 0; i < 2; i++) await j.append(RecordType.Write, 1, (DESTAGED_SEQ + i) * BLOCK_BYTES, BLOCK_BYTES, block(i));
  await j.sync();
  assert.equal(j.bytesLive, capacityBytes);
});
