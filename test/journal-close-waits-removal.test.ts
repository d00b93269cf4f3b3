// close() waits for a journal file's removal in flight (its fdatasync, close and unlink), so an
// open of the same directory right after close() resolves never has a file vanish under it
// (note7's known gap: the removal could finish after close() had resolved). The removal's
// fdatasync is held through the fs module object journal.ts calls, and let go by close's own last
// step (closing the head's descriptor): deterministic, no timing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, journalFiles, MiB, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;
const realCloseSync = fs.closeSync;
const realClose = fs.close;

test('close() resolves only once a removal in flight has closed and unlinked its file; a reopen right after sees a stable directory', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-close-waits-removal-');
  t.after(() => {
    fs.fdatasync = realFdatasync;
    fs.closeSync = realCloseSync;
    fs.close = realClose;
  });
  // One record per file: write 2 rotates into file 2, and file 1 can be removed once write 1 is destaged.
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const [file1, file2] = journalFiles(dir);
  assert.ok(file1 && file2, 'rotated into a second file');

  // The next fdatasync (the removal's, of file 1) is held until close() closes a descriptor
  // synchronously (the head's, its last step).
  let heldFd = -1;
  let letGo: (() => void) | null = null;
  const held = new Promise<void>((reached) => {
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      fs.fdatasync = realFdatasync;
      heldFd = fd;
      letGo = () => realFdatasync(fd, cb);
      reached();
    }) as typeof fs.fdatasync;
  });
  const closedFds: number[] = [];
  fs.close = ((fd: number, cb?: (err: NodeJS.ErrnoException | null) => void) => {
    closedFds.push(fd);
    realClose(fd, cb ?? (() => undefined));
  }) as typeof fs.close;
  fs.closeSync = ((fd: number) => {
    closedFds.push(fd);
    realCloseSync(fd);
    const go = letGo;
    letGo = null;
    go?.();
  }) as typeof fs.closeSync;

  // A destage of chunk 0: file 1 has no live record left, and its removal starts.
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await held;
  assert.ok(fs.existsSync(file1!), 'the removal is in flight (held at its fdatasync)');
  await j.close();
  assert.equal(letGo, null, "close() closed the head's descriptor (which let the removal go)");
  assert.ok(closedFds.includes(heldFd), `close() resolved before the removal closed file 1's descriptor ${heldFd} (closed: ${closedFds.join(',')})`);
  assert.equal(fs.existsSync(file1!), false, 'close() resolved before the removal unlinked file 1');

  // The reopen right after: chunk 0 is destaged up to write 1 (in a stripe), write 2 is replayed.
  fs.closeSync = realCloseSync;
  fs.close = realClose;
  const before = journalFiles(dir);
  const j2 = openTestJournal(dir, { destagedSeq: (_v, c) => (c === 0 ? 1 : 0), highestDestagedSeq: 1 });
  t.after(() => j2.close());
  assert.deepEqual(j2.extents(1, 0), undefined, 'write 1 is destaged');
  assert.ok(j2.extents(1, 1)?.[0]?.data?.equals(block(2)), 'write 2 replayed with its bytes');
  await j2.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  await j2.sync();
  // Every file the reopen found is still there (none vanished under it), plus its new head.
  for (const f of before) assert.ok(fs.existsSync(f), `${f} vanished under the reopened journal`);
  await j2.close();
});
