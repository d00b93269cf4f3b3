// Review of 9c1c962 (FLUSH skips the fdatasync of a volume file with no
// change since its last successful sync). (1) Under concurrent writes (a third
// split across two files), zeroes, chunk moves and FLUSHes, with write and
// fdatasync completions delivered late and out of order, every FLUSH resolves
// only after, for each file, an fdatasync issued after the last change to it
// that had completed when the FLUSH was called. (2) A file deleted and made
// again at the same path by moves, and one reopened by a restart, start dirty.
// Coverage: passes on 9c1c962; fails with the sync recording the count at
// completion instead of at issue, or without the count in writeAll or pwrite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { prng } from './helpers/cold.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 8;
const OPS = 400;
const MAX_IN_FLIGHT = 16;

type Sync = { file: string; issuedAt: number; doneAt: number | null };

/** Deterministic PRNG in [0, 1) (helpers/cold.ts prng, mulberry32): a failure names its seed. */
function rng(seed: number): () => number {
  const next = prng(seed);
  return () => next() / 4294967296;
}

test('concurrent writes, zeroes, chunk moves and FLUSHes: every FLUSH is preceded by a covering fdatasync of each file changed before it', async (t) => {
  const seed = Number(process.env.REVIEW_FLUSH_SEED ?? 0x5eed) >>> 0;
  const rand = rng(seed);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rvfl-'));
  const m = await openColdTierManager(dir);
  const real = { write: fs.write, fdatasync: fs.fdatasync };
  t.after(async () => {
    Object.assign(fs, real);
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, crypto.randomBytes(CHUNKS * MiB));
  await vol.flush();
  const warm = m.pools.get('warm-0')!;
  await vol.setTier('warm', warm);
  // Half the chunks in each file (alternating, so most chunk boundaries are
  // file boundaries too); some of the rest move during the run.
  for (let c = 0; c < CHUNKS; c += 2) await vol.ensurePromoted(c, true);
  await vol.flush();
  const hotFile = fs.realpathSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id));
  const warmFile = fs.realpathSync(warm.volumeFile(vol.rec.id));
  const files = [hotFile, warmFile];

  let clock = 0;
  const changed = new Map<string, number>();
  const syncs: Sync[] = [];
  const where = (fd: number) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return `fd:${fd}`;
    }
  };
  // Completions delivered 0-2 ms late, so writes land while syncs run and
  // syncs finish in another order than issued.
  const late = (fn: () => void) => {
    const ms = Math.floor(rand() * 3);
    if (ms === 0) setImmediate(fn);
    else setTimeout(fn, ms);
  };
  fs.write = ((fd: number, ...args: unknown[]) => {
    const file = where(fd);
    const cb = args.pop() as (...a: unknown[]) => void;
    return (real.write as (...a: unknown[]) => void)(fd, ...args, (...res: unknown[]) =>
      late(() => {
        changed.set(file, ++clock);
        cb(...res);
      }),
    );
  }) as typeof fs.write;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    const s: Sync = { file: where(fd), issuedAt: ++clock, doneAt: null };
    syncs.push(s);
    real.fdatasync(fd, (err) =>
      late(() => {
        s.doneAt = ++clock;
        cb(err);
      }),
    );
  }) as typeof fs.fdatasync;

  let flushes = 0;
  let skipped = 0;
  const checkFlush = async (): Promise<void> => {
    const before = new Map(files.map((f) => [f, changed.get(f)]));
    const from = syncs.length;
    await vol.flush();
    const resolvedAt = ++clock;
    flushes++;
    for (const [file, changedAt] of before) {
      if (changedAt === undefined) continue;
      const covering = syncs.find((s) => s.file === file && s.issuedAt > changedAt && s.doneAt !== null && s.doneAt < resolvedAt);
      assert.ok(covering, `seed ${seed}: FLUSH resolved at ${resolvedAt} with ${path.basename(path.dirname(path.dirname(file)))} changed at ${changedAt} before it was called, and no fdatasync of it issued after that`);
    }
    if (!syncs.slice(from).some((s) => files.includes(s.file))) skipped++;
  };

  const inFlight = new Set<Promise<void>>();
  for (let i = 0; i < OPS; i++) {
    const r = rand();
    let p: Promise<void>;
    if (r < 0.45) {
      // A third straddle two chunks (often in two files: one write per file).
      const straddle = rand() < 0.35;
      const len = straddle ? 8192 : 4096 * (1 + Math.floor(rand() * 2));
      const at = straddle ? (1 + Math.floor(rand() * (CHUNKS - 1))) * MiB - 4096 : Math.floor(rand() * ((CHUNKS * MiB - len) / 4096)) * 4096;
      const b = crypto.randomBytes(len);
      p = new Promise<void>((resolve, reject) => vol.write(at, b, rand() < 0.1, (err) => (err ? reject(err) : resolve())));
    } else if (r < 0.55) {
      const at = Math.floor(rand() * (CHUNKS * MiB / 4096 - 1)) * 4096 + 512;
      p = vol.writeZeroes(at, 2048, { noHole: false, fua: false, fastZero: false });
    } else if (r < 0.57) {
      const c = Math.floor(rand() * CHUNKS);
      p = vol.ensurePromoted(c).catch(() => undefined);
    } else {
      p = checkFlush();
    }
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p)).catch(() => undefined);
    // Bounded; and now and then everything settles, so a FLUSH also runs alone.
    if (inFlight.size >= MAX_IN_FLIGHT || rand() < 0.05) await Promise.all([...inFlight]);
  }
  await Promise.all([...inFlight]);
  await checkFlush();
  t.diagnostic(`seed ${seed}: ${flushes} FLUSHes, ${skipped} with no volume-file fdatasync; chunks on warm: ${[...Array(CHUNKS).keys()].filter((c) => vol.chunkState[c] === ChunkState.Allocated && vol.chunkPool(c).name === 'warm-0').length}`);
  assert.ok(flushes > 50, 'the run issued FLUSHes');
  Object.assign(fs, real);
});

