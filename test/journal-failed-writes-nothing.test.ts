// A journal failed by a real I/O error (an fdatasync's EIO, injected through the fs module
// object journal.ts calls) writes nothing more: a removal begun after the failure writes no
// claim marker into the head and unlinks nothing. After EIO the kernel may have dropped pages it
// could not write, so a marker claiming those writes durable, or a file gone that the next open
// should judge, is exactly what the failure latch is for (note7's known gap).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JOURNAL_HEADER_BYTES, RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, journalFiles, MiB, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;
const realWritev = fs.writev;
const realRm = fs.rm;

const eio = () => Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 });

/** Fails the next fs.fdatasync with EIO (once); resolves once its callback ran. */
function failNextFdatasync(): Promise<void> {
  return new Promise<void>((done) => {
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      fs.fdatasync = realFdatasync;
      setImmediate(() => {
        cb(eio());
        done();
      });
    }) as typeof fs.fdatasync;
  });
}

test('a failed journal writes no claim marker when a file holding markers is removed', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-failed-claim-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
    fs.writev = realWritev;
  });
  // Two records and a marker per file: write 2 carries the first FLUSH's marker into file 1, so
  // file 1's removal must re-write that claim into the head (while the journal is healthy).
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.sync();
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  // Write 3 rotates into file 2 (the head).
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  const [file1, file2] = journalFiles(dir);
  assert.ok(file1 && file2, 'rotated into a second file');
  // A FLUSH whose fdatasync fails with EIO: the journal fails.
  const faulted = failNextFdatasync();
  await assert.rejects(j.sync(), /journal I\/O failed/);
  await faulted;
  assert.ok(j.failed);
  const headBefore = fs.readFileSync(file2!);
  // From here, every writev is recorded (and still run).
  const writes: number[] = [];
  fs.writev = ((fd: number, ...rest: unknown[]) => {
    writes.push(fd);
    return (realWritev as (...a: unknown[]) => void)(fd, ...rest);
  }) as typeof fs.writev;
  // A destage releases writes 1 and 2: file 1 has no live record. The claim marker would be
  // issued right here, synchronously, by the removal.
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  j.release(1, 1, Number.MAX_SAFE_INTEGER);
  assert.deepEqual(writes, [], 'a failed journal issued a write (the removal\'s claim marker)');
  await j.close();
  assert.deepEqual(writes, [], 'a failed journal issued a write before close resolved');
  assert.ok(headBefore.equals(fs.readFileSync(file2!)), 'the head file changed after the failure');
  assert.ok(fs.existsSync(file1!), 'the failed journal keeps the file (the next open judges it with every marker on disk)');
});

test('a failed journal unlinks no file, also one whose removal was waiting on the failing FLUSH', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-failed-unlink-');
  const rms: string[] = [];
  fs.rm = ((p: string, ...rest: unknown[]) => {
    rms.push(p);
    return (realRm as (...a: unknown[]) => void)(p, ...rest);
  }) as typeof fs.rm;
  t.after(() => {
    fs.fdatasync = realFdatasync;
    fs.rm = realRm;
  });
  // One record per file, no marker in file 1 (nothing flushed before): its removal writes no
  // claim and goes straight to its fdatasync and unlink, after the writes and sync in flight.
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const [file1] = journalFiles(dir);
  // The FLUSH's first fdatasync fails; the removal begun while it runs waits for it (healthy
  // when it began), then must find the journal failed and keep the file.
  const faulted = failNextFdatasync();
  const flush = j.sync();
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await assert.rejects(flush, /journal I\/O failed/);
  await faulted;
  // close waits for the removal in flight (journal-close-waits-removal): whatever it did is done.
  await j.close();
  assert.ok(j.failed);
  assert.deepEqual(rms, [], 'a failed journal unlinked a file');
  assert.ok(fs.existsSync(file1!), 'file 1 kept');
});
