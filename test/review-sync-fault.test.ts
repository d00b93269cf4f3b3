// Review (group commit under fdatasync faults and in-flight appends): a FLUSH
// may report success only if every write acknowledged before it was made
// durable by an fdatasync that started after the write landed, and never
// once an fdatasync covering it failed (Linux reports a writeback error once
// per open file, then clears it: a later fdatasync of the same descriptor
// succeeds although the pages were dropped). The faults are injected in
// process by wrapping fs.fdatasync / fs.writev, which journal.ts and
// volume.ts call through the `fs` module object. The first three cases
// failed before 8dceda5 (at ecf0f2d), which fixed them; the fourth is
// coverage (passed there); the fifth and sixth (an fdatasync that succeeds
// beside one of the same file that failed) failed at a4ccea6; the seventh
// and eighth (a failed index commit: lmdb-js rejects only that commit's
// waiters) failed at a29860d.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, RecordType } from '../src/dataplane/journal/journal.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { failNextIndexCommit, openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

type SyncCb = (err: NodeJS.ErrnoException | null) => void;
type WritevCb = (err: NodeJS.ErrnoException | null, bytes: number, bufs: NodeJS.ArrayBufferView[]) => void;

const realFdatasync = fs.fdatasync;
const realWritev = fs.writev;

function eio(): NodeJS.ErrnoException {
  return Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' });
}

/** Puts back the fs functions a test wrapped. */
function restoreFs(): void {
  fs.fdatasync = realFdatasync;
  fs.writev = realWritev;
}

/** A journal in a fresh temp dir; when the test ends fs is restored, the journal closed and the dir removed. */
function tempJournal(t: TestContext, prefix: string): Journal {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const j = Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true });
  t.after(async () => {
    restoreFs();
    await j.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return j;
}

/** A 4 MiB hot volume 'v' in a fresh cold-tier manager (see tempManager: fs is restored when the test ends). */
async function hotVolume(t: TestContext, prefix: string) {
  const { m } = await tempManager(t, prefix, openColdTierManager, restoreFs);
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'hot' });
  return { m, vol: m.openVolume('v') };
}

/** The first fdatasync is held until failFirst(), then fails with EIO; later ones run. */
function holdFirstFdatasyncThenFail(): { failFirst: () => void; calls: () => number } {
  let failFirst!: () => void;
  const held = new Promise<void>((r) => (failFirst = r));
  let calls = 0;
  fs.fdatasync = ((fd: number, cb: SyncCb) => {
    if (++calls === 1) void held.then(() => cb(eio()));
    else realFdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  return { failFirst, calls: () => calls };
}

test('journal: a FLUSH queued behind an fdatasync that fails with EIO fails too, and so does every later one', async (t) => {
  const j = tempJournal(t, 'couchestor-review-sync-fault-');
  // Client A's write, acknowledged (not yet durable).
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0xa1));
  // The first fdatasync is held, then fails; later ones behave like Linux
  // after it reported the error: they succeed.
  const { failFirst, calls } = holdFirstFdatasyncThenFail();
  // Client B's FLUSH starts the sync that covers A's write ...
  const flushB = j.sync();
  // ... and A's FLUSH arrives while it runs: it shares the next sync.
  const flushA = j.sync();
  failFirst();
  await assert.rejects(flushB, /journal I\/O failed/);
  await assert.rejects(flushA, /journal I\/O failed/, "A's FLUSH reported success although the fdatasync covering its write failed");
  await assert.rejects(j.sync(), /journal I\/O failed/);
  await assert.rejects(j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 1)), /journal I\/O failed/);
});

