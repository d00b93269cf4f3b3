// Review of the seq fence (f99b0d4): a sync marker that lands after a crash
// cut, and claims less than the seqs before the cut (a fence's, or an
// intact record's), must still count as cover for the flushed writes it
// claims. The scan passed over such a marker as part of the damaged range,
// so damage to a flushed write it alone covered (in an older file, or
// earlier in the same file) was judged a crash cut and the write silently
// dropped at open.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JournalCorrupt, JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, MiB, RECORD_BYTES, flipBit, journalFiles, openTestJournal } from './helpers/journal.js';

/** Seq's block: every byte 0x40 + seq (the replayed bytes are checked against it). */
function block(seq: number): Buffer {
  return Buffer.alloc(BLOCK_BYTES, 0x40 + seq);
}

/** Zeroes `lengthBytes` at `atBytes` of `file`: a write the crash cut (its writev never ran). */
function zero(file: string, atBytes: number, lengthBytes: number): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(lengthBytes), 0, lengthBytes, atBytes);
  fs.closeSync(fd);
}

/**
 * Writes 1 and 2 flushed by one sync (its FLUSH acknowledged), writes 3 and
 * 4 issued while that sync runs, then write 5, which carries the sync's
 * marker (claim 2) in its writev. With `rotateAtFour`, write 4 starts a new
 * file (fence 3). The files' bytes are copied while every writev has landed
 * (what a process crash leaves in the page cache) into a fresh directory.
 */
async function crashImage(t: TestContext, rotateAtFour: boolean): Promise<{ dir: string; posOf: (seq: number) => { file: string; posBytes: number }; markerAt: { file: string; posBytes: number } }> {
  const live = tempDir(t, 'couchestor-rv-swallow-live-');
  const j = openTestJournal(live, { fileBytes: rotateAtFour ? 3 * RECORD_BYTES : 64 * MiB });
  t.after(() => j.close());
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, block(2));
  const flush = j.sync(); // numbers up to seq 2
  const third = j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, block(3));
  const fourth = j.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, block(4));
  await Promise.all([flush, third, fourth]);
  // The marker (claim 2) is pending: it rides on write 5.
  await j.append(RecordType.Write, 1, 4 * BLOCK_BYTES, BLOCK_BYTES, block(5));
  const dir = tempDir(t, 'couchestor-rv-swallow-crash-');
  for (const f of journalFiles(live)) fs.copyFileSync(f, path.join(dir, path.basename(f)));
  const where = new Map<number, { file: string; posBytes: number }>();
  let markerAt: { file: string; posBytes: number } | null = null;
  for (const f of journalFiles(dir)) {
    const scan = scanJournalFile(f);
    for (const r of scan.records) where.set(r.rec.seq, { file: f, posBytes: r.posBytes });
    for (const m of scan.markers) if (m.syncedSeq === 2) markerAt = { file: f, posBytes: m.posBytes };
    if (rotateAtFour && scan.records[0]?.rec.seq === 4) assert.deepEqual(scan.fences.map((fe) => fe.fenceSeq), [3], 'the rotated file does not start with fence 3');
  }
  assert.equal(where.size, 5);
  assert.ok(markerAt, 'no marker claims write 2');
  assert.equal(markerAt.file, where.get(5)!.file);
  assert.equal(markerAt.posBytes, where.get(5)!.posBytes - JOURNAL_HEADER_BYTES, 'the marker did not ride on write 5');
  assert.equal(where.get(4)!.file, where.get(5)!.file);
  assert.equal(where.get(1)!.file === where.get(4)!.file, !rotateAtFour);
  return { dir, posOf: (seq) => where.get(seq)!, markerAt };
}

for (const rotateAtFour of [true, false]) {
  const where = rotateAtFour ? 'an older file (write 4 began a rotated file)' : 'the same file';
  test(`damage to a flushed write in ${where}, covered only by a marker landed after a crash cut, is refused`, async (t) => {
    const { dir, posOf } = await crashImage(t, rotateAtFour);
    // The crash: write 4's writev never ran; write 5's (with the marker) landed.
    zero(posOf(4).file, posOf(4).posBytes, RECORD_BYTES);
    // Media damage in flushed write 2's payload.
    flipBit(posOf(2).file, posOf(2).posBytes + JOURNAL_HEADER_BYTES + 100);
    assert.equal(checkJournalDir(dir).damaged.length, 1, 'fsck does not report the damage to the flushed write');
    assert.throws(() => openTestJournal(dir), JournalCorrupt);
  });

  test(`the marker is cover also when the crash tore the write it rode on (${where})`, async (t) => {
    const { dir, posOf } = await crashImage(t, rotateAtFour);
    zero(posOf(4).file, posOf(4).posBytes, RECORD_BYTES);
    // Write 5's writev landed only its first page: the marker and part of the record.
    zero(posOf(5).file, posOf(5).posBytes + 1000, RECORD_BYTES - 1000);
    flipBit(posOf(2).file, posOf(2).posBytes + JOURNAL_HEADER_BYTES + 100);
    assert.equal(checkJournalDir(dir).damaged.length, 1, 'fsck does not report the damage to the flushed write');
    assert.throws(() => openTestJournal(dir), JournalCorrupt);
  });

  test(`the same crash cut with no damage opens, keeps writes 1-3 and cuts at write 4 (${where})`, async (t) => {
    const { dir, posOf } = await crashImage(t, rotateAtFour);
    zero(posOf(4).file, posOf(4).posBytes, RECORD_BYTES);
    assert.deepEqual(checkJournalDir(dir).damaged, []);
    const j = openTestJournal(dir);
    t.after(() => j.close());
    assert.equal(j.failed, null);
    assert.deepEqual(
      j.extents(1, 0)!.map((e) => [e.seq, e.data![0]]),
      [1, 2, 3].map((s) => [s, 0x40 + s]),
    );
    assert.equal(fs.statSync(posOf(4).file).size, posOf(4).posBytes, 'not cut where write 4 began');
  });
}
