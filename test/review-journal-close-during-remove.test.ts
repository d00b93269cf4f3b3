// close() racing a deferred removal (52a150a: a destaged file's descriptor closes only after the
// writes and the sync running at the removal): close's per-file fdatasync (ae41607) must not touch
// the file being removed, its descriptor is closed exactly once (by the removal, not by close), no
// syscall reaches that number after its close, and the journal does not fail. Syscalls are held
// and observed through the fs module object, which journal.ts calls (as review-sync-fault does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, MiB, observeCloses, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;

type Op = { op: 'fdatasync' | 'close'; fd: number; err?: string };

test('close during a deferred removal: the removed file is closed once, by the removal, and never synced after', async (t) => {
  const dir = tempDir(t, 'couchestor-review-close-during-remove-');
  const ops: Op[] = [];
  /** The inode whose next fdatasync is held (file 2's): a sync after a rotation also takes the file it left (its end marker). */
  let holdIno = -1;
  let releaseSync!: () => void;
  let heldFd = -1;
  const held = new Promise<void>((started) => {
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      const run = () =>
        realFdatasync(fd, (err) => {
          ops.push({ op: 'fdatasync', fd, ...(err ? { err: err.code } : {}) });
          cb(err);
        });
      if (holdIno !== -1 && fs.fstatSync(fd).ino === holdIno) {
        holdIno = -1;
        heldFd = fd;
        releaseSync = run;
        started();
      } else run();
    }) as typeof fs.fdatasync;
  });
  observeCloses(t, (fd) => ops.push({ op: 'close', fd }));
  t.after(() => {
    fs.fdatasync = realFdatasync;
  });
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
  // Open's directory descriptor is closed before file 1 reuses its number: observe from here.
  ops.length = 0;
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.sync();
  // Write 2 rotates into file 2 and carries the first sync's marker (its removal writes a claim).
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const file2 = fs.readdirSync(dir).sort().at(-1)!;
  holdIno = fs.statSync(path.join(dir, file2)).ino;
  const flush = j.sync();
  await held;
  // Write 3 rotates to file 3; a destage releases write 2: file 2's removal waits on the held sync.
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  j.release(1, 1, Number.MAX_SAFE_INTEGER);
  const closing = j.close();
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  assert.equal(ops.some((o) => o.op === 'close' && o.fd === heldFd), false, 'closed under the held fdatasync');
  releaseSync();
  await flush;
  await closing;
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  const onFd2 = ops.filter((o) => o.fd === heldFd);
  // The held sync's, then the removal's own (the file is durable before its unlink: journal-power-loss), then the close.
  assert.deepEqual(onFd2, [{ op: 'fdatasync', fd: heldFd }, { op: 'fdatasync', fd: heldFd }, { op: 'close', fd: heldFd }], `file 2's syscalls: ${JSON.stringify(ops)}`);
  assert.equal(ops.filter((o) => o.err).length, 0, `a syscall failed: ${JSON.stringify(ops)}`);
  assert.equal(fs.existsSync(path.join(dir, file2)), false, 'the destaged file was removed');
  // Every file close kept was synced by close after its last marker, and closed once.
  const closes = ops.filter((o) => o.op === 'close').map((o) => o.fd);
  assert.equal(new Set(closes).size, closes.length, `a descriptor closed twice: ${closes.join(',')}`);
});
