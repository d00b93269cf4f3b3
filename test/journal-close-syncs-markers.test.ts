// A clean stop leaves the last sync's marker durable however it was written: by
// close itself, by the 50 ms marker timer, or on a later append's writev. Before,
// close fdatasynced only a marker it wrote itself; one the timer or an append had
// written stayed in the page cache, and a power cut after the stop lost the cover
// of the flushed writes (damage to them before the next start would then be judged
// a crash cut). The syscalls are observed by wrapping fs.writev / fs.fdatasync,
// which journal.ts calls through the `fs` module object (as review-sync-fault does).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { JOURNAL_HEADER_BYTES, RecordType, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, openTestJournal } from './helpers/journal.js';

const realFdatasync = fs.fdatasync;
const realWritev = fs.writev;

interface Trace {
  /** Every writev and fdatasync, in the order they completed, with the fd and the bytes asked. */
  events: { op: 'writev' | 'fdatasync'; fd: number; bytes: number }[];
  /** Resolves when a writev of exactly one marker (JOURNAL_HEADER_BYTES, alone) has landed. */
  loneMarker: Promise<number>;
}

function traceFs(t: TestContext): Trace {
  const events: Trace['events'] = [];
  let markerLanded!: (fd: number) => void;
  const loneMarker = new Promise<number>((r) => (markerLanded = r));
  fs.writev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView[]) => void) => {
    const bytes = bufs.reduce((n, b) => n + b.byteLength, 0);
    realWritev(fd, bufs, pos, (err, n, b) => {
      events.push({ op: 'writev', fd, bytes });
      if (!err && bytes === JOURNAL_HEADER_BYTES) markerLanded(fd);
      cb(err, n, b);
    });
  }) as typeof fs.writev;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    realFdatasync(fd, (err) => {
      events.push({ op: 'fdatasync', fd, bytes: 0 });
      cb(err);
    });
  }) as typeof fs.fdatasync;
  t.after(() => {
    fs.writev = realWritev;
    fs.fdatasync = realFdatasync;
  });
  return { events, loneMarker };
}

/** True if fd was fdatasynced after its last writev completed. */
function syncedAfterLastWrite(events: Trace['events'], fd: number): boolean {
  let lastWrite = -1;
  let lastSync = -1;
  events.forEach((e, i) => {
    if (e.fd !== fd) return;
    if (e.op === 'writev') lastWrite = i;
    else lastSync = i;
  });
  return lastWrite >= 0 && lastSync > lastWrite;
}

/** A fresh journal in `prefix`, traced from its open, with one write (every byte `fill`) flushed: that sync's marker is pending. */
async function flushedUnderTrace(t: TestContext, prefix: string, fill: number): Promise<{ j: Journal; trace: Trace }> {
  const dir = tempDir(t, prefix);
  const trace = traceFs(t);
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, fill));
  await j.sync();
  return { j, trace };
}

test('a marker the 50 ms timer wrote is fdatasynced by close', async (t) => {
  const { j, trace } = await flushedUnderTrace(t, 'couchestor-journal-close-timer-marker-', 0x21);
  // No append follows: the timer writes the marker alone. Its timer is unref'd (it must not
  // hold a daemon open): a ref'd handle keeps this test's event loop alive until it fires.
  const keepAlive = setInterval(() => undefined, 1000);
  const fd = await trace.loneMarker.finally(() => clearInterval(keepAlive));
  assert.equal(syncedAfterLastWrite(trace.events, fd), false, 'nothing synced the marker before the stop');
  await j.close();
  assert.ok(syncedAfterLastWrite(trace.events, fd), `close left the timer's marker unsynced: ${JSON.stringify(trace.events.filter((e) => e.fd === fd))}`);
});

test('a marker that rode on an append is fdatasynced by close', async (t) => {
  const { j, trace } = await flushedUnderTrace(t, 'couchestor-journal-close-ridden-marker-', 0x31);
  // The next append carries the pending marker in its writev (before the timer fires).
  await j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x32));
  const carrier = trace.events.filter((e) => e.op === 'writev').at(-1)!;
  assert.equal(carrier.bytes, JOURNAL_HEADER_BYTES + JOURNAL_HEADER_BYTES + BLOCK_BYTES, 'the marker rode on the append');
  await j.close();
  assert.ok(syncedAfterLastWrite(trace.events, carrier.fd), 'close left the ridden marker unsynced');
});
