// A destaged journal file is kept as a spare only if it fits in the capacity
// beside the live bytes and the spares (spares count in capacityBytes): a
// file destaged while the journal is near full is removed, not kept. No
// test covered it (journal-spares-in-capacity passed with both checks, in
// maybeRemove and in recycleFile, taken out).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, MiB, RECORD_BYTES, block, openTestJournal } from './helpers/journal.js';

/** Three records a file (and its end marker, or a rotation's fence and the end). */
const FILE_BYTES = 3 * RECORD_BYTES + 2 * 40;
const CAPACITY_BYTES = 10 * RECORD_BYTES;
/** Chunks (1 MiB each): A and B share the first file, C fills the rest. */
const A = 0;
const B = 1;
const C = 2;

test('a file destaged while the journal is near full is not kept as a spare: live + spare bytes stay within the capacity', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-spare-fit-');
  const j = openTestJournal(dir, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  const write = (chunk: number, i: number) => j.append(RecordType.Write, 1, chunk * MiB + i * BLOCK_BYTES, BLOCK_BYTES, block(i));
  // The first file: A, B, A.
  await write(A, 0);
  await write(B, 0);
  await write(A, 1);
  // A destaged: the first file keeps B's record (live), and its room is taken again by C's writes.
  j.release(1, A, Number.MAX_SAFE_INTEGER);
  let n = 0;
  while (j.bytesLive + RECORD_BYTES <= CAPACITY_BYTES) await write(C, n++);
  await j.sync();
  // B destaged: the first file is empty, but its bytes do not fit beside the live ones.
  const liveBytes = j.bytesLive - RECORD_BYTES;
  const firstFileBytes = fs.statSync(`${dir}/${fs.readdirSync(dir).filter((x) => x.startsWith('journal-0000000001-'))[0]}`).size;
  assert.ok(liveBytes + firstFileBytes > CAPACITY_BYTES, `the case needs a file that does not fit: ${liveBytes} + ${firstFileBytes} <= ${CAPACITY_BYTES}`);
  j.release(1, B, Number.MAX_SAFE_INTEGER);
  await j.close();
  const spareBytes = fs
    .readdirSync(dir)
    .filter((x) => x.startsWith('journal-spare-'))
    .reduce((sum, x) => sum + fs.statSync(`${dir}/${x}`).size, 0);
  // Before (with neither check): the first file kept as a spare, live + spare bytes past the capacity.
  assert.ok(liveBytes + spareBytes <= CAPACITY_BYTES, `${liveBytes} live + ${spareBytes} spare bytes > capacity ${CAPACITY_BYTES}`);
  assert.equal(spareBytes, 0);
});
