// FLUSH skips the fdatasync of a volume file nothing landed in since its last
// successful sync (volume.ts: VolumeFile.mutations / syncedMutations), and
// never skips one that any dirtying operation touched. Observed through the
// `fs` module object volume.ts calls (fs.write/writeSync/ftruncate/fdatasync,
// by the path each descriptor names) plus the hole punch's completion: for
// each operation, the file is first shown clean (a FLUSH issues no fdatasync
// on it, so the skip is live), then after the operation the FLUSH must not
// resolve before an fdatasync of that file issued after the operation's last
// change to it has completed.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { VolumeFailed } from '../src/dataplane/errors.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { openColdTierManager, writeVolume, readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 4;

type Sync = { file: string; issuedAt: number; doneAt: number | null };

/** Logs file changes and fdatasyncs by path, on one clock. */
class SyncLog {
  clock = 0;
  /** Clock at the last completed change, per file. */
  readonly changed = new Map<string, number>();
  readonly syncs: Sync[] = [];
  /** When set, the next fdatasync of this file fails with EIO (not issued). */
  failNextSyncOf: string | null = null;
  private readonly real = { write: fs.write, writeSync: fs.writeSync, ftruncate: fs.ftruncate, fdatasync: fs.fdatasync };

  install(t: TestContext): void {
    const log = this;
    const where = (fd: number) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return `fd:${fd}`;
      }
    };
    fs.write = ((fd: number, ...args: unknown[]) => {
      const file = where(fd);
      const cb = args.pop() as (...a: unknown[]) => void;
      return (log.real.write as (...a: unknown[]) => void)(fd, ...args, (...res: unknown[]) => {
        log.changed.set(file, ++log.clock);
        cb(...res);
      });
    }) as typeof fs.write;
    fs.writeSync = ((fd: number, ...args: unknown[]) => {
      try {
        return (log.real.writeSync as (...a: unknown[]) => number)(fd, ...args);
      } finally {
        log.changed.set(where(fd), ++log.clock);
      }
    }) as typeof fs.writeSync;
    fs.ftruncate = ((fd: number, len: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      const file = where(fd);
      log.real.ftruncate(fd, len, (err) => {
        log.changed.set(file, ++log.clock);
        cb(err);
      });
    }) as typeof fs.ftruncate;
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      const s: Sync = { file: where(fd), issuedAt: ++log.clock, doneAt: null };
      log.syncs.push(s);
      if (log.failNextSyncOf === s.file) {
        log.failNextSyncOf = null;
        const err = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 });
        setImmediate(() => {
          s.doneAt = ++log.clock;
          cb(err);
        });
        return;
      }
      log.real.fdatasync(fd, (err) => {
        s.doneAt = ++log.clock;
        cb(err);
      });
    }) as typeof fs.fdatasync;
    t.after(() => Object.assign(fs, log.real));
  }

  /** A change to `file` that completed outside the `fs` calls logged here (a hole punch). */
  changedNow(file: string): void {
    this.changed.set(file, ++this.clock);
  }

  /** fdatasyncs of `file` issued while fn ran. */
  async syncsDuring(file: string, fn: () => Promise<unknown>): Promise<Sync[]> {
    const from = this.syncs.length;
    await fn();
    return this.syncs.slice(from).filter((s) => s.file === file);
  }

  /**
   * Flushes `vol` and asserts `file` is durable: some fdatasync of it was
   * issued after its last change and completed before the FLUSH resolved.
   */
  async assertFlushSyncs(vol: Volume, file: string, what: string): Promise<void> {
    const changedAt = this.changed.get(file);
    assert.ok(changedAt !== undefined, `${what}: the operation changed ${path.basename(file)}`);
    await vol.flush();
    const resolvedAt = ++this.clock;
    const covering = this.syncs.find((s) => s.file === file && s.issuedAt > changedAt && s.doneAt !== null && s.doneAt < resolvedAt);
    assert.ok(covering, `${what}: FLUSH resolved with ${path.basename(file)} changed at ${changedAt} and no fdatasync of it issued after that (${JSON.stringify(this.syncs.filter((s) => s.file === file).slice(-3))})`);
  }

  /** Asserts `file` is clean: a FLUSH issues no fdatasync on it. */
  async assertFlushSkips(vol: Volume, file: string, what: string): Promise<void> {
    const syncs = await this.syncsDuring(file, () => vol.flush());
    assert.equal(syncs.length, 0, `${what}: FLUSH of a clean ${path.basename(file)} issued ${syncs.length} fdatasync(s)`);
  }
}

