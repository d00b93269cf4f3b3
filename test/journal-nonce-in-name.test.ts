// A journal file's nonce is in its name (journal-<no>-<nonce hex>.log), so a scan knows it without
// reading any item: damage to a file's first items, or a torn first write whose payload holds an
// image of a journal item, never leaves it guessing. The cases here are the ones the scan's
// heuristics (the nonce read from the first item, else from a chain of items reaching the file's
// end) got wrong: the whole file taken for one problem range (a silent cut in the last file, its
// flushed writes lost), or an image ending at the file's end taken for an item and replayed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { checkJournalDir, JournalCorrupt, JournalDuplicateFile, JOURNAL_HEADER_BYTES, JOURNAL_MAGIC, RecordType, salvageJournalDir, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, journalFiles, MiB, nameNonce, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

/** Every replayed extent of volume 1 (chunks 0-3), as [seq, first byte]. */
function replayed(j: Journal): [number, number][] {
  return [0, 1, 2, 3].flatMap((c) => (j.extents(1, c) ?? []).map((e) => [e.seq, e.data![0]!] as [number, number]));
}

/** Cuts `file` part-way into the payload of its record numbered `seq` (a crash tearing that append). */
function tearRecord(file: string, seq: number): void {
  const rec = scanJournalFile(file).records.find((r) => r.rec.seq === seq)!;
  fs.truncateSync(file, rec.posBytes + JOURNAL_HEADER_BYTES + 100);
}

/** Overwrites `bytes` at `atBytes` of `file` (media damage at rest, or a write the crash left half done). */
function overwrite(file: string, atBytes: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, bytes, 0, bytes.length, atBytes);
  fs.closeSync(fd);
}

test("a file made by the journal carries a random nonce in its name, the one in its items' bytes 36-39", async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-name-');
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES });
  for (let i = 0; i < 4; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
  await j.sync();
  await j.close();
  const files = journalFiles(dir);
  assert.ok(files.length >= 2, 'a rotation was made');
  const nonces = files.map((f) => nameNonce(f));
  for (const [i, f] of files.entries()) {
    assert.match(path.basename(f), /^journal-\d{10}-[0-9a-f]{8}\.log$/);
    assert.ok(nonces[i] !== null && nonces[i] !== 0, `${f}: no nonce in its name`);
    const bytes = fs.readFileSync(f);
    const scan = scanJournalFile(f);
    const items = [...scan.records.map((r) => r.posBytes), ...scan.markers.map((m) => m.posBytes)];
    assert.ok(items.length > 0);
    for (const pos of items) assert.equal(bytes.readUInt32LE(pos + 36), nonces[i], `${f}: the item at ${pos} carries another nonce`);
  }
  assert.equal(new Set(nonces).size, nonces.length, 'each file its own nonce');
});

test("the first record's length field damaged and the last append torn: the open refuses (flushed writes after it), never a silent cut; salvage keeps them", async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-length-');
  // A new journal: its first item is write 1 (no marker at open: nothing numbered yet).
  const j = openTestJournal(dir);
  for (let i = 0; i < 3; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
  // FLUSH: writes 1-3 acknowledged durable.
  await j.sync();
  await j.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, block(3));
  await j.close();
  const [file] = journalFiles(dir);
  assert.equal(scanJournalFile(file!).records[0]?.posBytes, 0, 'write 1 is the first item');
  // A crash tore write 4 (never flushed); media damage to write 1's length field (its header now
  // says it ends elsewhere: the heuristics found no item there and no chain to the file's end,
  // took no item of the file, and cut it to nothing with writes 2 and 3 in it).
  tearRecord(file!, 4);
  overwrite(file!, 12, Buffer.from([0x00, 0x20, 0x00, 0x00]));
  const lengthBytes = fs.statSync(file!).size;
  assert.throws(
    () => openTestJournal(dir),
    (err: unknown) => err instanceof JournalCorrupt && err.offsetBytes === 0 && err.intactRecordsAfter === 2,
    'damage to flushed write 1 with flushed writes 2 and 3 after it must refuse the open',
  );
  assert.equal(fs.statSync(file!).size, lengthBytes, 'the refused open changed nothing');
  assert.deepEqual(
    checkJournalDir(dir).damaged.map((d) => [d.offsetBytes, d.lengthBytes, d.intactRecordsAfter]),
    [[0, RECORD_BYTES, 2]],
    'fsck names write 1, as the open does',
  );
  const salvage = salvageJournalDir(dir);
  assert.equal(salvage.recordsKept, 2);
  const j2 = openTestJournal(dir);
  try {
    assert.deepEqual(replayed(j2), [
      [2, 2],
      [3, 3],
    ]);
  } finally {
    await j2.close();
  }
});

