// A journal record damaged in the middle of a file (media corruption) is not
// a torn tail: the journal refuses to open (JournalCorrupt, nothing changed on
// disk) instead of truncating the flushed records after it, `couchestor fsck`
// reports it, and `couchestor journal salvage` drops only the damaged record.
// A torn tail (the last appends, cut by a crash) is still cut at open, and so
// is a write a crash cut in the middle (appends run concurrently): what tells
// the two apart is the sync marker each group commit appends (a later marker
// covering the damaged write: it was flushed).
// First case: the review's (rev5) test as found; it failed at 321cf3a (the
// file was truncated to 0 bytes and records 2 and 3 were gone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  Journal,
  JournalCorrupt,
  JOURNAL_HEADER_BYTES,
  RecordType,
  checkJournalDir,
  salvageJournalDir,
} from '../src/dataplane/journal/journal.js';
import { CLI, TestDaemon, nbdsh } from './helpers/daemon.js';
import { crashCutJournal, flipBit, journalFiles } from './helpers/journal.js';
import { MANUAL_DESTAGE_CONFIG, createVolume, startColdDaemon } from './helpers/cold.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const RECORD_BYTES = JOURNAL_HEADER_BYTES + BLOCK_BYTES;
/** A file made by a rotation starts with a seq fence, one header long. */
const FENCE_BYTES = JOURNAL_HEADER_BYTES;
/** A file size that holds three records, after the fence too. */
const THREE_RECORDS_FILE_BYTES = FENCE_BYTES + 3 * RECORD_BYTES;

test('a record damaged in the middle of a journal file does not destroy the flushed records after it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-journal-corrupt-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const open = () => Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true });
  let j = open();
  for (let i = 0; i < 3; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j.sync();
  await j.close();
  const file = journalFiles(dir)[0]!;
  const sizeBytes = fs.statSync(file).size;
  // Three records, the sync marker of the one sync and the end marker of the clean close.
  assert.equal(sizeBytes, 3 * (JOURNAL_HEADER_BYTES + BLOCK_BYTES) + 2 * JOURNAL_HEADER_BYTES);
  // One flipped bit in the first record's payload.
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, JOURNAL_HEADER_BYTES + 100);
  b[0] ^= 0x01;
  fs.writeSync(fd, b, 0, 1, JOURNAL_HEADER_BYTES + 100);
  fs.closeSync(fd);
  let replayed: readonly { offsetBytes: number }[] | undefined;
  try {
    j = open();
    replayed = j.extents(1, 0);
    await j.close();
  } catch {
    // Refusing to open is an acceptable answer; destroying data is not.
  }
  assert.equal(fs.statSync(file).size, sizeBytes, 'the file was truncated at the damaged record: the two flushed records after it are gone');
  if (replayed !== undefined) assert.ok(replayed.some((e) => e.offsetBytes === 2 * BLOCK_BYTES), 'the flushed record after the damaged one is not replayed');
});

/** A journal directory with `records` 4 KiB writes of volume 1 (record i at block i, filled with 0x10 + i), flushed; `fileBytes` sets records per file. */
async function writeJournal(dir: string, records: number, fileBytes = 64 * MiB): Promise<string[]> {
  const j = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes, destagedSeq: () => 0, volumeExists: () => true });
  for (let i = 0; i < records; i++) await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j.sync();
  await j.close();
  return journalFiles(dir, { nonEmpty: true });
}

function openJournal(dir: string, fileBytes = 64 * MiB): Journal {
  return Journal.open({ dir, chunkSizeBytes: MiB, fileBytes, destagedSeq: () => 0, volumeExists: () => true });
}

/** Block index -> fill byte of every replayed extent of volume 1, chunk 0. */
function replayedBlocks(j: Journal): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of j.extents(1, 0) ?? []) {
    assert.equal(e.data!.length, BLOCK_BYTES);
    assert.ok(e.data!.every((x) => x === e.data![0]), `record at ${e.offsetBytes} replayed with mixed bytes`);
    out.set(e.offsetBytes / BLOCK_BYTES, e.data![0]!);
  }
  return out;
}

