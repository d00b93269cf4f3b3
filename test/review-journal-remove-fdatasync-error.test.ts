// Review of 72a8e74: the fdatasync a journal file's removal runs before its unlink must fail the
// journal when it fails, as every other journal fdatasync does. After EIO the kernel may have
// dropped the file's dirty pages (marked clean, never written: "fsyncgate"), so the file can come
// back torn after a power cut that undoes the not yet durable unlink; a sync marker written after
// that (the next FLUSH's) claims the file's records and the open refuses the pure power cut, the
// very state 72a8e74's removal fdatasync is there to prevent. 72a8e74 logged a warning, unlinked
// the file and went on: the next FLUSH succeeded and claimed it. fs.fdatasync is faulted and
// fs.close observed through the fs module object, which journal.ts calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, holdFdatasyncs, journalFiles, MiB, observeCloses, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;

test("a removal's failing fdatasync fails the journal, keeps the file and closes its descriptor once", async (t) => {
  const dir = tempDir(t, 'couchestor-review-remove-fdatasync-error-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
  });
  // One record per file; nothing flushed: file 1 is never synced by a FLUSH (the case 72a8e74's
  // removal fdatasync is for), and holds no marker (the removal does not wait for a claim).
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  // Observed from after the open: the directory descriptor it closed may have the number file 1 has now.
  const closed: number[] = [];
  observeCloses(t, (fd) => closed.push(fd));
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  // Rotates into file 2: file 1 is no longer the head and can be removed.
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const file1 = journalFiles(dir)[0]!;
  // The removal's fdatasync (the only fdatasync issued from here) fails with EIO.
  let faultedFd = -1;
  const faulted = new Promise<void>((done) => {
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      faultedFd = fd;
      fs.fdatasync = realFdatasync;
      setImmediate(() => {
        cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }));
        done();
      });
    }) as typeof fs.fdatasync;
  });
  // A destage of chunk 0 releases write 1: file 1 has no live record left and goes.
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await faulted;
  // The descriptor closes after the syncs that took it: none runs, a few turns are enough.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.ok(j.failed, 'the journal must fail: its pages may have been dropped (the error is reported once)');
  await assert.rejects(j.sync(), /journal I\/O failed/, 'a FLUSH after the failed fdatasync must not succeed (its marker would claim the file)');
  assert.ok(fs.existsSync(file1), 'the failed journal keeps the file (the next open judges it with every marker on disk)');
  assert.equal(closed.filter((fd) => fd === faultedFd).length, 1, `the removed file's descriptor ${faultedFd} is closed exactly once (closed: ${closed.join(',')})`);
  await j.close();
});

test("a FLUSH whose fdatasync of a file being removed succeeds after the removal's failed does not claim it", async (t) => {
  const dir = tempDir(t, 'couchestor-review-remove-fdatasync-error-sync-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
  });
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  // Every fdatasync from here is held, and completed by the test.
  const { held, heldCount } = holdFdatasyncs();
  // File 1's removal issues its fdatasync (held)...
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await heldCount(1);
  const removalSync = held[0]!;
  // ...then a FLUSH takes file 2 and file 1 (still being removed, dirty): two more, held.
  const flush = j.sync();
  await heldCount(3);
  assert.ok(held.slice(1).some((h) => h.fd === removalSync.fd), "the FLUSH fdatasyncs the file being removed (72a8e74's contract)");
  fs.fdatasync = realFdatasync;
  // Linux reports a writeback error once per open file: the removal's fdatasync, first to
  // complete, takes the EIO; the FLUSH's on the same descriptor then returns 0.
  removalSync.cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }));
  for (const h of held.slice(1)) h.cb(null);
  // Resolved, this FLUSH's marker (written alone by the 50 ms timer) claims write 1, whose file's
  // pages the kernel may have dropped: a power cut bringing the file back makes the open refuse.
  await assert.rejects(flush, /journal I\/O failed/);
  assert.ok(j.failed);
  await j.close();
});
