// A client payload holding byte-exact images of journal items (a guest writing a journal file: a
// VM image of another CoucheStor node, or of an older build's) is never taken for an item when a
// scan resynchronises after damage or a torn write (note7's known gap). Before per-file nonces,
// the scan searched the bytes after a damaged header for the next item that verified and numbered
// above the last intact one, so an image inside the damaged record's own payload was replayed in
// its place: with damage to a flushed write the open succeeded and served the image's bytes (the
// write lost with no refusal), and a crash cutting such a write replayed bytes never written as
// records. The images here are real: a record copied from another journal's file, and one built
// as a build before nonces wrote it (zeros where the nonce goes).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { JournalCorrupt, JOURNAL_HEADER_BYTES, JOURNAL_MAGIC, RecordType, salvageJournalDir, scanJournalBytes, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, flipBit, journalFiles, MiB, nameNonce, openTestJournal } from './helpers/journal.js';

const IMAGE_PAYLOAD_BYTES = 1024;
/** What the images would write: never in a replayed extent. */
const EVIL = 0xee;
/** Where the image's record would write (volume 1): a range no real write here touches. */
const IMAGE_OFFSET_BYTES = 3 * MiB;
/** Where the image lies inside the carrying write's payload. */
const IMAGE_AT_BYTES = 100;

/** A seq-2 Write record of volume 1 as another node's journal wrote it, read from that journal's file. */
async function otherNodeImage(t: TestContext): Promise<Buffer> {
  const dir = tempDir(t, 'couchestor-journal-images-other-');
  const other = openTestJournal(dir);
  await other.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 1));
  await other.append(RecordType.Write, 1, IMAGE_OFFSET_BYTES, IMAGE_PAYLOAD_BYTES, Buffer.alloc(IMAGE_PAYLOAD_BYTES, EVIL));
  await other.close();
  const file = journalFiles(dir)[0]!;
  const bytes = fs.readFileSync(file);
  const rec = scanJournalBytes(bytes, nameNonce(file)).records.find((r) => r.rec.seq === 2)!;
  return Buffer.from(bytes.subarray(rec.posBytes, rec.posBytes + rec.rec.recordBytes));
}

/** The same record as a build before nonces wrote it: zeros at bytes 36-39, same CRC rule. */
function preNonceImage(): Buffer {
  const b = Buffer.alloc(JOURNAL_HEADER_BYTES + IMAGE_PAYLOAD_BYTES, EVIL);
  b.fill(0, 0, JOURNAL_HEADER_BYTES);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  b.writeUInt8(1, 4);
  b.writeUInt8(RecordType.Write, 5);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(IMAGE_PAYLOAD_BYTES, 12);
  b.writeUInt32LE(2, 16);
  b.writeUInt32LE(IMAGE_OFFSET_BYTES, 24);
  b.writeUInt32LE(crc32c(b.subarray(JOURNAL_HEADER_BYTES), crc32c(b.subarray(0, 32))), 32);
  return b;
}

/** Write 2's payload: a guest's block holding `image` at IMAGE_AT_BYTES. */
function carrier(image: Buffer): Buffer {
  const b = Buffer.alloc(2 * BLOCK_BYTES, 0x22);
  image.copy(b, IMAGE_AT_BYTES);
  return b;
}

/** Every replayed extent of volume 1, as [seq, offset, first byte]. */
function replayed(j: Journal): [number, number, number | null][] {
  return [0, 1, 2, 3].flatMap((c) => (j.extents(1, c) ?? []).map((e) => [e.seq, e.offsetBytes, e.data ? e.data[0]! : null] as [number, number, number | null]));
}

for (const [name, makeImage] of [
  ['another node', otherNodeImage],
  ['a build before nonces', async () => preNonceImage()],
] as const) {
  test(`damage to a flushed write carrying an image of ${name}'s record: refused, and salvage keeps the real records, never the image`, async (t) => {
    const dir = tempDir(t, 'couchestor-journal-images-damage-');
    const image = await makeImage(t);
    const j = openTestJournal(dir);
    await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
    await j.sync();
    await j.append(RecordType.Write, 1, MiB, 2 * BLOCK_BYTES, carrier(image));
    await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33));
    await j.sync();
    // close writes the last FLUSH's marker: every write here is claimed durable.
    await j.close();
    const [file] = journalFiles(dir);
    const write2 = scanJournalFile(file!).records.find((r) => r.rec.seq === 2)!;
    // Media damage to write 2's header (its seq): its CRC fails.
    flipBit(file!, write2.posBytes + 16);
    // Without nonces: the image (seq 2, right after write 1) passed for write 2, the open
    // succeeded and replayed EVIL at 3 MiB in place of write 2.
    assert.throws(() => openTestJournal(dir), (err: unknown) => err instanceof JournalCorrupt && err.offsetBytes === write2.posBytes, 'damage to a flushed write must make the open refuse');
    const salvage = salvageJournalDir(dir);
    assert.deepEqual(
      salvage.dropped.map((d) => [d.offsetBytes, d.lengthBytes]),
      [[write2.posBytes, write2.rec.recordBytes]],
      'salvage drops exactly write 2 (the image inside it with it)',
    );
    const j2 = openTestJournal(dir);
    t.after(() => j2.close());
    assert.deepEqual(replayed(j2), [
      [1, 0, 0x11],
      [3, 2 * MiB, 0x33],
    ]);
  });

  test(`a crash cutting a write that carries an image of ${name}'s record: the cut write is dropped, the image never replayed`, async (t) => {
    const dir = tempDir(t, 'couchestor-journal-images-cut-');
    const image = await makeImage(t);
    const j = openTestJournal(dir);
    await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
    await j.sync();
    await j.append(RecordType.Write, 1, MiB, 2 * BLOCK_BYTES, carrier(image));
    await j.close();
    const [file] = journalFiles(dir);
    const write2 = scanJournalFile(file!).records.find((r) => r.rec.seq === 2)!;
    // The power cut: write 2 (never flushed) landed up to just past the image, the rest never did.
    fs.truncateSync(file!, write2.posBytes + JOURNAL_HEADER_BYTES + IMAGE_AT_BYTES + image.length + 7);
    const j2 = openTestJournal(dir);
    t.after(() => j2.close());
    // Without nonces: [2, 3 MiB, EVIL] replayed, bytes no client wrote as a record.
    assert.deepEqual(replayed(j2), [[1, 0, 0x11]]);
    assert.equal(fs.statSync(file!).size, write2.posBytes, 'the torn write is cut where it starts');
  });
}

