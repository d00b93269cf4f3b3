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
import { JOURNAL_HEADER_BYTES, RecordType } from '../src/dataplane/journal/journal.js';
import { MiB, block, BLOCK_BYTES, openTestJournal, sparedJournal } from './helpers/journal.js';
import { smallDisk } from './helpers/small-pool.js';

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
