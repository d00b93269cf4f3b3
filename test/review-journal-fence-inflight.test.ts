// Review of f99b0d4 and 1dbb120 (found nothing; pinned): a rotation's seq
// fence is true with appends in flight (numbered, writev not landed) when
// it is written, and a short writev split anywhere (inside the riding
// marker, inside the header, on a buffer boundary, in the payload) is
// finished at the right offset while other appends to the file land.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, journalFiles, openTestJournal } from './helpers/journal.js';

test('every rotated file starts with a fence above every seq in older files, below every seq in it, with 64 appends in flight', async (t) => {
  const dir = tempDir(t, 'couchestor-rv-fence-inflight-');
  const j = openTestJournal(dir, { fileBytes: 3 * RECORD_BYTES });
  const appends: Promise<void>[] = [];
  // None awaited before the next is numbered: each rotation happens with the older file's writevs still in flight.
  for (let i = 0; i < 64; i++) {
    appends.push(j.append(RecordType.Write, 1, (i % 256) * BLOCK_BYTES, BLOCK_BYTES, block(i)));
    if (i % 5 === 0) void j.sync();
  }
  await Promise.all(appends);
  await j.sync();
  await j.close();
  const files = journalFiles(dir, { nonEmpty: true });
  assert.ok(files.length >= 20, `only ${files.length} files: the rotations were not exercised`);
  let highestBefore = 0;
  const seen = new Set<number>();
  for (const [i, f] of files.entries()) {
    const scan = scanJournalFile(f);
    assert.deepEqual(scan.damaged, []);
    assert.equal(scan.endBytes, scan.lengthBytes);
    if (i > 0) {
      assert.equal(scan.fences.length, 1, `${path.basename(f)} has no fence`);
      assert.equal(scan.fences[0]!.posBytes, 0, 'the fence is not the first item');
      assert.equal(scan.fences[0]!.fenceSeq, highestBefore, `${path.basename(f)}: fence ${scan.fences[0]!.fenceSeq}, highest seq in older files ${highestBefore}`);
    }
    for (const r of scan.records) {
      assert.ok(r.rec.seq > highestBefore, `seq ${r.rec.seq} in ${path.basename(f)} is not above the older files' ${highestBefore}`);
      seen.add(r.rec.seq);
    }
    highestBefore = Math.max(highestBefore, ...scan.records.map((r) => r.rec.seq));
  }
  assert.equal(seen.size, 64);
  assert.deepEqual(checkJournalDir(dir).damaged, []);
});

for (const splitAtBytes of [20, 40, 60, 80, 1000, RECORD_BYTES]) {
  test(`a writev (marker + header + payload) split after ${splitAtBytes} bytes is finished in place while other appends land`, async (t) => {
    const dir = tempDir(t, 'couchestor-rv-split-');
    const open = () => openTestJournal(dir);
    const j = open();
    await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
    await j.sync(); // its marker rides on the next append
    const realWritev = fs.writev;
    t.after(() => {
      fs.writev = realWritev;
    });
    let split: { askedBytes: number; writtenBytes: number } | null = null;
    // The next writev lands only its first splitAtBytes bytes, for real, and reports that count as success (libuv's short count).
    fs.writev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView[]) => void) => {
      fs.writev = realWritev;
      const all = Buffer.concat(bufs.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
      realWritev(fd, [all.subarray(0, splitAtBytes)], pos, (err, n) => {
        split = { askedBytes: all.length, writtenBytes: n };
        // Other appends to the same file are issued before the retry.
        for (let i = 2; i < 6; i++) void j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
        cb(err, n, bufs);
      });
    }) as typeof fs.writev;
    await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, block(1));
    await j.sync();
    assert.deepEqual(split, { askedBytes: JOURNAL_HEADER_BYTES * 2 + BLOCK_BYTES, writtenBytes: splitAtBytes });
    assert.equal(j.failed, null);
    await j.close();
    assert.deepEqual(checkJournalDir(dir).damaged, []);
    const j2 = open();
    t.after(() => j2.close());
    assert.deepEqual(
      (j2.extents(1, 0) ?? []).map((e) => [e.seq, e.offsetBytes, e.data!.equals(block(e.offsetBytes / BLOCK_BYTES))]),
      [0, 1, 2, 3, 4, 5].map((i) => [i + 1, i * BLOCK_BYTES, true]),
    );
  });
}
