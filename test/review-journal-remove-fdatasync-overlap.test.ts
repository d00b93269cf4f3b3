// Review (pre-existing, the class of 84312ba): a journal file's removal fdatasync and a FLUSH's
// group sync of the same file may overlap. Linux reports a writeback error to one of two
// overlapping fdatasyncs of one open file only (errseq, once per open file): when the FLUSH's
// call returns 0 first and the removal's returns EIO after, the FLUSH must not be acknowledged
// (its marker would claim records whose pages the kernel may have dropped). fs.fdatasync is
// held and completed by the test, in that order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, holdFdatasyncs, journalFiles, MiB, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;
const realOpen = fs.promises.open;

test("a FLUSH whose fdatasync of a file being removed returns 0 before the removal's returns EIO is not acknowledged", async (t) => {
  const dir = tempDir(t, 'couchestor-review-remove-fdatasync-overlap-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
    fs.promises.open = realOpen;
  });
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  // Rotates into file 2: file 1 is no longer the head and can be removed.
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const { held, heldCount } = holdFdatasyncs();
  // The FLUSH's directory sync (syncNewEntry: open, sync, close of the directory) is observed.
  let dirSyncDone!: () => void;
  const dirSyncClosed = new Promise<void>((r) => (dirSyncDone = r));
  fs.promises.open = (async (...args: Parameters<typeof realOpen>) => {
    const h = await realOpen(...args);
    if (args[0] !== dir) return h;
    const realClose = h.close.bind(h);
    h.close = async () => {
      await realClose();
      dirSyncDone();
    };
    return h;
  }) as typeof fs.promises.open;
  // File 1's removal issues its fdatasync (held)...
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await heldCount(1);
  const removalSync = held[0]!;
  // ...then a FLUSH takes file 2 and file 1 (still being removed, dirty): two more, held.
  let acknowledged = false;
  const flush = j.sync().then(() => {
    acknowledged = true;
  });
  await heldCount(3);
  assert.ok(held.slice(1).some((h) => h.fd === removalSync.fd), 'the FLUSH fdatasyncs the file being removed');
  fs.fdatasync = realFdatasync;
  // The FLUSH's calls return 0 first (the kernel reported the error to the other call)...
  for (const h of held.slice(1)) h.cb(null);
  // ...and its directory sync (file 2's new name) ends: nothing else is left for it to wait for.
  await dirSyncClosed;
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  assert.equal(acknowledged, false, "the FLUSH must wait for the removal's overlapping fdatasync of the same file");
  // ...then the removal's returns the EIO.
  removalSync.cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }));
  await assert.rejects(flush, /journal I\/O failed/);
  assert.ok(j.failed);
  await j.close();
});

test("a removal whose fdatasync returns 0 before an overlapping FLUSH's returns EIO keeps the file", async (t) => {
  const dir = tempDir(t, 'couchestor-review-remove-fdatasync-overlap-2-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
  });
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const file1 = journalFiles(dir)[0]!;
  const { held, heldCount } = holdFdatasyncs();
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await heldCount(1);
  const removalSync = held[0]!;
  const flush = j.sync();
  await heldCount(3);
  fs.fdatasync = realFdatasync;
  const flushSyncOfFile1 = held.slice(1).find((h) => h.fd === removalSync.fd)!;
  // The removal's call returns 0 first: the file must not go (unlinked or recycled) before the
  // other call of the same file has returned without error.
  removalSync.cb(null);
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  flushSyncOfFile1.cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }));
  for (const h of held.slice(1)) if (h !== flushSyncOfFile1) h.cb(null);
  await assert.rejects(flush, /journal I\/O failed/);
  await j.close();
  assert.ok(fs.existsSync(file1), 'the file whose pages may be lost is kept for the next open to judge');
});
