// Review of 5befc10 (per-file nonces): a file whose first item is damaged (media) and whose last
// append a crash tore. No chain of items reaches the file's exact end then, and the scan took no
// item of the file at all: the whole file was one problem range whose own sync markers
// judgeJournal never saw, so in the last file the open cut it to nothing, flushed writes included,
// with no refusal (and salvage would have emptied it). The search for that chain was also
// quadratic in the file's items (every candidate walked to the tear again).
// Since then the nonce is in the file's name (journal-nonce-in-name): no search for it is left, and
// these cases still hold: every flushed write replays or the open refuses, never the image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { checkJournalDir, JournalCorrupt, JOURNAL_HEADER_BYTES, JOURNAL_MAGIC, RecordType, salvageJournalDir, scanJournalBytes, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, flipBit, journalFiles, MiB, openTestJournal, RECORD_BYTES, nameNonce } from './helpers/journal.js';

/** Every replayed extent of volume 1 (chunk 0), as [seq, first byte]. */
function replayed(j: Journal): [number, number][] {
  return (j.extents(1, 0) ?? []).map((e) => [e.seq, e.data![0]!]);
}

/** Cuts `file` part-way into the payload of its record numbered `seq` (a crash tearing that append); returns where the record starts. */
function tearRecord(file: string, seq: number): number {
  const rec = scanJournalFile(file).records.find((r) => r.rec.seq === seq)!;
  fs.truncateSync(file, rec.posBytes + JOURNAL_HEADER_BYTES + 100);
  return rec.posBytes;
}

for (const [what, damagedAtBytes] of [
  ['its seq', 20],
  ['its magic', 0],
] as const) {
  test(`a rotated file's fence damaged (${what}) and a torn last append: the flushed writes after the fence are replayed, only the torn one cut`, async (t) => {
    const dir = tempDir(t, 'couchestor-review-journal-first-torn-');
    // Three 4 KiB records per file: the fourth write rotates.
    const j = openTestJournal(dir, { fileBytes: 3 * RECORD_BYTES + 100 });
    for (let i = 0; i < 3; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j.sync();
    await j.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, block(3));
    await j.append(RecordType.Write, 1, 4 * BLOCK_BYTES, BLOCK_BYTES, block(4));
    // FLUSH: writes 1-5 acknowledged durable.
    await j.sync();
    await j.append(RecordType.Write, 1, 5 * BLOCK_BYTES, BLOCK_BYTES, block(5));
    await j.close();
    const files = journalFiles(dir);
    assert.equal(files.length, 2);
    const file2 = files[1]!;
    const scan = scanJournalFile(file2);
    assert.equal(scan.fences[0]?.posBytes, 0, "the rotation's fence is file 2's first item");
    assert.deepEqual(
      scan.records.map((r) => r.rec.seq),
      [4, 5, 6],
    );
    // A crash tore write 6 (never flushed), and the fence's bytes are damaged at rest.
    const write6At = tearRecord(file2, 6);
    flipBit(file2, damagedAtBytes);
    const fsck = checkJournalDir(dir);
    assert.deepEqual(fsck.damaged, [], 'fsck: nothing flushed is damaged (the fence held no write)');
    assert.equal(fsck.tornTails, 1);
    // Before: file 2 cut to 0 bytes, writes 4 and 5 (flushed) gone, no refusal.
    const j2 = openTestJournal(dir);
    try {
      assert.deepEqual(replayed(j2), [1, 2, 3, 4, 5].map((seq) => [seq, seq]), 'every flushed write is replayed');
      assert.equal(fs.statSync(file2).size, write6At, 'only the torn write is cut');
    } finally {
      await j2.close();
    }
  });
}

test('the only file: its first item damaged and its last append torn: the open refuses (flushed writes after the damage), salvage keeps them', async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-first-torn-one-');
  // After a destage: the head's first item is the marker written at open.
  const j = openTestJournal(dir, { destagedSeq: () => 1, highestDestagedSeq: 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, block(1));
  await j.sync();
  await j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, block(2));
  await j.close();
  const [file] = journalFiles(dir);
  assert.equal(scanJournalFile(file!).markers[0]?.posBytes, 0);
  tearRecord(file!, 4);
  flipBit(file!, 20);
  // Before: opened, replayed nothing, and cut the file to 0 bytes (writes 2 and 3 flushed).
  assert.throws(
    () => openTestJournal(dir, { destagedSeq: () => 1 }),
    (err: unknown) => err instanceof JournalCorrupt && err.offsetBytes === 0 && err.intactRecordsAfter === 2,
  );
  assert.deepEqual(
    checkJournalDir(dir).damaged.map((d) => [d.offsetBytes, d.lengthBytes]),
    [[0, JOURNAL_HEADER_BYTES]],
    'fsck names the damaged first item, as the open does',
  );
  const salvage = salvageJournalDir(dir);
  assert.equal(salvage.recordsKept, 2);
  const j2 = openTestJournal(dir, { destagedSeq: () => 1 });
  try {
    assert.deepEqual(replayed(j2), [
      [2, 1],
      [3, 2],
    ]);
  } finally {
    await j2.close();
  }
});