test('the first items damaged (the fence, the marker after it and write 4) and the last append torn: the open refuses (a flushed write after them), never a silent cut', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-two-');
  // Three 4 KiB records per file: write 4 rotates into file 2 (its fence first).
  const j = openTestJournal(dir, { fileBytes: 3 * RECORD_BYTES + 100 });
  for (let i = 0; i < 3; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
  await j.sync();
  for (let i = 3; i < 5; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
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
  const write4 = scan.records[0]!;
  // Items 1 and 2 are the fence and the first FLUSH's marker (it rode on write 4), write 4 the third:
  // damage the fence's magic and the marker and write 4 (one sector's worth at the file's start).
  assert.equal(write4.posBytes, 2 * JOURNAL_HEADER_BYTES);
  // Write 6 torn by a crash (never flushed).
  tearRecord(file2, 6);
  overwrite(file2, 0, Buffer.alloc(write4.posBytes + 64, 0xa5));
  assert.throws(
    () => openTestJournal(dir),
    (err: unknown) => err instanceof JournalCorrupt && err.file === file2 && err.offsetBytes === 0 && err.intactRecordsAfter === 1,
    'write 4 (flushed) is damaged and write 5 (flushed) follows: refused',
  );
  const salvage = salvageJournalDir(dir);
  assert.deepEqual(
    salvage.dropped.map((d) => [path.basename(d.file), d.offsetBytes, d.lengthBytes]),
    [[path.basename(file2), 0, write4.posBytes + RECORD_BYTES]],
    'salvage drops the fence, the marker and write 4, nothing else',
  );
  const j2 = openTestJournal(dir);
  try {
    assert.deepEqual(
      replayed(j2),
      [1, 2, 3, 5].map((seq) => [seq, seq]),
      'every flushed write but the damaged one is replayed',
    );
  } finally {
    await j2.close();
  }
});

test("the first and second items damaged (the open's marker and a zero write, zeroed) and the last append torn: the open refuses, salvage keeps the flushed writes after them", async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-two-destaged-');
  // After a destage: the head's first item is the marker written at open (claiming seq 1).
  const j = openTestJournal(dir, { destagedSeq: () => 1, highestDestagedSeq: 1 });
  // Write 2 (a Zero: header only), then writes 3 and 4, flushed; write 5 torn.
  await j.append(RecordType.Zero, 1, 0, BLOCK_BYTES, null);
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, block(2));
  await j.sync();
  await j.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, block(3));
  await j.close();
  const [file] = journalFiles(dir);
  const scan = scanJournalFile(file!);
  assert.equal(scan.markers[0]?.posBytes, 0);
  assert.equal(scan.records[0]?.posBytes, JOURNAL_HEADER_BYTES, 'write 2 is the second item');
  tearRecord(file!, 5);
  // Both headers zeroed (a zeroed sector at rest).
  overwrite(file!, 0, Buffer.alloc(2 * JOURNAL_HEADER_BYTES));
  assert.throws(
    () => openTestJournal(dir, { destagedSeq: () => 1 }),
    (err: unknown) => err instanceof JournalCorrupt && err.offsetBytes === 0 && err.intactRecordsAfter === 2,
  );
  salvageJournalDir(dir);
  const j2 = openTestJournal(dir, { destagedSeq: () => 1 });
  try {
    assert.deepEqual(replayed(j2), [
      [3, 2],
      [4, 3],
    ]);
  } finally {
    await j2.close();
  }
});

/** A verifying Write record image (volume 1, `payloadBytes` of 0xee at 3 MiB) numbered `seq`, with nonce `nonce`. */
function recordImage(seq: number, payloadBytes: number, nonce: number): Buffer {
  const b = Buffer.alloc(JOURNAL_HEADER_BYTES + payloadBytes, 0xee);
  b.fill(0, 0, JOURNAL_HEADER_BYTES);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  b.writeUInt8(1, 4);
  b.writeUInt8(RecordType.Write, 5);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(payloadBytes, 12);
  b.writeUInt32LE(seq, 16);
  b.writeUInt32LE(3 * MiB, 24);
  b.writeUInt32LE(crc32c(b.subarray(JOURNAL_HEADER_BYTES), crc32c(b.subarray(0, 32))), 32);
  b.writeUInt32LE(nonce, 36);
  return b;
}

for (const [name, nonce] of [
  ["another node's nonce", 0x5eed5eed],
  ['no nonce (a build before nonces)', 0],
] as const) {
  test(`a torn first write whose payload holds an image (${name}) ending exactly where the crash cut the file: never replayed, the file cut to nothing`, async (t) => {
    const dir = tempDir(t, 'couchestor-journal-nonce-image-eof-');
    const j = openTestJournal(dir);
    const image = recordImage(1, 64, nonce);
    const imageAtBytes = BLOCK_BYTES + 100;
    const payload = Buffer.alloc(2 * BLOCK_BYTES, 0x22);
    image.copy(payload, imageAtBytes);
    await j.append(RecordType.Write, 1, 0, 2 * BLOCK_BYTES, payload);
    await j.close();
    const [file] = journalFiles(dir);
    assert.equal(scanJournalFile(file!).records.length, 1);
    // The power cut: write 1 (never flushed) landed up to the image's last byte, the rest never did.
    fs.truncateSync(file!, JOURNAL_HEADER_BYTES + imageAtBytes + image.length);
    // The heuristics took the image's chain (it reaches the file's exact end) for the file's items.
    assert.deepEqual(scanJournalFile(file!).records, [], 'the image is not taken for an item');
    assert.deepEqual(checkJournalDir(dir).damaged, [], 'a pure crash: nothing flushed is damaged');
    const j2 = openTestJournal(dir);
    try {
      assert.deepEqual(replayed(j2), [], 'nothing replayed, the image least of all');
      assert.equal(fs.statSync(file!).size, 0, 'the torn write is cut');
    } finally {
      await j2.close();
    }
  });
}

test('two journal files numbered alike (a copy by hand): the open refuses, naming both, and changes nothing', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-nonce-duplicate-');
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.sync();
  await j.close();
  const [file] = journalFiles(dir);
  const copy = path.join(dir, 'journal-0000000001.log');
  fs.copyFileSync(file!, copy);
  const before = fs.readdirSync(dir).sort();
  assert.throws(
    () => openTestJournal(dir),
    (err: unknown) => err instanceof JournalDuplicateFile && err.message.includes(path.basename(file!)) && err.message.includes('journal-0000000001.log'),
  );
  assert.throws(() => checkJournalDir(dir), JournalDuplicateFile, 'fsck refuses likewise');
  assert.deepEqual(fs.readdirSync(dir).sort(), before, 'no head file made');
});
