// Review of 7838103 (sync markers): the marker that covers the flushed records
// of a journal file often lives in the next file (it rides on the next append,
// which may be the one that rotates). When that next file is destaged and
// removed first, the older file's flushed records must stay covered: damage to
// one of them (media, at rest) must still be refused, never cut as a crash cut
// (which truncates the flushed records after it too, silently).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, JournalCorrupt, JOURNAL_HEADER_BYTES, RecordType } from '../src/dataplane/journal/journal.js';
import { flipBit, journalFiles } from './helpers/journal.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const RECORD_BYTES = JOURNAL_HEADER_BYTES + BLOCK_BYTES;
/** Three records per file. */
const FILE_BYTES = 3 * RECORD_BYTES;

/** fs.rm of a removed journal file runs in the background (no event says when): waits for it, bounded. */
async function waitGone(file: string): Promise<void> {
  for (const deadlineMs = Date.now() + 5000; fs.existsSync(file); ) {
    assert.ok(Date.now() < deadlineMs, `${file} was not removed`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Damages the flushed record 2 of 3 in the first file and opens the journal:
 * refusing is right, cutting is not (records 2 and 3 were flushed).
 */
function assertFlushedDamageNotCut(dir: string, first: string, destagedSeq: (volumeId: number, chunkIndex: number) => number): void {
  flipBit(first, RECORD_BYTES + JOURNAL_HEADER_BYTES + 11);
  const before = fs.readFileSync(first);
  let replayedBlocks: number[] | null = null;
  try {
    const j = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, destagedSeq, volumeExists: () => true });
    replayedBlocks = (j.extents(1, 0) ?? []).map((e) => e.offsetBytes / BLOCK_BYTES);
    void j.close();
  } catch (err) {
    assert.ok(err instanceof JournalCorrupt, `unexpected ${String(err)}`);
  }
  assert.ok(fs.readFileSync(first).equals(before), `the file holding flushed records 2 and 3 was cut (now ${fs.statSync(first).size} of ${before.length} bytes); replayed blocks ${JSON.stringify(replayedBlocks)}`);
}

test('flushed records whose sync marker sat in a later file that was destaged and removed (same run): damage to them is refused, not cut', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-marker-removed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const j = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, destagedSeq: () => 0, volumeExists: () => true });
  // Seqs 1-3: chunk 0, fill file 1, flushed. The sync's marker is pending.
  for (let i = 0; i < 3; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j.sync();
  // Seqs 4-5: chunk 1. Seq 4 rotates to file 2 and carries the marker (claims 3) ahead of it.
  for (let i = 0; i < 2; i++) await j.append(RecordType.Write, 1, MiB + i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x20 + i));
  // Seq 6: chunk 2, rotates to file 3 (no sync since: no marker in file 3).
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x30));
  const files = journalFiles(dir);
  assert.equal(files.length, 3);
  // Chunk 1 destaged: file 2 (holding the only marker) has no live record left and goes.
  j.release(1, 1, 5);
  await j.close();
  await waitGone(files[1]!);
  assertFlushedDamageNotCut(dir, files[0]!, () => 0);
});

test('flushed records whose sync marker sat in a later file removed at open (destaged before the restart): damage after the next stop is refused, not cut', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-marker-removed-open-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const j0 = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, destagedSeq: () => 0, volumeExists: () => true });
  for (let i = 0; i < 3; i++) await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j0.sync();
  // Seq 4 (chunk 1) rotates to file 2 with the marker claiming 3; closed with no further sync.
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x20));
  await j0.close();
  const files = journalFiles(dir);
  assert.equal(files.length, 2);
  // Restart with chunk 1 destaged (its stripe holds seq 4): file 2 goes at open; a clean stop with no FLUSH.
  const destagedSeq = (_v: number, c: number) => (c === 1 ? 4 : 0);
  const j1 = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, destagedSeq, volumeExists: () => true });
  await j1.close();
  await waitGone(files[1]!);
  assertFlushedDamageNotCut(dir, files[0]!, destagedSeq);
});