test('journal: a FLUSH after an append that landed during another sync issues an fdatasync after that append landed', async (t) => {
  const j = tempJournal(t, 'couchestor-review-sync-order-');
  // Event log: which appends had landed when each fdatasync was issued.
  const landed = new Set<string>();
  const syncs: string[][] = [];
  fs.fdatasync = ((fd: number, cb: SyncCb) => {
    syncs.push([...landed]);
    realFdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  // W1's writev is held in the thread pool (queued behind other work) until released.
  let releaseW1!: () => void;
  const w1Held = new Promise<void>((r) => (releaseW1 = r));
  let writes = 0;
  fs.writev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: WritevCb) => {
    const name = `W${writes++}`;
    const go = () =>
      realWritev(fd, bufs, pos, (err, n, b) => {
        if (!err) landed.add(name);
        cb(err, n, b);
      });
    if (name === 'W1') void w1Held.then(go);
    else go();
  }) as typeof fs.writev;

  const w0 = j.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0xb0));
  // A FLUSH for W0 starts while W0 is in flight (it waits for W0 to land) ...
  const s1 = j.sync();
  // ... and W1 is appended meanwhile; its writev has not run when S1's fdatasync is issued.
  const w1 = j.append(RecordType.Write, 1, BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0xb1));
  await w0;
  await s1;
  assert.ok(!landed.has('W1'), 'W1 was still held when S1 finished');
  releaseW1();
  await w1; // W1 acknowledged
  const before = syncs.length;
  await j.sync(); // the FLUSH after W1
  const after = syncs.slice(before);
  assert.ok(
    after.some((seen) => seen.includes('W1')),
    `the FLUSH after W1 reported success without an fdatasync issued after W1 landed (fdatasyncs, with the appends landed at each: ${JSON.stringify(syncs)})`,
  );
});

test('volume: an fdatasync that fails while zeroing a Discarded chunk takes the volume offline; a later FLUSH fails', async (t) => {
  const { vol } = await hotVolume(t, 'couchestor-review-sync-zero-');
  // Chunk 1 written, then trimmed: Discarded, its stale bytes still in the file.
  await writeVolume(vol, MiB, Buffer.alloc(MiB, 0x11));
  await vol.trim(MiB, MiB, true);
  assert.equal(vol.chunkState[1], ChunkState.Discarded);
  // An acknowledged, not yet flushed write to chunk 0.
  await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x22));
  // Its writeback fails: the next fdatasync of the file reports EIO (once).
  let failed = 0;
  fs.fdatasync = ((fd: number, cb: SyncCb) => {
    if (failed++ === 0) return process.nextTick(() => cb(eio()));
    realFdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  // A write into the Discarded chunk zeroes it and syncs the zeros: that fdatasync gets the EIO.
  await assert.rejects(writeVolume(vol, MiB + BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33)));
  assert.equal(failed, 1, 'the zeroing fdatasync was the one that failed');
  // The FLUSH for the chunk 0 write must not succeed: its pages may be gone.
  await assert.rejects(vol.flush(), /fdatasync|offline|failed/i, 'FLUSH reported success after an fdatasync of the file failed');
  await assert.rejects(readVolume(vol, 0, BLOCK_BYTES));
});

test('volume: an fdatasync EIO reaches the FLUSH that started it and every FLUSH queued behind it; later FLUSHes and writes fail (coverage, passed at HEAD)', async (t) => {
  const { vol } = await hotVolume(t, 'couchestor-review-sync-volume-');
  await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x44));
  const { failFirst, calls } = holdFirstFdatasyncThenFail();
  const first = vol.flush();
  // Writes acknowledged while the first sync runs, then their FLUSHes: they share the next sync.
  await writeVolume(vol, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x45));
  const queued = [vol.flush(), vol.flush(), vol.flush()];
  failFirst();
  const settled = await Promise.allSettled([first, ...queued]);
  assert.deepEqual(
    settled.map((s) => s.status),
    ['rejected', 'rejected', 'rejected', 'rejected'],
    'every FLUSH sharing or queued behind the failed sync reports the error',
  );
  assert.equal(calls(), 1, 'the queued sync did not retry fdatasync on the failed file');
  await assert.rejects(vol.flush(), /fdatasync/);
  await assert.rejects(writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x46)), /fdatasync/);
});