test('a torn tail (the last write, no sync marker after it, damaged and cut short) is still cut at open', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-torn-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const j0 = openJournal(dir);
  for (let i = 0; i < 2; i++) await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j0.sync();
  // Never flushed: the crash cuts it.
  await j0.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x12));
  await j0.close();
  const [file] = journalFiles(dir, { nonEmpty: true });
  const flushedEndBytes = 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES;
  // The unflushed record, then the end marker of the clean close (it claims the sync's seq only).
  assert.equal(fs.statSync(file!).size, flushedEndBytes + RECORD_BYTES + JOURNAL_HEADER_BYTES);
  // The last record's payload damaged and half a header of a fourth record after it.
  flipBit(file!, flushedEndBytes + JOURNAL_HEADER_BYTES + 7);
  fs.appendFileSync(file!, Buffer.alloc(JOURNAL_HEADER_BYTES / 2, 0x43));
  assert.equal(checkJournalDir(dir).damaged.length, 0, 'a torn tail is not damage');
  const j = openJournal(dir);
  t.after(() => j.close());
  assert.equal(fs.statSync(file!).size, flushedEndBytes, 'the torn tail is cut where the intact records end');
  assert.deepEqual([...replayedBlocks(j)], [
    [0, 0x10],
    [1, 0x11],
  ]);
});

test('a write a crash cut in the middle (never written, an unflushed one after it intact, no marker after) is cut at open, not refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-cut-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Two appends in flight at the crash: the first's writev never ran (zeros), the second's landed.
  const file = await crashCutJournal(openJournal(dir));
  const flushedEndBytes = 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES;
  const check = checkJournalDir(dir);
  assert.equal(check.damaged.length, 0, 'a crash cut is not damage');
  assert.equal(check.tornTails, 1);
  // Before sync markers this was refused (JournalCorrupt): a restart after a crash under load needed an operator.
  const j = openJournal(dir);
  t.after(() => j.close());
  assert.equal(fs.statSync(file!).size, flushedEndBytes, 'cut where the cut write starts (the unflushed one after it goes too)');
  assert.deepEqual([...replayedBlocks(j)], [
    [0, 0x10],
    [1, 0x11],
  ]);
});

test('damage to flushed writes a later sync marker covers is refused, also as the last record of a file or of an older file', async (t) => {
  // The last record of the only file: its sync marker follows it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-lastflushed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [file] = await writeJournal(dir, 3);
  flipBit(file!, 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES + 7);
  assert.throws(() => openJournal(dir), (err: unknown) => err instanceof JournalCorrupt && err.offsetBytes === 2 * RECORD_BYTES);
  // The tail of an older file (three records per file), covered by the marker in the newer one.
  const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-oldtail-'));
  t.after(() => fs.rmSync(dir2, { recursive: true, force: true }));
  const files = await writeJournal(dir2, 6, THREE_RECORDS_FILE_BYTES);
  assert.equal(files.length, 2);
  flipBit(files[0]!, 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES + 9);
  const before = fs.readFileSync(files[0]!);
  assert.throws(() => openJournal(dir2, THREE_RECORDS_FILE_BYTES), (err: unknown) => err instanceof JournalCorrupt && err.file === files[0] && err.offsetBytes === 2 * RECORD_BYTES);
  assert.ok(fs.readFileSync(files[0]!).equals(before), 'the older file was cut as a torn tail');
  assert.deepEqual(checkJournalDir(dir2).damaged.map((d) => [d.file, d.offsetBytes]), [[files[0], 2 * RECORD_BYTES]]);
});

