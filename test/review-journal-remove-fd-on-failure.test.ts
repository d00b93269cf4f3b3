// A journal file whose records are all destaged, and that holds a sync marker, is kept on disk
// if the journal fails while its removal waits (the next open judges with every marker), but its
// descriptor must still be closed: the file is out of the journal's map at once, so close()
// never sees it. Before, a sync that failed (EIO) while the removal waited on it left the
// descriptor open for the life of the process. fs.fdatasync is faulted and fs.close observed
// through the fs module object, which journal.ts calls (as review-sync-fault does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, MiB, observeCloses, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;

test('a file removed while a failing sync runs is kept on disk and its descriptor is closed', async (t) => {
  const dir = tempDir(t, 'couchestor-review-remove-fd-failure-');
  const closed: number[] = [];
  observeCloses(t, (fd) => closed.push(fd));
  t.after(() => {
    fs.fdatasync = realFdatasync;
  });
  // One record per file.
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.sync();
  // Write 2 rotates into file 2 and carries the first sync's marker (file 2 holds a claim).
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const before = new Set(fs.readdirSync(dir));
  // The next sync's fdatasync is held, then fails with EIO.
  let failSync!: () => void;
  let heldFd = -1;
  const held = new Promise<void>((started) => {
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      heldFd = fd;
      failSync = () => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 }));
      started();
    }) as typeof fs.fdatasync;
  });
  const flush = j.sync();
  await held;
  // Write 3 rotates to file 3; then a destage releases write 2: file 2 goes (claim first).
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  j.release(1, 1, Number.MAX_SAFE_INTEGER);
  failSync();
  await assert.rejects(flush, /journal I\/O failed/);
  await j.close();
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const file2 = [...before].sort().at(-1)!;
  assert.ok(fs.existsSync(path.join(dir, file2)), 'the failed journal keeps the file holding a marker');
  assert.ok(closed.includes(heldFd), `the removed file's descriptor ${heldFd} was never closed (closed: ${closed.join(',')})`);
  assert.equal(closed.filter((fd) => fd === heldFd).length, 1, 'closed exactly once');
});
