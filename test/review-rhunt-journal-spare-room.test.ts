// Review of 48f8c90 (the journal waits for room on its disk): spare journal
// files are not room for the head. The check counted the spares' bytes as
// free space, but an append goes into the head, never into a spare: with the
// disk filled (hot volumes, objects) while a spare was kept and the head had
// grown past any blocks it held, the check passed, the writev hit ENOSPC and
// the journal failed ("cold volumes are offline": every cold volume's writes
// EIO until a restart), the very outcome 48f8c90 meant to end. Now a journal
// short of room on its disk gives its spares back to it first (unlinked, as a
// write needing their capacity does) and measures again: here that frees
// enough, and the write lands. In process, on a real 16 MiB tmpfs (root;
// helpers/small-pool).
import { test } from 'node:test';
import assert from 'node:assert/strict';

// The journal's wait for room, shortened (read when journal.js loads: imported after this).
process.env.COUCHESTOR_TEST_JOURNAL_FULL_TIMEOUT_MS = '300';
const { JOURNAL_HEADER_BYTES, RecordType } = await import('../src/dataplane/journal/journal.js');
const { MiB, block, BLOCK_BYTES, openTestJournal, sparedJournal } = await import('./helpers/journal.js');
const { smallDisk } = await import('./helpers/small-pool.js');

/** The spares' files: two of ~2 MiB (blocks the next open's head reuses, and one kept). */
const SPARE_FILE_BYTES = 2 * MiB;
const DESTAGED_SEQ = 1100;
const RECORD_DATA_BYTES = 256 * 1024;

test('a full journal disk with a spare kept: the spare is given back and the write lands; the journal is not failed', async (t) => {
  const disk = await smallDisk(t, 'review-rhunt-journal-spare-room-', 16 * MiB);
  await sparedJournal(disk.poolDir, DESTAGED_SEQ, { fileBytes: SPARE_FILE_BYTES, capacityBytes: 12 * MiB });
  // Files far larger than the spares: the head (a spare reused) grows past its blocks and no rotation takes the other spare.
  const j = openTestJournal(disk.poolDir, { fileBytes: 8 * MiB, capacityBytes: 12 * MiB, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
  t.after(() => j.close());
  assert.equal(j.spareFiles.length, 1, "one spare is kept (the open's head took the other)");
  const data = (i: number) => Buffer.alloc(RECORD_DATA_BYTES, (i + 1) & 0xff);
  // 2.5 MiB into the head: past the ~2 MiB of blocks it took over.
  let off = DESTAGED_SEQ * BLOCK_BYTES;
  for (let i = 0; i < 10; i++, off += RECORD_DATA_BYTES) await j.append(RecordType.Write, 1, off, RECORD_DATA_BYTES, data(i));
  await j.sync();

  disk.leaveFree(0);
  // Before: room counted as free + the spare's ~2 MiB, the writev hit ENOSPC and the journal failed.
  await j.append(RecordType.Write, 1, off, RECORD_DATA_BYTES, data(10));
  await j.sync();
  assert.deepEqual(j.spareFiles, [], 'the spare was given back to the disk');
  assert.equal(j.bytesLive, 11 * (JOURNAL_HEADER_BYTES + RECORD_DATA_BYTES));
  // And the journal still takes writes, while room lasts.
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.sync();
});

// The free space is measured again once the last statfs is 10 ms old (and
// near 64 MiB free, as before), less the appends in flight. Measured once a
// second, another writer of the disk (a hot volume under fio) taking the
// room in that second left the estimate stale: the check passed, the writev
// hit ENOSPC and the journal failed.
test('the disk filled by another writer right after an append: the next append waits for room and fails alone; the journal is not failed', async (t) => {
  const disk = await smallDisk(t, 'review-rhunt-journal-stale-room-', 96 * MiB);
  const j = openTestJournal(disk.poolDir, { fileBytes: 8 * MiB, capacityBytes: 32 * MiB });
  t.after(() => j.close());
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.sync();
  // A hot volume's writes take the disk: less left than the next record.
  disk.leaveFree(128 * 1024);
  // Past the 10 ms a measurement is trusted (the fill itself may take less): time is the condition here.
  await new Promise((r) => setTimeout(r, 20));
  const started = Date.now();
  // Before: the estimate (~90 MiB from the first append's statfs) let it through: ENOSPC, journal failed.
  await assert.rejects(j.append(RecordType.Write, 1, MiB, RECORD_DATA_BYTES, Buffer.alloc(RECORD_DATA_BYTES, 7)), { name: 'NoSpace' });
  t.diagnostic(`refused after ${Date.now() - started} ms`);
  await j.sync();
  disk.freeFiller();
  await j.append(RecordType.Write, 1, MiB, RECORD_DATA_BYTES, Buffer.alloc(RECORD_DATA_BYTES, 7));
  await j.sync();
});
