// A journal file whose records are all destaged is closed and removed only after the
// writes and the sync running on it have finished. Before, maybeRemove closed the
// descriptor at once: an append still in flight (its records released by a destage
// before the writev landed) failed with EBADF, or with the number reused wrote the rest
// of a record into another file; a FLUSH's fdatasync on it failed the whole journal with
// EBADF, or with the number reused took another file's writeback error (reported once).
// The syscalls are held and observed by wrapping fs.writev / fs.fdatasync / fs.close,
// which journal.ts calls through the `fs` module object (as review-sync-fault does).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Journal, JOURNAL_HEADER_BYTES, RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, MiB, observeCloses, openTestJournal, RECORD_BYTES } from './helpers/journal.js';

const realWritev = fs.writev;
const realFdatasync = fs.fdatasync;

type Op = { op: 'writev-done' | 'fdatasync-done' | 'close'; fd: number; err?: string };

interface Observed {
  ops: Op[];
  /** Resolves when the next writev of one marker alone (a claim marker) has landed. */
  nextLoneMarker(): Promise<void>;
  /** Resolves when fs.close(fd) is called. */
  closeOf(fd: number): Promise<void>;
}

/** Records completed writev/fdatasync calls and close calls (close and closeSync), in order; restored when the test ends. */
function observeFs(t: TestContext): Observed {
  const ops: Op[] = [];
  let markerWaiters: (() => void)[] = [];
  const wrappedWritev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView[]) => void) =>
    realWritev(fd, bufs, pos, (err, n, b) => {
      ops.push({ op: 'writev-done', fd, ...(err ? { err: err.code } : {}) });
      if (bufs.reduce((sum, x) => sum + x.byteLength, 0) === JOURNAL_HEADER_BYTES) {
        const ws = markerWaiters;
        markerWaiters = [];
        for (const w of ws) w();
      }
      cb(err, n, b);
    })) as typeof fs.writev;
  fs.writev = wrappedWritev;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) =>
    realFdatasync(fd, (err) => {
      ops.push({ op: 'fdatasync-done', fd, ...(err ? { err: err.code } : {}) });
      cb(err);
    })) as typeof fs.fdatasync;
  const closeWaiters = new Map<number, () => void>();
  observeCloses(t, (fd) => {
    ops.push({ op: 'close', fd });
    closeWaiters.get(fd)?.();
  });
  t.after(() => {
    fs.writev = realWritev;
    fs.fdatasync = realFdatasync;
  });
  return {
    ops,
    nextLoneMarker: () => new Promise<void>((r) => markerWaiters.push(r)),
    closeOf: (fd) => new Promise<void>((r) => closeWaiters.set(fd, r)),
  };
}

/** Holds the next call of fs[name] matching `pick` until the returned release() (the call then runs for real). */
function holdNext<K extends 'writev' | 'fdatasync'>(name: K, pick: (args: unknown[]) => boolean): { started: Promise<number>; release: () => void } {
  const inner = fs[name] as (...args: unknown[]) => void;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let started!: (fd: number) => void;
  const startedP = new Promise<number>((r) => (started = r));
  let held = false;
  (fs as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    if (!held && pick(args)) {
      held = true;
      started(args[0] as number);
      void released.then(() => inner(...args));
    } else inner(...args);
  };
  return { started: startedP, release };
}

/** One record per file: a second never fits (the first file also holds open's marker, a rotated one its fence). */
function openJournal(dir: string): Journal {
  return openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES - 1 });
}

/** Lets every write and claim marker that maybeRemove waits on land, then the turn after it. */
async function settle(j: Journal): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await Promise.allSettled([...(j as unknown as { pendingWrites: Set<Promise<void>> }).pendingWrites]);
    await new Promise((r) => setImmediate(r));
  }
}

test('a file whose records are destaged during a FLUSH is closed after that FLUSH\'s fdatasync, which succeeds', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-remove-sync-');
  const { ops, closeOf } = observeFs(t);
  const j = openJournal(dir);
  t.after(() => j.close());
  // Open closes a directory descriptor whose number a journal file may reuse: observe from here.
  ops.length = 0;
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  const sync = holdNext('fdatasync', () => true);
  const flush = j.sync();
  const fd = await sync.started;
  // The next write rotates to a new file; then the first file's only record is destaged.
  await j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  await settle(j);
  const closedUnderSync = ops.some((o) => o.op === 'close' && o.fd === fd);
  const closedNow = closeOf(fd);
  sync.release();
  assert.equal(closedUnderSync, false, 'the file was closed under the running fdatasync');
  await flush;
  // The removal fdatasyncs the file before it closes it (journal-power-loss): waited for by its close, not by turns.
  await closedNow;
  const syncDone = ops.findIndex((o) => o.op === 'fdatasync-done' && o.fd === fd);
  const closed = ops.findIndex((o) => o.op === 'close' && o.fd === fd);
  assert.ok(syncDone >= 0 && closed > syncDone, `fdatasync then close: ${JSON.stringify(ops)}`);
  assert.equal(ops[syncDone]!.err, undefined);
  // The journal did not fail: it takes and syncs more writes.
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  await j.sync();
});

test('a file whose records are destaged before their writev lands is closed after the writev, which lands', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-remove-write-');
  const { ops, nextLoneMarker, closeOf } = observeFs(t);
  const j = openJournal(dir);
  t.after(() => j.close());
  // Open closes a directory descriptor whose number a journal file may reuse: observe from here.
  ops.length = 0;
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(1));
  await j.sync();
  // Write 2 goes to a second file (rotation); its writev is held.
  const write = holdNext('writev', (args) => (args[1] as Buffer[]).some((b) => b.length === BLOCK_BYTES));
  const appended = j.append(RecordType.Write, 1, MiB, BLOCK_BYTES, block(2));
  const fd = await write.started;
  // Write 3 rotates again; a destage then releases write 2 while its writev is still held.
  await j.append(RecordType.Write, 1, 2 * MiB, BLOCK_BYTES, block(3));
  // Write 2's file carried the first sync's marker: its removal first writes a claim
  // marker into the head, and (before the fix) closed the file once that landed.
  const claim = nextLoneMarker();
  const closedNow = closeOf(fd);
  j.release(1, 1, Number.MAX_SAFE_INTEGER);
  await Promise.race([claim, closedNow]);
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const closedUnderWrite = ops.some((o) => o.op === 'close' && o.fd === fd);
  write.release();
  assert.equal(closedUnderWrite, false, 'the file was closed under the running writev');
  await appended;
  // The removal fdatasyncs the file before it closes it (journal-power-loss): waited for by its close, not by turns.
  await closedNow;
  const landed = ops.findIndex((o) => o.op === 'writev-done' && o.fd === fd && o.err === undefined);
  const closed = ops.findIndex((o) => o.op === 'close' && o.fd === fd);
  assert.ok(landed >= 0 && closed > landed, `writev then close: ${JSON.stringify(ops)}`);
  await j.sync();
});