test('a damaged middle record: the journal refuses to open with JournalCorrupt naming file, offset, intact records after it and the salvage command, and changes no byte of any file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-mid-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Three records per file: record 4 (block 4) is the middle of the second file.
  const files = await writeJournal(dir, 6, THREE_RECORDS_FILE_BYTES);
  assert.equal(files.length, 2);
  // The first file also has bytes past its end marker (a rotation's: what a recycled file's old
  // bytes are, no torn tail): the refusal must not cut them either.
  fs.appendFileSync(files[0]!, Buffer.alloc(10, 0x55));
  const damagedAtBytes = FENCE_BYTES + RECORD_BYTES;
  flipBit(files[1]!, damagedAtBytes + JOURNAL_HEADER_BYTES + 4000);
  const before = files.map((f) => fs.readFileSync(f));
  const namesBefore = fs.readdirSync(dir).sort();
  assert.throws(
    () => openJournal(dir, THREE_RECORDS_FILE_BYTES),
    (err: unknown) => {
      assert.ok(err instanceof JournalCorrupt, `expected JournalCorrupt, got ${String(err)}`);
      assert.equal(err.file, files[1]);
      assert.equal(err.offsetBytes, damagedAtBytes);
      assert.equal(err.intactRecordsAfter, 1);
      assert.match(err.message, new RegExp(`journal file ${files[1]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has a damaged record at byte offset ${damagedAtBytes} with 1 intact record\\(s\\) after it`));
      assert.match(err.message, /couchestor journal salvage/);
      assert.match(err.message, /couchestor fsck/);
      return true;
    },
  );
  files.forEach((f, i) => assert.ok(fs.readFileSync(f).equals(before[i]!), `${f} changed by the refusal`));
  assert.deepEqual(fs.readdirSync(dir).sort(), namesBefore, 'the refusal created or removed a file');
  const check = checkJournalDir(dir);
  assert.deepEqual(
    check.damaged.map((d) => [d.file, d.offsetBytes, d.lengthBytes, d.intactRecordsAfter, d.claimed?.seq]),
    [[files[1], damagedAtBytes, RECORD_BYTES, 1, 5]],
  );
  // Bytes past a file's end marker are no torn tail (a start would not cut them).
  assert.equal(check.tornTails, 0);
});

test('salvage drops only the damaged record (bit flip, zeroed header, a lost page), durably, and the intact records replay with their bytes and seqs', async (t) => {
  for (const damage of ['payload bit', 'zeroed header', 'zeroed record'] as const) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-journal-salvage-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const [file] = await writeJournal(dir, 4);
    if (damage === 'payload bit') flipBit(file!, RECORD_BYTES + JOURNAL_HEADER_BYTES + 1);
    else {
      const fd = fs.openSync(file!, 'r+');
      fs.writeSync(fd, Buffer.alloc(damage === 'zeroed header' ? JOURNAL_HEADER_BYTES : RECORD_BYTES), 0, undefined, RECORD_BYTES);
      fs.closeSync(fd);
    }
    assert.throws(() => openJournal(dir), JournalCorrupt, damage);
    const r = salvageJournalDir(dir);
    assert.deepEqual(
      r.dropped.map((d) => [d.file, d.offsetBytes, d.lengthBytes]),
      [[file, RECORD_BYTES, RECORD_BYTES]],
      damage,
    );
    assert.equal(r.recordsKept, 3);
    // Three records, the sync marker and the clean close's end marker.
    assert.equal(fs.statSync(file!).size, 3 * RECORD_BYTES + 2 * JOURNAL_HEADER_BYTES, damage);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('salvage')), [], 'the temporary file is renamed over');
    assert.equal(checkJournalDir(dir).damaged.length, 0);
    assert.equal(salvageJournalDir(dir).filesRewritten, 0, 'a second salvage changes nothing');
    const j = openJournal(dir);
    assert.deepEqual(
      [...replayedBlocks(j)].sort((a, b) => a[0] - b[0]),
      [
        [0, 0x10],
        [2, 0x12],
        [3, 0x13],
      ],
      damage,
    );
    assert.deepEqual(j.extents(1, 0)!.map((e) => e.seq), [1, 3, 4], damage);
    // Numbering continues above every kept record.
    await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x77));
    assert.equal(j.extents(1, 0)!.at(-1)!.seq, 5);
    await j.close();
  }
});

/** Runs `couchestor serve` on a data directory expected to refuse to start; resolves with its exit code and stderr. */
function serveExpectingFailure(dataDir: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    // It started after all: stop it, the caller's assertions report it.
    if (/couchestor ready/.test(stdout)) p.kill('SIGKILL');
  });
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => p.once('close', (code) => resolve({ code, stdout, stderr })));
}

