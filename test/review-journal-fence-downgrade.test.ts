// Review of f99b0d4: a build from before the seq fence (a rollback after a
// crash) must read a journal this build wrote without losing flushed
// writes. A type-4 fence is a damaged 40-byte range to it; in a rotated
// file whose older files are destaged and removed, with no later marker
// (the last FLUSH's marker not landed: a crash within 50 ms), that build
// judged the range a crash cut and truncated the whole file, flushed writes
// included. The fence now rides in a sync marker (type 3, which every
// build since markers parses; its claim is the last sync's, true), in a
// field older builds do not read, so they see no damage at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { JOURNAL_HEADER_BYTES, JOURNAL_MAGIC, RecordType, scanJournalBytes, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, MiB, RECORD_BYTES, block, journalFiles, openTestJournal, nameNonce, journalFile } from './helpers/journal.js';

/**
 * The items of a journal file as a build from before the fence parses them
 * (format version 1: write and zero records, type-3 sync markers), or the
 * offset of the first bytes it cannot parse.
 */
function preFenceItems(bytes: Buffer): { items: { posBytes: number; type: number; seq: number }[]; unparsedAtBytes: number | null } {
  const items: { posBytes: number; type: number; seq: number }[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (pos + JOURNAL_HEADER_BYTES > bytes.length || bytes.readUInt32LE(pos) !== JOURNAL_MAGIC || bytes.readUInt8(pos + 4) !== 1) return { items, unparsedAtBytes: pos };
    const type = bytes.readUInt8(pos + 5);
    const payloadBytes = type === 1 ? bytes.readUInt32LE(pos + 12) : 0;
    if ((type !== 1 && type !== 2 && type !== 3) || pos + JOURNAL_HEADER_BYTES + payloadBytes > bytes.length) return { items, unparsedAtBytes: pos };
    let crc = crc32c(bytes.subarray(pos, pos + 32));
    if (payloadBytes) crc = crc32c(bytes.subarray(pos + JOURNAL_HEADER_BYTES, pos + JOURNAL_HEADER_BYTES + payloadBytes), crc);
    if (crc !== bytes.readUInt32LE(pos + 32)) return { items, unparsedAtBytes: pos };
    items.push({ posBytes: pos, type, seq: bytes.readUInt32LE(pos + 16) + bytes.readUInt32LE(pos + 20) * 0x100000000 });
    pos += JOURNAL_HEADER_BYTES + payloadBytes;
  }
  return { items, unparsedAtBytes: null };
}

test('every journal file this build writes, rotated ones included, parses whole for a build from before the fence', async (t) => {
  const dir = tempDir(t, 'couchestor-rv-fence-downgrade-');
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES });
  let flushed = 0;
  for (let i = 0; i < 12; i++) {
    await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    if (i % 3 === 1) {
      await j.sync();
      flushed = i + 1;
    }
  }
  await j.close();
  assert.equal(flushed, 11);
  const files = journalFiles(dir, { nonEmpty: true });
  assert.ok(files.length >= 5, 'the rotations were not exercised');
  let highestBefore = 0;
  for (const [i, f] of files.entries()) {
    const bytes = fs.readFileSync(f);
    const old = preFenceItems(bytes);
    assert.equal(old.unparsedAtBytes, null, `${path.basename(f)}: a pre-fence build cannot parse the bytes at ${old.unparsedAtBytes}`);
    const scan = scanJournalBytes(bytes, nameNonce(f));
    if (i > 0) {
      // This build still reads the fence from it.
      assert.deepEqual(scan.fences.map((fe) => [fe.posBytes, fe.fenceSeq]), [[0, highestBefore]]);
      // What an older build reads there: a marker whose claim is true (no more than the writes flushed before the rotation).
      const first = old.items[0]!;
      assert.equal(first.type, 3);
      assert.ok(first.seq <= highestBefore, `the fence's claim ${first.seq} is above every write before it (${highestBefore})`);
    }
    highestBefore = Math.max(highestBefore, ...scan.records.map((r) => r.rec.seq));
  }
});

test('a rotated file with its older files removed and the last FLUSH\'s marker not landed replays its flushed writes', async (t) => {
  const live = tempDir(t, 'couchestor-rv-fence-downgrade-live-');
  const j = openTestJournal(live, { fileBytes: 2 * RECORD_BYTES });
  t.after(() => j.close());
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x31));
  await j.sync();
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x32));
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33)); // seq 3 begins file 2
  await j.sync(); // acknowledged; its marker waits for an append or 50 ms
  const dir = tempDir(t, 'couchestor-rv-fence-downgrade-crash-');
  const file2 = journalFile(live, 2);
  fs.copyFileSync(file2, path.join(dir, path.basename(file2)));
  // File 1 (seqs 1 and 2, destaged) is gone; file 2 holds the fence and seq 3, no marker after it.
  const bytes = fs.readFileSync(path.join(dir, path.basename(file2)));
  const scan = scanJournalBytes(bytes, nameNonce(file2));
  assert.deepEqual(scan.records.map((r) => r.rec.seq), [3]);
  assert.equal(scan.markers.filter((m) => m.posBytes > scan.records[0]!.posBytes).length, 0);
  assert.equal(preFenceItems(bytes).unparsedAtBytes, null, 'a pre-fence build would judge the fence damage and cut the flushed write');
  const j2 = openTestJournal(dir, { destagedSeq: (_v, c) => (c === 0 ? 2 : 0), highestDestagedSeq: 2 });
  t.after(() => j2.close());
  assert.deepEqual(j2.extents(1, 2)?.map((e) => [e.seq, e.data![0]]), [[3, 0x33]]);
});

test('salvage of a rotated file keeps its fence once, and the file opens with its intact writes', async (t) => {
  const dir = tempDir(t, 'couchestor-rv-fence-salvage-');
  const j = openTestJournal(dir, { fileBytes: 3 * RECORD_BYTES });
  for (let i = 0; i < 5; i++) {
    await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j.sync();
  }
  await j.close();
  const file2 = journalFile(dir, 2);
  const before = scanJournalFile(file2);
  const fenceSeq = Math.max(...scanJournalFile(journalFile(dir, 1)).records.map((r) => r.rec.seq));
  assert.deepEqual(before.fences.map((fe) => [fe.posBytes, fe.fenceSeq]), [[0, fenceSeq]]);
  const damagedSeq = before.records[0]!;
  assert.equal(damagedSeq.rec.seq, fenceSeq + 1);
  const fd = fs.openSync(file2, 'r+');
  fs.writeSync(fd, Buffer.from([0xee]), 0, 1, damagedSeq.posBytes + JOURNAL_HEADER_BYTES + 9);
  fs.closeSync(fd);
  const { salvageJournalDir } = await import('../src/dataplane/journal/journal.js');
  const out = salvageJournalDir(dir);
  assert.equal(out.dropped.length, 1);
  const after = scanJournalFile(file2);
  assert.deepEqual(after.damaged, []);
  assert.deepEqual(after.fences.map((fe) => [fe.posBytes, fe.fenceSeq]), [[0, fenceSeq]], 'the fence was not kept once, first');
  assert.equal(after.lengthBytes, before.lengthBytes - RECORD_BYTES, 'salvage kept more or less than every intact item');
  const j2 = openTestJournal(dir);
  t.after(() => j2.close());
  assert.deepEqual(j2.extents(1, 0)?.map((e) => e.seq), [1, 2, 3, 4, 5].filter((s) => s !== fenceSeq + 1));
});