test('a damaged first item with a torn tail: the scan is linear in the items (8,000 items scan in well under a second)', async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-first-torn-big-');
  const j = openTestJournal(dir, { destagedSeq: () => 1, highestDestagedSeq: 1 });
  const writes: Promise<void>[] = [];
  // Header-only records (zeroes): many items, few bytes.
  for (let i = 0; i < 8000; i++) writes.push(j.append(RecordType.Zero, 1, (i % 256) * BLOCK_BYTES, BLOCK_BYTES, null));
  await Promise.all(writes);
  await j.sync();
  await j.close();
  const [file] = journalFiles(dir);
  const bytes = fs.readFileSync(file!);
  const nonce = nameNonce(file!);
  // Its magic: the scan resynchronises after it (with the name's nonce) over 8,000 items.
  bytes[0]! ^= 1;
  const torn = bytes.subarray(0, bytes.length - 10);
  const startMs = performance.now();
  const scan = scanJournalBytes(torn, nonce);
  const tookMs = performance.now() - startMs;
  // Before: 22 s here (every record's chain walked to the tear again), and no record found.
  assert.equal(scan.nonce, nonce);
  assert.deepEqual(scan.damaged, [{ offsetBytes: 0, lengthBytes: JOURNAL_HEADER_BYTES }], 'only the first item is damaged');
  assert.equal(scan.records.length, 8000);
  assert.ok(tookMs < 3000, `scan took ${tookMs.toFixed(0)} ms`);
});

/** Where the image's record would write (volume 1, chunk 3): no real write here touches it. */
const IMAGE_OFFSET_BYTES = 3 * MiB;

/** A verifying Write record image numbered 1 (volume 1, 64 bytes of 0xee at 3 MiB) with another file's nonce. */
function seqOneImage(): Buffer {
  const b = Buffer.alloc(JOURNAL_HEADER_BYTES + 64, 0xee);
  b.fill(0, 0, JOURNAL_HEADER_BYTES);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  b.writeUInt8(1, 4);
  b.writeUInt8(RecordType.Write, 5);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(64, 12);
  b.writeUInt32LE(1, 16);
  b.writeUInt32LE(IMAGE_OFFSET_BYTES, 24);
  b.writeUInt32LE(crc32c(b.subarray(JOURNAL_HEADER_BYTES), crc32c(b.subarray(0, 32))), 32);
  b.writeUInt32LE(0x5eed5eed, 36);
  return b;
}

for (const [name, lost] of [
  ['its header never landed (zeros)', { atBytes: 0, lengthBytes: JOURNAL_HEADER_BYTES }],
  ['its header landed, its first payload block did not', { atBytes: JOURNAL_HEADER_BYTES, lengthBytes: BLOCK_BYTES }],
] as const) {
  test(`a new journal's first write torn by a crash before any FLUSH (${name}), carrying an image numbered 1, and a torn tail: nothing replayed, never the image`, async (t) => {
    const dir = tempDir(t, 'couchestor-review-journal-first-torn-image-');
    const j = openTestJournal(dir);
    // Write 1: two blocks, the image in the second (its sector landed).
    const payload = Buffer.alloc(2 * BLOCK_BYTES, 0x22);
    seqOneImage().copy(payload, BLOCK_BYTES + 100);
    await j.append(RecordType.Write, 1, 0, 2 * BLOCK_BYTES, payload);
    await j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, block(2));
    await j.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, block(3));
    await j.close();
    const [file] = journalFiles(dir);
    assert.equal(scanJournalFile(file!).records.length, 3);
    // The power cut: part of write 1 never landed, write 2 did, write 3 only in part.
    const fd = fs.openSync(file!, 'r+');
    fs.writeSync(fd, Buffer.alloc(lost.lengthBytes), 0, lost.lengthBytes, lost.atBytes);
    fs.closeSync(fd);
    tearRecord(file!, 3);
    assert.deepEqual(checkJournalDir(dir).damaged, [], 'a pure crash: nothing flushed is damaged');
    const j2 = openTestJournal(dir);
    try {
      assert.deepEqual(j2.dirtyChunks(1), [], 'no write replayed (none was flushed), the image least of all');
      assert.equal(fs.statSync(file!).size, 0);
    } finally {
      await j2.close();
    }
  });
}