test('a file deleted and made again at the same path (hot -> warm -> hot, each RELEASEd) and a file reopened by a restart: each starts dirty, then skips only while clean', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rvfl-'));
  let m = await openColdTierManager(dir);
  const real = { write: fs.write, fdatasync: fs.fdatasync };
  t.after(async () => {
    Object.assign(fs, real);
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, pool: 'hot-0' });
  let vol = m.openVolume('v');
  await writeVolume(vol, 0, crypto.randomBytes(4 * MiB));
  await vol.flush();
  const hot = m.pools.get('hot-0')!;
  const warm = m.pools.get('warm-0')!;
  const hotFile = fs.realpathSync(hot.volumeFile(vol.rec.id));

  let clock = 0;
  let lastWriteToHot = 0;
  const syncs: { file: string; issuedAt: number; doneAt: number | null }[] = [];
  const where = (fd: number) => fs.readlinkSync(`/proc/self/fd/${fd}`);
  fs.write = ((fd: number, ...args: unknown[]) => {
    const file = where(fd);
    const cb = args.pop() as (...a: unknown[]) => void;
    return (real.write as (...a: unknown[]) => void)(fd, ...args, (...res: unknown[]) => {
      if (file === hotFile) lastWriteToHot = ++clock;
      cb(...res);
    });
  }) as typeof fs.write;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    const s = { file: where(fd), issuedAt: ++clock, doneAt: null as number | null };
    syncs.push(s);
    real.fdatasync(fd, (err) => {
      s.doneAt = ++clock;
      cb(err);
    });
  }) as typeof fs.fdatasync;
  /** fdatasyncs of the (current) hot file issued by one FLUSH, and whether one covers the last write to it. */
  const flushHot = async (): Promise<{ syncs: number; covered: boolean }> => {
    const from = syncs.length;
    const changedAt = lastWriteToHot;
    await vol.flush();
    const resolvedAt = ++clock;
    const mine = syncs.slice(from).filter((s) => s.file === hotFile);
    return { syncs: mine.length, covered: syncs.some((s) => s.file === hotFile && s.issuedAt > changedAt && s.doneAt !== null && s.doneAt < resolvedAt) };
  };

  await vol.setTier('warm', warm);
  for (let c = 0; c < 4; c++) await vol.ensurePromoted(c, true);
  assert.deepEqual((await vol.releaseOtherFiles(false)).map((p) => p.name), ['hot-0']);
  assert.equal(fs.existsSync(hotFile), false, 'RELEASE deleted the hot file');
  await vol.flush();
  // Back to hot: a new file at the same path, a new descriptor.
  await vol.setTier('hot', hot);
  assert.equal((await flushHot()).syncs, 1, 'the new file starts dirty: the first FLUSH syncs it');
  assert.equal((await flushHot()).syncs, 0, 'then clean: skipped');
  for (let c = 0; c < 4; c++) await vol.ensurePromoted(c, true);
  let r = await flushHot();
  assert.ok(r.syncs === 1 && r.covered, `the chunk copies into the new file are synced by the next FLUSH (${JSON.stringify(r)})`);
  assert.equal((await flushHot()).syncs, 0, 'clean after it');
  assert.deepEqual((await vol.releaseOtherFiles(false)).map((p) => p.name), ['warm-0']);
  assert.equal((await flushHot()).syncs, 0, 'still clean after the warm file is RELEASEd');
  const b = crypto.randomBytes(4096);
  await writeVolume(vol, MiB + 4096, b);
  r = await flushHot();
  assert.ok(r.syncs === 1 && r.covered, `a write to the new file is synced by the next FLUSH (${JSON.stringify(r)})`);

  // A restart: the manager's close flushes; the reopened file starts dirty all the same.
  Object.assign(fs, real);
  await m.close();
  m = await openColdTierManager(dir, false);
  vol = m.openVolume('v');
  fs.write = ((...args: unknown[]) => (real.write as (...a: unknown[]) => void)(...args)) as typeof fs.write;
  const from = syncs.length;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    syncs.push({ file: where(fd), issuedAt: ++clock, doneAt: null });
    real.fdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  await vol.flush();
  assert.equal(syncs.slice(from).filter((s) => s.file === hotFile).length, 1, 'the reopened file starts dirty: the first FLUSH syncs it');
  await vol.flush();
  assert.equal(syncs.slice(from).filter((s) => s.file === hotFile).length, 1, 'then skipped');
  assert.deepEqual(await readVolume(vol, MiB + 4096, 4096), b);
});
