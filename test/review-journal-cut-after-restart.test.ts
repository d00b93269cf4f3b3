// Review of 7838103 (sync markers): after a restart whose older journal files
// were all destaged and removed, the new head is the oldest file and no intact
// write precedes its first record, so judgeJournal took P (the last write
// before a damaged range) as 0. A FLUSH right after the restart claims the
// previous run's last seq in a marker that can land after the first new
// records; a crash cut of the first new record (never flushed: a later
// record landed, no marker claims it) was then refused as damage to flushed
// writes (JournalCorrupt: an operator needed after a plain crash).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, JOURNAL_HEADER_BYTES, RecordType, checkJournalDir } from '../src/dataplane/journal/journal.js';
import { journalFiles } from './helpers/journal.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const RECORD_BYTES = JOURNAL_HEADER_BYTES + BLOCK_BYTES;

test('a crash cut of the first write after a restart (older files destaged and removed, a FLUSH racing it) is cut, not refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-cut-after-restart-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Run 0: seq 1 flushed (chunk 0), seq 2 (chunk 1) written but not flushed; stopped.
  const j0 = Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true });
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  await j0.sync();
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x12));
  await j0.close();
  // Run 1: both chunks were destaged (file 1 goes at open). A FLUSH starts
  // (it will claim seq 2), seqs 3 and 4 are appended before it ends, seq 5
  // after it (carrying its marker).
  const destagedSeq = (_v: number, c: number) => (c === 0 ? 1 : c === 1 ? 2 : 0);
  const j1 = Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq, volumeExists: () => true });
  const flushed = j1.sync();
  const a3 = j1.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x13));
  const a4 = j1.append(RecordType.Write, 1, 2 * MiB + BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x14));
  await Promise.all([flushed, a3, a4]);
  await j1.append(RecordType.Write, 1, 2 * MiB + 2 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x15));
  const head = journalFiles(dir).at(-1)!;
  const bytes = fs.readFileSync(head);
  await j1.close();
  // The crash: seq 3's writev never ran (zeros), everything after it landed.
  const at3 = bytes.indexOf(Buffer.alloc(BLOCK_BYTES, 0x13)) - JOURNAL_HEADER_BYTES;
  assert.ok(at3 >= 0);
  bytes.fill(0, at3, at3 + RECORD_BYTES);
  for (const f of journalFiles(dir)) fs.rmSync(f);
  fs.writeFileSync(head, bytes);
  assert.deepEqual(checkJournalDir(dir).damaged, [], 'a write no FLUSH covered, cut by the crash, is reported as damage');
  const j2 = Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq, volumeExists: () => true });
  t.after(() => j2.close());
  assert.equal(j2.extents(1, 2), undefined, 'the cut dropped seq 3 and the unflushed writes after it');
});