test('volume: a FLUSH whose fdatasync ran beside one that failed on the same file fails (the kernel reports the error to one of them only)', async (t) => {
  const { vol } = await hotVolume(t, 'couchestor-review-sync-beside-');
  await writeVolume(vol, MiB, Buffer.alloc(MiB, 0x11));
  await vol.trim(MiB, MiB, true);
  assert.equal(vol.chunkState[1], ChunkState.Discarded);
  // An acknowledged write whose writeback will fail.
  await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x22));
  // The FLUSH's fdatasync is slow and, when it returns, succeeds: the EIO
  // went to the other fdatasync of the file, issued while it ran.
  let releaseFlushSync!: () => void;
  const flushSyncHeld = new Promise<void>((r) => (releaseFlushSync = r));
  let calls = 0;
  fs.fdatasync = ((fd: number, cb: SyncCb) => {
    const n = ++calls;
    if (n === 1) void flushSyncHeld.then(() => realFdatasync(fd, cb));
    else if (n === 2) process.nextTick(() => cb(eio()));
    else realFdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  const flush = vol.flush();
  // A write into the Discarded chunk zeroes it and syncs the file: that fdatasync gets the EIO.
  await assert.rejects(writeVolume(vol, MiB + BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33)));
  assert.equal(calls, 2);
  releaseFlushSync();
  await assert.rejects(flush, /fdatasync|offline/i, "the FLUSH reported success although the file's writeback failed while it ran");
});

test("volume: a chunk's zeroing sync that ran beside a failed FLUSH sync does not make the chunk data", async (t) => {
  const { vol } = await hotVolume(t, 'couchestor-review-sync-beside2-');
  await writeVolume(vol, MiB, Buffer.alloc(MiB, 0x11));
  await vol.trim(MiB, MiB, true);
  await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x22));
  let releaseZeroSync!: () => void;
  const zeroSyncHeld = new Promise<void>((r) => (releaseZeroSync = r));
  let zeroSyncIssued!: () => void;
  const issued = new Promise<void>((r) => (zeroSyncIssued = r));
  let calls = 0;
  fs.fdatasync = ((fd: number, cb: SyncCb) => {
    const n = ++calls;
    if (n === 1) {
      zeroSyncIssued();
      void zeroSyncHeld.then(() => realFdatasync(fd, cb));
    } else if (n === 2) process.nextTick(() => cb(eio()));
    else realFdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  const write = writeVolume(vol, MiB + BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x33));
  await issued; // the zeroing's fdatasync runs ...
  await assert.rejects(vol.flush(), /fdatasync/); // ... when the FLUSH's gets the EIO
  releaseZeroSync();
  await assert.rejects(write, /fdatasync|offline/i, 'the write into the zeroed chunk was acknowledged after the file failed');
  assert.equal(vol.chunkState[1], ChunkState.Discarded, 'the chunk became data although the sync of its zeros may have lost them');
});

test('volume: a FLUSH after one whose index commit failed fails too (the chunk entries it covered were never made durable)', async (t) => {
  const { m, vol } = await hotVolume(t, 'couchestor-review-sync-meta-');
  // A write to a fresh chunk: its data is in the file, its chunk entry in the index commit.
  await writeVolume(vol, 2 * MiB, Buffer.alloc(BLOCK_BYTES, 0x55));
  failNextIndexCommit(m.meta);
  await assert.rejects(vol.flush(), /commit failed/);
  await assert.rejects(vol.flush(), /commit failed|offline|failed/i, 'a later FLUSH reported the write durable although the commit of its chunk entry failed');
});

test('index: durable() after a failed commit keeps failing', async (t) => {
  const { m } = await tempManager(t, 'couchestor-review-sync-meta2-', openColdTierManager);
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'hot' });
  failNextIndexCommit(m.meta);
  await assert.rejects(m.meta.durable(), /commit failed/);
  await assert.rejects(m.meta.durable(), /commit failed/, 'durable() resolved after a commit failed: its writes are not on disk');
});