/** A cold-tier manager (hot-0, cold-0..5) plus warm-0, in a temp dir removed after the test. */
async function manager(t: TestContext): Promise<{ m: VolumeManager; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-flush-clean-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  return { m, dir };
}

/** Hot volume `v` of CHUNKS MiB on hot-0, written with random bytes and flushed; returns it, its file and the bytes it must read. */
async function hotVolume(m: VolumeManager): Promise<{ vol: Volume; file: string; want: Buffer }> {
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  return { vol, file: fs.realpathSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id)), want };
}

test('a cold volume: FLUSH after journaled writes syncs the journal and issues no fdatasync on the (clean) volume file', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  await m.createVolume({ name: 'c', sizeBytes: CHUNKS * MiB, tier: 'cold', pool: 'hot-0' });
  const vol = m.openVolume('c');
  const file = fs.realpathSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id));
  // Opened dirty (a previous process's writes may be unsynced): the first FLUSH syncs it once.
  await writeVolume(vol, 0, crypto.randomBytes(4096));
  const first = await log.syncsDuring(file, () => vol.flush());
  assert.equal(first.length, 1, 'the first FLUSH syncs the file it found dirty at open');
  const want = crypto.randomBytes(16 * 4096);
  const from = log.syncs.length;
  for (let i = 0; i < 16; i++) {
    await writeVolume(vol, i * 4096, want.subarray(i * 4096, (i + 1) * 4096));
    await vol.flush();
  }
  const later = log.syncs.slice(from);
  assert.equal(later.filter((s) => s.file === file).length, 0, 'no fdatasync of the cold volume file');
  const journalSyncs = later.filter((s) => s.file !== file && s.file.includes('journal')).length;
  assert.ok(journalSyncs >= 16, `every FLUSH still syncs the journal (${journalSyncs} journal syncs for 16 FLUSHes: ${[...new Set(later.map((s) => s.file))].join(', ')})`);
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
});

test('a hot volume: a FLUSH with no write since the last one issues no fdatasync on its file', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  const { vol, file } = await hotVolume(m);
  await log.assertFlushSkips(vol, file, 'after a synced FLUSH');
  await log.assertFlushSkips(vol, file, 'again');
});

test('every dirtying operation on a hot volume file is synced by the next FLUSH', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  const { vol, file, want } = await hotVolume(m);
  const ops: [string, () => Promise<void>][] = [
    ['a write', async () => {
      const b = crypto.randomBytes(4096);
      await writeVolume(vol, 4096, b);
      b.copy(want, 4096);
    }],
    ['a write on the calling thread (writeSync)', async () => {
      const b = crypto.randomBytes(4096);
      assert.equal(vol.writeSync(MiB + 8192, b), true, 'the idle fast path took it');
      b.copy(want, MiB + 8192);
    }],
    ['a write of zeros', async () => {
      await vol.writeZeroes(2 * MiB + 512, 8192, { noHole: false, fua: false, fastZero: false });
      want.fill(0, 2 * MiB + 512, 2 * MiB + 512 + 8192);
    }],
    ['a write spanning two chunks', async () => {
      const b = crypto.randomBytes(8192);
      await writeVolume(vol, 2 * MiB - 4096, b);
      b.copy(want, 2 * MiB - 4096);
    }],
  ];
  for (const [what, op] of ops) {
    await log.assertFlushSkips(vol, file, `before ${what}`);
    await op();
    await log.assertFlushSyncs(vol, file, what);
  }
  // A chunk a flushed TRIM discarded, written again: zeroed (and synced by the zeroing), then written.
  await vol.trim(3 * MiB, MiB, false);
  await vol.flush();
  want.fill(0, 3 * MiB, 4 * MiB);
  await log.assertFlushSkips(vol, file, 'before rewriting a discarded chunk');
  const b = crypto.randomBytes(4096);
  await writeVolume(vol, 3 * MiB + 4096, b);
  b.copy(want, 3 * MiB + 4096);
  await log.assertFlushSyncs(vol, file, 'a write to a discarded chunk');
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
});