function cliRun(dataDir: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [CLI, ...args, '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => p.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** Reads block `i` of export `name`; returns its distinct byte values. */
function readBlock(d: TestDaemon, name: string, i: number): number[] {
  const out = nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri(name))})\nb = h.pread(${BLOCK_BYTES}, ${i * BLOCK_BYTES})\nprint(sorted(set(b)))`);
  return JSON.parse(out.trim()) as number[];
}

test('real daemon: a torn tail is cut and it starts; a damaged middle record stops `couchestor serve` with the message (exit 1, file unchanged), fsck reports it, salvage then start reads every intact flushed record back', async (t) => {
  let d = await startColdDaemon(MANUAL_DESTAGE_CONFIG);
  const dataDir = d.dataDir;
  t.after(() => d.cleanup());
  await createVolume(d, 'c1', 8 * MiB, 'cold');
  // Three flushed 4 KiB writes, each its own journal record, in order.
  nbdsh(
    `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n` +
      [0, 1, 2].map((i) => `h.pwrite(bytes([${0x10 + i}]) * ${BLOCK_BYTES}, ${i * BLOCK_BYTES})\nh.flush()`).join('\n'),
  );
  await d.kill();
  const journalDir = path.join(dataDir, 'pools', 'hot-0', 'journal');
  const [file] = journalFiles(journalDir);
  assert.ok(file, 'no journal file with records');
  // Three records; the first two FLUSHes' sync markers rode on the next
  // write, the last one's is written alone shortly after (or lost with the kill).
  const sizeBytes = fs.statSync(file).size;
  assert.ok([3 * RECORD_BYTES + 2 * JOURNAL_HEADER_BYTES, 3 * (RECORD_BYTES + JOURNAL_HEADER_BYTES)].includes(sizeBytes), `journal file of ${sizeBytes} bytes`);

  // A torn tail: half a record after the three. The daemon starts and cuts it.
  fs.appendFileSync(file, Buffer.alloc(RECORD_BYTES / 2, 0x5a));
  d = await TestDaemon.start({ dataDir });
  assert.equal(fs.statSync(file).size, sizeBytes, 'the torn tail was not cut');
  for (const i of [0, 1, 2]) assert.deepEqual(readBlock(d, 'c1', i), [0x10 + i], `block ${i} after the torn tail`);
  await d.kill();

  // One bit of the first record's payload flipped.
  flipBit(file, JOURNAL_HEADER_BYTES + 123);
  const before = fs.readFileSync(file);
  const refused = await serveExpectingFailure(dataDir);
  assert.equal(refused.code, 1, `serve exited ${refused.code}: ${refused.stderr}`);
  assert.doesNotMatch(refused.stdout, /couchestor ready/);
  assert.match(refused.stderr, new RegExp(`couchestor: journal file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has a damaged record at byte offset 0 with 2 intact record\\(s\\) after it`));
  assert.match(refused.stderr, /couchestor journal salvage/);
  assert.doesNotMatch(refused.stderr, /^\s+at /m, 'a stack trace');
  assert.ok(fs.readFileSync(file).equals(before), 'the refused start changed the journal file');

  const f = await cliRun(dataDir, 'fsck');
  assert.equal(f.code, 1, `fsck exited ${f.code}: ${f.stderr}`);
  const report = JSON.parse(f.stdout) as { journal: { damaged: { file: string; offsetBytes: number; intactRecordsAfter: number }[] } };
  assert.deepEqual(report.journal.damaged.map((x) => [x.file, x.offsetBytes, x.intactRecordsAfter]), [[file, 0, 2]]);
  assert.match(f.stderr, /damaged record at byte offset 0/);
  assert.ok(fs.readFileSync(file).equals(before), 'fsck changed the journal file');

  const s = await cliRun(dataDir, 'journal', 'salvage');
  assert.equal(s.code, 0, `salvage exited ${s.code}: ${s.stderr}`);
  assert.match(s.stderr, new RegExp(`dropped ${RECORD_BYTES} damaged bytes at offset 0 of .*volume \\d+, offset 0, ${BLOCK_BYTES} bytes`));

  d = await TestDaemon.start({ dataDir });
  // The damaged write is gone (its block reads the older bytes: never written, zeros); the flushed ones after it are there.
  assert.deepEqual(readBlock(d, 'c1', 0), [0]);
  assert.deepEqual(readBlock(d, 'c1', 1), [0x11]);
  assert.deepEqual(readBlock(d, 'c1', 2), [0x12]);
});