test("a file whose first item is damaged: its nonce is its name's, and its real records are all found, never the image", async (t) => {
  const dir = tempDir(t, 'couchestor-journal-images-first-');
  const image = await otherNodeImage(t);
  const j0 = openTestJournal(dir);
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j0.sync();
  await j0.close();
  // A second start: its head file's first item is the marker written at open.
  const j = openTestJournal(dir, { destagedSeq: () => 1, highestDestagedSeq: 1 });
  await j.append(RecordType.Write, 1, MiB, 2 * BLOCK_BYTES, carrier(image));
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33));
  await j.sync();
  await j.close();
  const file = journalFiles(dir).at(-1)!;
  const scan = scanJournalFile(file);
  assert.equal(scan.markers[0]?.posBytes, 0, "the open's marker is the file's first item");
  assert.notEqual(scan.nonce, 0);
  assert.equal(scan.nonce, nameNonce(file), "the items carry the name's nonce");
  // Media damage to that first item.
  flipBit(file, 20);
  const damaged = scanJournalFile(file);
  assert.equal(damaged.nonce, scan.nonce, "the nonce is still the name's");
  assert.deepEqual(
    damaged.records.map((r) => r.rec.seq),
    scan.records.map((r) => r.rec.seq),
    'the real records are found, the image is not',
  );
  assert.deepEqual(damaged.damaged, [{ offsetBytes: 0, lengthBytes: JOURNAL_HEADER_BYTES }]);
});

test('a journal written before nonces (zeros at bytes 36-39 of every item) still opens, replays, and is carried on by nonce files', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-images-legacy-');
  const j0 = openTestJournal(dir);
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j0.sync();
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  await j0.sync();
  await j0.close();
  // Made into what the previous build wrote: named without a nonce, and zeros where items carry
  // it (outside the CRC, so zeroing it is all).
  const [named] = journalFiles(dir);
  const file1 = path.join(dir, 'journal-0000000001.log');
  fs.renameSync(named!, file1);
  const bytes = fs.readFileSync(file1);
  const scan = scanJournalBytes(bytes, nameNonce(named!));
  for (const pos of [...scan.records.map((r) => r.posBytes), ...scan.markers.map((m) => m.posBytes)]) bytes.fill(0, pos + 36, pos + 40);
  fs.writeFileSync(file1, bytes);
  assert.equal(nameNonce(file1), null, 'named as before nonces');
  assert.equal(scanJournalFile(file1).nonce, 0);
  assert.equal(scanJournalFile(file1).records.length, 2);
  const j = openTestJournal(dir);
  assert.deepEqual(replayed(j), [
    [1, 0, 0x10],
    [2, MiB, 0x11],
  ]);
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x12));
  await j.sync();
  await j.close();
  const head = journalFiles(dir).at(-1)!;
  assert.notEqual(scanJournalFile(head).nonce, 0, 'a file this build makes carries a nonce');
  assert.equal(scanJournalFile(head).nonce, nameNonce(head), 'in its name');
  assert.ok(fs.existsSync(file1), 'the file named before nonces keeps its name');
  const j2 = openTestJournal(dir);
  t.after(() => j2.close());
  assert.deepEqual(replayed(j2), [
    [1, 0, 0x10],
    [2, MiB, 0x11],
    [3, 2 * MiB, 0x12],
  ]);
});

test('a journal file named before nonces whose items carry one (the build between nonces in items and in names) opens and replays', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-images-legacy-name-');
  const j0 = openTestJournal(dir);
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  await j0.sync();
  await j0.close();
  const [named] = journalFiles(dir);
  const nonce = nameNonce(named!);
  const file1 = path.join(dir, 'journal-0000000001.log');
  fs.renameSync(named!, file1);
  assert.equal(scanJournalFile(file1).nonce, nonce, "its first item's nonce");
  const j = openTestJournal(dir);
  t.after(() => j.close());
  assert.deepEqual(replayed(j), [
    [1, 0, 0x10],
    [2, MiB, 0x11],
  ]);
});