test('a chunk copy (hot -> warm move) into the target file is synced by the next FLUSH, and writes to both files after it too', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  const { vol, file, want } = await hotVolume(m);
  const warm = m.pools.get('warm-0')!;
  await vol.setTier('warm', warm);
  const warmFile = fs.realpathSync(warm.volumeFile(vol.rec.id));
  await vol.flush();
  await log.assertFlushSkips(vol, warmFile, 'the new target file, before any copy');
  await log.assertFlushSkips(vol, file, 'the source file');
  await vol.ensurePromoted(0, true);
  await log.assertFlushSyncs(vol, warmFile, 'a chunk copy');
  await log.assertFlushSkips(vol, file, 'the source file, after the copy read it');
  // Split across two files now: a write to each chunk lands in its own file.
  const b = crypto.randomBytes(4096);
  await writeVolume(vol, 4096, b);
  b.copy(want, 4096);
  await log.assertFlushSyncs(vol, warmFile, 'a write to a copied chunk');
  await log.assertFlushSkips(vol, file, 'the source file, after a write to the other');
  const c = crypto.randomBytes(8192);
  await writeVolume(vol, MiB - 4096, c); // chunk 0 (warm) and chunk 1 (hot): one write per file
  c.copy(want, MiB - 4096);
  await log.assertFlushSyncs(vol, file, 'a write spanning both files (hot part)');
  await log.assertFlushSyncs(vol, warmFile, 'a write spanning both files (warm part)');
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
});

test('a hole punch and a RELEASE truncate of a cold volume file are synced by the next FLUSH', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  const { vol, file, want } = await hotVolume(m);
  await vol.setTier('cold');
  await vol.drainFileMutations();
  await vol.destageChunk(0, true);
  assert.equal(vol.chunkState[0], ChunkState.Cold);
  await vol.flush();
  await log.assertFlushSkips(vol, file, 'before the punch');
  const punched = await vol.punchDeadRanges();
  if (!punched.supported) return t.diagnostic('file system cannot punch holes: punch case not exercised');
  assert.equal(punched.rangesPunched, 1);
  log.changedNow(file);
  await log.assertFlushSyncs(vol, file, 'a hole punch');
  for (let c = 1; c < CHUNKS; c++) await vol.destageChunk(c, true);
  await vol.flush();
  await log.assertFlushSkips(vol, file, 'before RELEASE');
  assert.equal(await vol.releaseFile(), true);
  assert.equal(fs.statSync(file).size, 0);
  await log.assertFlushSyncs(vol, file, 'a RELEASE truncate');
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
});

test('a failed fdatasync fails that FLUSH and every later one, though the file has no newer write (fsyncgate)', async (t) => {
  const log = new SyncLog();
  log.install(t);
  const { m } = await manager(t);
  const { vol, file } = await hotVolume(m);
  await writeVolume(vol, 0, crypto.randomBytes(4096));
  log.failNextSyncOf = file;
  await assert.rejects(vol.flush(), VolumeFailed);
  // Nothing written since: a skip taken on "no newer write" would report the lost pages durable.
  await assert.rejects(vol.flush(), VolumeFailed);
  await assert.rejects(vol.flush(), VolumeFailed);
});
