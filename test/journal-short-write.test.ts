// A journal write that lands only in part is never reported landed. libuv's
// write loop returns a partial count as success when ENOSPC (or any error)
// stops it after some bytes landed; a file system may also split a write.
// The journal finishes the write or fails it (and the FLUSH behind it) like
// any write error. Proved on a real tmpfs that fills up (or, where none can
// be mounted, under RLIMIT_FSIZE: see tinyFileSystem), and through fs.writev
// itself for a split write that the retry completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JournalShortWrite, JOURNAL_HEADER_BYTES, RecordType, scanJournalBytes } from '../src/dataplane/journal/journal.js';
import { VolumeFailed } from '../src/dataplane/errors.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, block, journalFiles, openTestJournal, tinyFileSystem, nameNonce } from './helpers/journal.js';

const PAGE_BYTES = 4096;

/**
 * setTimeout mocked (advanced only by tick, never here): the journal's
 * 50 ms timer that writes a pending sync marker alone then never fires on
 * its own, so every marker rides on the next append's writev (or is written
 * at close) and the byte layout these tests plan is the same on a loaded
 * machine.
 */
function holdMarkerTimer(t: { mock: { timers: { enable(o: { apis: 'setTimeout'[] }): void } } }): void {
  t.mock.timers.enable({ apis: ['setTimeout'] });
}

/** Asserts that `err` is the journal's latched failure caused by a short write. */
function assertShortWriteFailure(err: unknown, what: string, fullErrorCode: string): JournalShortWrite {
  assert.ok(err instanceof VolumeFailed, `${what}: expected VolumeFailed, got ${String(err)}`);
  const cause = (err as Error).cause;
  assert.ok(cause instanceof JournalShortWrite, `${what}: the failure's cause is not a JournalShortWrite: ${String(cause)}`);
  assert.ok(cause.writtenBytes > 0 && cause.writtenBytes < cause.expectedBytes, `${what}: not a partial write: ${cause.message}`);
  assert.ok(cause.message.includes(fullErrorCode), `${what}: the message does not name what stopped the write (${fullErrorCode}): ${cause.message}`);
  return cause;
}

test('an append that lands only in part on a full file system fails with its FLUSH, and every acknowledged write replays intact', async (t) => {
  // 16 pages. Each FLUSHed 4 KiB write is 4,176 bytes in the file (record
  // plus the previous sync's marker riding in its writev), so the 16th
  // write crosses the last page: 2,936 of its bytes land, then ENOSPC.
  holdMarkerTimer(t);
  const tiny = await tinyFileSystem(t, 16 * PAGE_BYTES, 'couchestor-journal-short-write-');
  const dir = path.join(tiny.dir, 'journal');
  // No room check: these tests drive the write that finds the disk full (the race the check leaves).
  const j = openTestJournal(dir, { roomMarginBytes: null });
  const acked: number[] = [];
  let failedAt = -1;
  let failure: unknown = null;
  for (let i = 0; i < 32 && failedAt < 0; i++) {
    try {
      await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
      await j.sync();
      acked.push(i);
    } catch (err) {
      failedAt = i;
      failure = err;
    }
  }
  assert.ok(failedAt > 0, 'the file system never filled up');
  const cause = assertShortWriteFailure(failure, `write ${failedAt}`, tiny.fullErrorCode);
  assert.equal(failedAt, 15, 'the file system filled up elsewhere than planned');
  assert.equal(cause.writtenBytes, 2936);
  // The latch: nothing after it is reported durable either.
  await assert.rejects(j.sync(), VolumeFailed, 'a FLUSH after the short write succeeded');
  await assert.rejects(j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0)), VolumeFailed);
  await j.close();

  // Precondition: the failed write really landed in part (a torn record at the tail), not at all.
  const [file] = journalFiles(dir, { nonEmpty: true });
  const bytes = fs.readFileSync(file!);
  const scan = scanJournalBytes(bytes, nameNonce(file!));
  assert.equal(scan.records.length, acked.length, 'the file holds a different number of intact records than were acknowledged');
  assert.equal(bytes.length, cause.offsetBytes + cause.writtenBytes, 'the file ends elsewhere than where the short write stopped');
  assert.ok(bytes.length > scan.endBytes + JOURNAL_HEADER_BYTES, `no torn record after the acknowledged ones (file ${bytes.length} bytes, intact up to ${scan.endBytes})`);

  // The restart, on a disk with room: every acknowledged write comes back
  // byte for byte, the one that failed does not.
  const copy = tempDir(t, 'couchestor-journal-short-write-copy-');
  fs.cpSync(dir, copy, { recursive: true });
  const j2 = openTestJournal(copy);
  t.after(() => j2.close());
  const replayed = new Map((j2.extents(1, 0) ?? []).map((e) => [e.offsetBytes / BLOCK_BYTES, e.data!]));
  for (const i of acked) assert.deepEqual(replayed.get(i), block(i), `acknowledged (FLUSHed) write ${i} did not replay intact`);
  assert.equal(replayed.has(failedAt), false, `the write that failed (${failedAt}) was replayed`);
  assert.equal(replayed.size, acked.length);
});

