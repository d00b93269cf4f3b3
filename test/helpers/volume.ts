// Helpers for in-process volume tests: a VolumeManager with one hot pool and
// six cold pools whose destager runs only when the test asks, and promise
// wrappers around Volume's callback read/write (a flushed random volume, a
// client's racing block writes); the temp-dir fixture and the
// index-commit fault the fault-injection tests share; the journal-file
// removal watch of the discard-ordering tests; the cold tier with a
// compactor and object store that the sliced-compaction tests open.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import { HeatTracker } from '../../src/control/heat.js';
import { SegmentCompactor } from '../../src/dataplane/ec/compaction.js';
import { ObjectStore } from '../../src/dataplane/objects/store.js';
import { parseJournalFileName } from '../../src/dataplane/journal/journal.js';
import { parsePolicyYaml } from '../../src/dataplane/ec/policy.js';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import type { Volume } from '../../src/dataplane/volumes/volume.js';
import type { VolumeRecord } from '../../src/dataplane/meta/store.js';

const MiB = 1024 * 1024;
/** The default 4+2 policy's pool count: cold-0 .. cold-5. */
const COLD_POOLS = 6;

/** A manager over `<dir>/meta` with one 64 MiB hot pool, hot-0 (the heat tests' index and pool). */
export async function openHotManager(dir: string): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  return m;
}

/** Opens a VolumeManager in `dir/meta` (adding hot-0 and cold-0..5 when `create`) with the cold tier started and destaging left to explicit destager.drain()/migration calls (and the journal's threshold: `tier` may set it and the journal's size). */
export async function openColdTierManager(dir: string, create = true, tier: { journalCapacityBytes?: number; thresholdPercent?: number } = {}): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  if (create) {
    const capacityBytes = 1024 * MiB;
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes, labels: { tier: 'hot' } });
    for (let i = 0; i < COLD_POOLS; i++) {
      await m.putPool({ name: `cold-${i}`, path: path.join(dir, `cold-${i}`), tier: 'cold', capacityBytes, labels: { tier: 'cold' } });
    }
  }
  // An hour: tests call the destager's entry points themselves, at the moment they choose.
  m.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, COLD_POOLS), { intervalMs: 3_600_000, thresholdPercent: 90, concurrency: 2, ...tier });
  return m;
}

/**
 * The cold tier of openColdTierManager with 1 MiB segments (3 shard records
 * each, so most are sealed and compactable), a SegmentCompactor reading one
 * index entry a slice (no timer), and the ObjectStore. `wrapIndex` may
 * replace `m.meta.openDB` to observe the databases the compactor opens; the
 * real one is restored before the object store opens its own.
 */
export async function openCompactionTier(dir: string, create: boolean, wrapIndex: (m: VolumeManager) => void = () => undefined) {
  const m = await openColdTierManager(dir, create);
  const openDB = m.meta.openDB;
  wrapIndex(m);
  // Before any segment store opens.
  m.cold!.stripes.segmentOptions = { segmentSizeBytes: MiB };
  const compactor = new SegmentCompactor(m.cold!.stripes, m.meta, () => m.openVolumes(), { intervalMs: 0, deadFraction: 0.01, recountSliceEntries: 1 });
  m.meta.openDB = openDB;
  const store = await ObjectStore.open(m, m.cold!.stripes);
  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      await compactor.stop();
      await m.close();
    })());
  return { m, compactor, store, close };
}