test('a sync marker written alone that lands only in part fails the journal', async (t) => {
  holdMarkerTimer(t);
  const tiny = await tinyFileSystem(t, 16 * PAGE_BYTES, 'couchestor-journal-short-marker-');
  const dir = path.join(tiny.dir, 'journal');
  // No room check: these tests drive the write that finds the disk full (the race the check leaves).
  const j = openTestJournal(dir, { roomMarginBytes: null });
  // One record ending 20 bytes before the first page's end: the marker of
  // the sync below, written alone at close, straddles that page boundary.
  const payloadBytes = PAGE_BYTES - 20 - JOURNAL_HEADER_BYTES;
  await j.append(RecordType.Write, 1, 0, payloadBytes, Buffer.alloc(payloadBytes, 0x42));
  await j.sync();
  const [file] = journalFiles(dir, { nonEmpty: true });
  tiny.fill(file!);
  await j.close();
  const cause = assertShortWriteFailure(j.failed, 'the marker written at close', tiny.fullErrorCode);
  assert.equal(cause.writtenBytes, 20);
  assert.equal(cause.expectedBytes, JOURNAL_HEADER_BYTES);
  assert.equal(cause.offsetBytes, PAGE_BYTES - 20);
});

test('an append whose writev the file system splits is finished by the journal and replays intact', async (t) => {
  holdMarkerTimer(t);
  const dir = tempDir(t, 'couchestor-journal-split-write-');
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.sync();
  // The next writev the journal issues lands its first 1,000 bytes only,
  // for real (the bytes after them are not written), and reports that count
  // as success, as libuv does for a pwritev cut short without an error.
  const realWritev = fs.writev;
  const splits: { askedBytes: number; writtenBytes: number }[] = [];
  t.after(() => {
    fs.writev = realWritev;
  });
  fs.writev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView[]) => void) => {
    fs.writev = realWritev;
    const all = Buffer.concat(bufs.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
    realWritev(fd, [all.subarray(0, 1000)], pos, (err, n) => {
      splits.push({ askedBytes: all.length, writtenBytes: n });
      cb(err, n, bufs);
    });
  }) as typeof fs.writev;
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, block(1));
  await j.sync();
  assert.deepEqual(splits, [{ askedBytes: JOURNAL_HEADER_BYTES * 2 + BLOCK_BYTES, writtenBytes: 1000 }], 'the split was not exercised as planned');
  assert.equal(j.failed, null);
  await j.close();
  const j2 = openTestJournal(dir);
  t.after(() => j2.close());
  const replayed = (j2.extents(1, 0) ?? []).map((e) => ({ offsetBytes: e.offsetBytes, data: e.data }));
  assert.deepEqual(replayed, [
    { offsetBytes: 0, data: block(0) },
    { offsetBytes: BLOCK_BYTES, data: block(1) },
  ]);
});