/** Adds pool hot-1 (in `dir`) and creates cold volume `name` placed on it, so the tests can take that pool away alone; returns hot-1's path. */
export async function coldVolumeOnHot1(m: VolumeManager, dir: string, name: string, sizeBytes = 2 * MiB): Promise<string> {
  const hot1 = path.join(dir, 'hot-1');
  await m.putPool({ name: 'hot-1', path: hot1, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  await m.createVolume({ name, sizeBytes, tier: 'cold', pool: 'hot-1' });
  return hot1;
}

/**
 * Cold volumes a (on hot-1, coldVolumeOnHot1) and b (on hot-0), 2 MiB of random
 * bytes each, destaged; then a restart (`m` closed, the manager opened again
 * with neither volume open) and hot-1 renamed away to `${hot1}.gone`, as when
 * its disk drops out. Returns the new manager, hot-1's path and the bytes.
 */
export async function coldPairWithHot1Offline(m: VolumeManager, dir: string): Promise<{ m: VolumeManager; hot1: string; want: Map<string, Buffer> }> {
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await m.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const want = new Map<string, Buffer>();
  for (const name of ['a', 'b']) {
    want.set(name, crypto.randomBytes(2 * MiB));
    await writeVolume(m.openVolume(name), 0, want.get(name)!);
  }
  await m.cold!.destager.drain();
  await m.close();
  const again = await openColdTierManager(dir, false);
  fs.renameSync(hot1, `${hot1}.gone`);
  return { m: again, hot1, want };
}

/** A restart in process: closes `m`, opens the manager over `dir` again (its journal starts a fresh head file) and opens volume `name`. */
export async function restartManager(m: VolumeManager, dir: string, name: string): Promise<{ m: VolumeManager; vol: Volume }> {
  await m.close();
  const again = await openColdTierManager(dir, false);
  return { m: again, vol: again.openVolume(name) };
}

/** Writes `data` at `offsetBytes` (not FUA) and resolves once the volume acknowledges it. */
export function writeVolume(vol: Volume, offsetBytes: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => vol.write(offsetBytes, data, false, (err) => (err ? reject(err) : resolve())));
}

/** Reads `lengthBytes` at `offsetBytes` into a fresh buffer. */
export function readVolume(vol: Volume, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const dst = Buffer.alloc(lengthBytes);
  return new Promise((resolve, reject) => vol.read(offsetBytes, lengthBytes, dst, 0, (err) => (err ? reject(err) : resolve(dst))));
}

/**
 * Creates volume `name` of `sizeBytes` on hot-0, writes random bytes over
 * all of it and flushes; returns the open volume and the bytes it must read back.
 */
export async function flushedRandomVolume(m: VolumeManager, name: string, sizeBytes: number): Promise<{ vol: Volume; want: Buffer }> {
  await m.createVolume({ name, sizeBytes, pool: 'hot-0' });
  const vol = m.openVolume(name);
  const want = crypto.randomBytes(sizeBytes);
  await writeVolume(vol, 0, want);
  await vol.flush();
  return { vol, want };
}

/**
 * A client racing something: random 4 KiB blocks written to `vol` at
 * `pickAtBytes()`, each copied into `want` (what the volume must read back),
 * until `settled()` and at least 8 writes. Resolves to the number written.
 */
export async function raceBlockWrites(vol: Volume, want: Buffer, pickAtBytes: () => number, settled: () => boolean): Promise<number> {
  let n = 0;
  for (; !settled() || n < 8; n++) {
    const block = crypto.randomBytes(4096);
    const at = pickAtBytes();
    block.copy(want, at);
    await writeVolume(vol, at, block);
  }
  return n;
}

/**
 * Opens a manager (`open`) in a fresh temp dir named `prefix`...; when test
 * `t` ends, `restore` runs first (it puts back the fs functions the test
 * wrapped, so the close does not run into an injected fault), then the
 * manager is closed (a close that fails is ignored) and the dir removed.
 */
export async function tempManager<M extends { close(): Promise<unknown> }>(t: TestContext, prefix: string, open: (dir: string) => Promise<M>, restore: () => void = () => undefined): Promise<{ dir: string; m: M }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const m = await open(dir);
  t.after(async () => {
    restore();
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, m };
}

/**
 * In a temp dir named `prefix` (as tempManager): a manager with one hot pool (hot-0, 64 MiB) and no cold tier, its
 * 1 MiB volume v open, and a HeatTracker over it (retention `retentionMs`, a sample every `sampleMs`) for the test to
 * drive with explicit sample times.
 */
export async function heatTrackedVolume(t: TestContext, prefix: string, retentionMs: number, sampleMs: number): Promise<{ m: VolumeManager; vol: Volume; heat: HeatTracker }> {
  const { m } = await tempManager(t, prefix, async (dir) => {
    const opened = VolumeManager.open(path.join(dir, 'meta'));
    await opened.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
    return opened;
  });
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  return { m, vol: m.openVolume('v'), heat: new HeatTracker(m, retentionMs, sampleMs) };
}

/**
 * For tests that reopen their manager: a fresh temp dir named `prefix`...;
 * when test `t` ends, `restore` runs first, then the manager `current()`
 * returns then is closed (a close that fails, or no manager yet, is ignored)
 * and the dir removed.
 */
export function tempDirClosing(t: TestContext, prefix: string, current: () => { close(): Promise<unknown> }, restore: () => void = () => undefined): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(async () => {
    restore();
    await Promise.resolve()
      .then(() => current().close())
      .catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Makes the index's next durable() see a failed LMDB commit (what lmdb-js's `flushed` does when a commit fails), once. */
export function failNextIndexCommit(meta: object): void {
  const root = (meta as { root: { flushed: PromiseLike<unknown> } }).root;
  const real = root.flushed;
  root.flushed = {
    then(ok, bad) {
      root.flushed = real;
      return Promise.reject(Object.assign(new Error('MDB_PANIC: commit failed (injected)'), { code: 'EIO' })).then(ok, bad);
    },
  };
}

/** The cold tier's older journal file, right after a restart started a fresh head file (exactly two files). */
export function oldJournalFile(m: VolumeManager): string {
  const journalDir = m.cold!.journal.dir;
  // Journal files only (parseJournalFileName: not the downgrade guard directory).
  const files = fs.readdirSync(journalDir).filter((n) => parseJournalFileName(n) !== null).sort();
  assert.equal(files.length, 2, `journal files: ${files.join(',')}`);
  return path.join(journalDir, files[0]!);
}

/**
 * Wraps fs.rm: an rm of `file` logs 'rm-journal-file' into `events`, and the
 * returned promise resolves once that rm finished. The test puts fs.rm back
 * when it ends.
 */
export function watchRm(file: string, events: string[]): Promise<void> {
  const realRm = fs.rm;
  let removed!: () => void;
  const fileRemoved = new Promise<void>((r) => (removed = r));
  fs.rm = ((p: fs.PathLike, opts: fs.RmOptions, cb: fs.NoParamCallback) => {
    if (String(p) === file) {
      events.push('rm-journal-file');
      return realRm(p, opts, (err) => {
        removed();
        cb(err);
      });
    }
    return realRm(p, opts, cb);
  }) as typeof fs.rm;
  return fileRemoved;
}

/**
 * Reads an event log of 'put-discarded', 'durable-start#i' / 'durable-done#i'
 * and 'rm-journal-file': where the put and the rm are, and whether a
 * durable() both started and finished between them.
 */
export function durableBetweenPutAndRm(events: string[]): { put: number; rm: number; durableBetween: boolean } {
  const put = events.indexOf('put-discarded');
  const rm = events.indexOf('rm-journal-file');
  const durableBetween = events.slice(put + 1, rm).some((e, i, between) => e.startsWith('durable-start') && between.slice(i + 1).includes(e.replace('start', 'done')));
  return { put, rm, durableBetween };
}

/**
 * Holds manager `m`'s next volume delete at its index write (past its in-use
 * check, isBeingDeleted true, the record still there): `atIndex` resolves
 * once it got there, `release()` lets it go on, `restore()` puts the real
 * index delete back (call it once the delete is released).
 */
export function holdIndexDelete(m: VolumeManager): { atIndex: Promise<void>; release: () => void; restore: () => void } {
  const meta = m.meta as unknown as { deleteVolume(rec: VolumeRecord): Promise<void> };
  const real = meta.deleteVolume.bind(meta);
  let entered!: () => void;
  const atIndex = new Promise<void>((r) => (entered = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  meta.deleteVolume = async (rec) => {
    entered();
    await gate;
    return real(rec);
  };
  return { atIndex, release, restore: () => (meta.deleteVolume = real) };
}
