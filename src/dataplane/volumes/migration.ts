// Online migration of one volume between tiers, chunk by chunk:
// ANALYZE -> COPY -> VERIFY -> SWITCH (one index transaction per chunk) ->
// RELEASE. The volume serves I/O throughout: once the tier flips, new writes
// follow it (journal for cold, the target pool's file for hot/warm), so a
// chunk written during the copy is carried along by the same mechanism. A
// failure before a chunk's SWITCH leaves that chunk on its old copy; the
// volume's tier is reverted, and the target pool's file closed and deleted
// unless a chunk was switched into it. Hot <-> warm (and cold -> warm) moves
// copy each chunk into the target pool's file the way cold -> hot promotes:
// writes to a chunk wait while it is copied, the index flips per chunk, and
// RELEASE deletes the old pool's file once no chunk is left in it.
import fs from 'node:fs';
import type { Database } from 'lmdb';
import { InvalidArgument, MigrationInProgress, NoSuitablePool, TooFewOnlinePools, VolumeFailed } from '../errors.js';
import { log } from '../../log.js';
import type { Tier, VolumeRecord } from '../meta/store.js';
import type { Pool } from '../pools/pool.js';
import type { VolumeManager } from './manager.js';
import type { Volume } from './volume.js';
import { firstDataOffset } from './seek-data.js';

export type MigrationPhase = 'Analyze' | 'Copy' | 'Release' | 'Done' | 'Failed' | 'Aborted';

export interface MigrationProgress {
  volume: string;
  from: Tier;
  to: Tier;
  /** Pool whose file receives the chunks (hot/warm targets). */
  toPool?: string;
  phase: MigrationPhase;
  chunksTotal: number;
  chunksDone: number;
  bytesCopied: number;
  startedMs: number;
  finishedMs?: number;
  error?: string;
  /** An aborted move to cold: bytes of dead chunk ranges it freed by hole punching (see Volume.punchDeadRanges). */
  bytesPunched?: number;
  /** Set when the file system refused the punch (EOPNOTSUPP): those ranges keep their space until the file is released. */
  punchUnsupported?: boolean;
}

export interface MigrateOptions {
  /** Preservation mode: RELEASE is skipped, the old copy stays on its pool. */
  preserve: boolean;
  signal?: AbortSignal;
  /** Chunks copied at once (default DEFAULT_MIGRATION_CONCURRENCY). */
  concurrency?: number;
  onProgress?: (p: MigrationProgress) => void;
}

/**
 * Chunks copied at once by default. Each chunk's COPY ends in durable writes
 * (six shard appends + an index flush for cold, an fdatasync for hot), and
 * the stores group-commit concurrent appends, so more chunks in flight means
 * fewer syncs per byte (at 16, a pool's group commit held ~5 shard records).
 * Measured on the 2-core dev VM, 512 MiB volume, bench/migration-throughput
 * medians, same hour: hot -> cold 103 / 103 MiB/s at 16 vs 161 / 169 at 32;
 * cold -> hot 141 / 150 vs 230 / 241. 64 was slower (session 2, interleaved
 * runs, hot -> cold vs dd: 0.53 / 0.62 / 0.53x at 64, 0.66 / 0.72 / 0.69x at
 * 32): hot -> cold already writes shards about as fast as the disk takes a
 * raw copy (1.5x bytes for 4+2). UV_THREADPOOL_SIZE=16 was not faster either
 * (0.57 / 0.63 / 0.66x vs 0.60 / 0.77 / 0.51x at the default 4), and it
 * cannot be set from inside an ESM entry: Node 20's loader has started the
 * pool by the time the entry module runs (thread count 11 either way; 23 with
 * the variable set by the parent). Bound: 32 x (1 MiB chunk + 1.5 MiB of
 * shard records + 1.5 MiB read back by VERIFY) = ~128 MiB transient per
 * migration.
 */
export const DEFAULT_MIGRATION_CONCURRENCY = 32;

export class MigrationAborted extends Error {
  override name = 'MigrationAborted';
}

/**
 * Crash-test hook (test/migration-release-after-kill): with
 * COUCHESTOR_TEST_PAUSE_BEFORE_RELEASE=1 in the daemon's environment, a
 * move whose every SWITCH is durable prints `couchestor paused before-release
 * {"volume":...}` on stdout and waits for good, so the test SIGKILLs it at
 * exactly that point (random kill times land in this window about never).
 * Read once at start; unset, it costs one boolean test per move.
 */
const PAUSE_BEFORE_RELEASE = process.env.COUCHESTOR_TEST_PAUSE_BEFORE_RELEASE === '1';
/**
 * The same for an aborted move to cold (test/migration-punch-after-kill):
 * with COUCHESTOR_TEST_PAUSE_BEFORE_PUNCH=1, once its destages are durable
 * and releaseFile found chunks left in the file, the move prints
 * `couchestor paused before-punch {"volume":...}` and waits for good.
 */
const PAUSE_BEFORE_PUNCH = process.env.COUCHESTOR_TEST_PAUSE_BEFORE_PUNCH === '1';

/**
 * Test hook (tests that need a move still running at a later pass or at a
 * stop: control-emergency-stop, review-policy-rename-keying, the users of
 * test/helpers/control-loop.ts bigMoveToColdUnderWay, and
 * serve-stop-aborts-api-migration): with COUCHESTOR_TEST_HOLD_MIGRATION=1, the
 * first move of the process, once its first chunk is switched, prints
 * `couchestor held migration {"volume":...}` and holds its workers until the
 * daemon gets SIGUSR2 (then it runs to its end, as later moves do) or the
 * move is aborted. Read once at start; unset, one boolean test per chunk.
 */
const HOLD_MIGRATION = process.env.COUCHESTOR_TEST_HOLD_MIGRATION === '1';
let migrationHeld: { volume: string; wake: Promise<void>; over: boolean } | null = null;

function holdMigration(volume: string, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
  if (migrationHeld === null) {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const held = { volume, wake: released, over: false };
    // One listener per signal for the whole hold (its workers share it), not one per chunk.
    for (const s of signals) if (s !== undefined) s.addEventListener('abort', () => release(), { once: true });
    if (signals.some((s) => s?.aborted)) release();
    process.once('SIGUSR2', () => ((held.over = true), release()));
    migrationHeld = held;
    process.stdout.write(`couchestor held migration ${JSON.stringify({ volume })}\n`);
  }
  if (migrationHeld.volume !== volume || migrationHeld.over) return Promise.resolve();
  return migrationHeld.wake;
}

function pauseForKill(volume: string, point: 'before-release' | 'before-punch' = 'before-release'): Promise<never> {
  process.stdout.write(`couchestor paused ${point} ${JSON.stringify({ volume })}\n`);
  // A promise holds no handle: a process with nothing else pending (a bare
  // manager, test/helpers/punch-kill-child) would end at once, exit code 13
  // (unsettled top-level await), racing the test's SIGKILL. The timer holds it.
  setInterval(() => undefined, 60_000);
  return new Promise<never>(() => undefined);
}

/** Hole punches of dead chunk ranges (aborted moves to cold, and their finish at start), per manager. */
export interface PunchCounters {
  rangesPunched: number;
  bytesPunched: number;
  /** Punch attempts the file system refused (EOPNOTSUPP); a file's first is logged (punchCounted). */
  punchesUnsupported: number;
}

/**
 * A volume file whose file system refused a hole punch (EOPNOTSUPP), in the
 * index's `punch-refused` database under `<volumeId>/<pool>`: the file's
 * identity then. The start-up punch of an interrupted move to cold
 * (deadRangesHoldData) skips a file listed with the same device and inode:
 * the same file on the same file system is refused again, so retrying it
 * (and logging it) at every start only repeats what the operator was told
 * once. A different identity (the file released and made again, the pool
 * moved to another file system, a remount) is tried again. The data is
 * correct either way: the dead ranges are only unreclaimed space, freed when
 * the file is released. Bounded: one entry per volume file refused; a
 * successful punch of the volume drops its entries, and each new entry drops
 * those of volumes that no longer exist.
 */
interface PunchRefusal {
  dev: number;
  ino: number;
  refusedAtMs: number;
}

const PUNCH_REFUSED_DB = 'punch-refused';
const refusalDbs = new WeakMap<VolumeManager, Database<PunchRefusal, string>>();

function punchRefusals(manager: VolumeManager): Database<PunchRefusal, string> {
  let db = refusalDbs.get(manager);
  if (db === undefined) refusalDbs.set(manager, (db = manager.meta.openDB<PunchRefusal, string>(PUNCH_REFUSED_DB)));
  return db;
}

function refusalKey(volumeId: number, pool: string): string {
  return `${volumeId}/${pool}`;
}

/** Whether `fd` (volume `volumeId`'s file on `pool`) is the very file a punch was refused on before. */
function punchRefusedBefore(manager: VolumeManager, volumeId: number, pool: string, fd: number): boolean {
  const r = punchRefusals(manager).get(refusalKey(volumeId, pool));
  if (r === undefined) return false;
  const st = fs.fstatSync(fd);
  return st.dev === r.dev && st.ino === r.ino;
}

/**
 * Remembers (and logs, once per file) a refused punch; see PunchRefusal.
 * A file already listed with the same identity is not logged again (a
 * second aborted move to cold of the volume still reports punchUnsupported
 * and counts it).
 */
async function recordPunchRefusal(manager: VolumeManager, vol: Volume, pool: string): Promise<void> {
  const file = manager.pools.get(pool)?.volumeFile(vol.rec.id);
  const st = file === undefined ? undefined : fs.statSync(file, { throwIfNoEntry: false });
  const db = punchRefusals(manager);
  const key = refusalKey(vol.rec.id, pool);
  const before = db.get(key);
  if (st !== undefined && before !== undefined && before.dev === st.dev && before.ino === st.ino) return;
  log.warn(
    'volume: the file system cannot punch holes (fallocate PUNCH_HOLE: EOPNOTSUPP); the ranges this move to cold already destaged keep their disk space, the data is unaffected. ' +
      `The space comes back when the file is released: finish the move (\`couchestor volumes migrate ${vol.name} cold\`, whose RELEASE truncates the file), ` +
      "or put the pool's volumes/ on a file system that punches holes (ext4, xfs, btrfs). Later starts do not retry this file while it stays the same file on the same file system",
    { volume: vol.name, pool, file },
  );
  if (st === undefined) return;
  // Entries of volumes deleted since (listed before the writes: no removal under a live iterator).
  const live = new Set(manager.meta.listVolumes().map((r) => r.id));
  const gone = [...db.getKeys()].filter((k) => !live.has(Number(k.split('/')[0])));
  await db.transaction(() => {
    for (const k of gone) db.remove(k);
    db.put(key, { dev: st.dev, ino: st.ino, refusedAtMs: Date.now() });
  });
}

/** Drops `vol`'s refusal entries after a punch of it worked (its files' file systems punch now). */
async function forgetPunchRefusals(manager: VolumeManager, vol: Volume): Promise<void> {
  const db = punchRefusals(manager);
  for (const pool of vol.openFilePools()) {
    const key = refusalKey(vol.rec.id, pool);
    if (db.get(key) !== undefined) await db.remove(key);
  }
}

const punchCounters = new WeakMap<VolumeManager, PunchCounters>();

/** A copy of `manager`'s punch counters since it opened. */
export function migrationPunchCounters(manager: VolumeManager): PunchCounters {
  return { ...(punchCounters.get(manager) ?? { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 0 }) };
}

/**
 * Volume.punchDeadRanges, counted; a refusal (EOPNOTSUPP) logged once per
 * file and remembered (see PunchRefusal). Throws what it throws (an I/O error
 * other than EOPNOTSUPP).
 */
async function punchCounted(manager: VolumeManager, vol: Volume): Promise<{ bytesPunched: number; supported: boolean }> {
  const r = await vol.punchDeadRanges();
  let c = punchCounters.get(manager);
  if (c === undefined) punchCounters.set(manager, (c = { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 0 }));
  c.rangesPunched += r.rangesPunched;
  c.bytesPunched += r.bytesPunched;
  if (!r.supported) c.punchesUnsupported++;
  // Remembering is best effort: an index write that fails costs one more attempt at the next start.
  if (!r.supported && r.refusedPool !== undefined) await recordPunchRefusal(manager, vol, r.refusedPool).catch((err: unknown) => log.warn('cannot record a refused hole punch; the next start tries it again', { volume: vol.name, err: (err as Error).message }));
  else if (r.supported && r.rangesPunched > 0) await forgetPunchRefusals(manager, vol).catch(() => undefined);
  return r;
}

/**
 * At start (VolumeManager.finishInterruptedReleases), for a cold volume that
 * still has chunks in a file: whether a dead chunk range (`deadChunks`: the
 * Cold and Discarded chunks, in ascending order) of a file the volume opens
 * (its placement pool's, and each pool's with Allocated chunks), not kept,
 * holds a data extent. That is what a kill leaves between a move to cold's
 * destages and its RELEASE or hole punch (mid-COPY, or an abort before
 * punchDeadRanges): the destaged chunks' ranges still hold their old bytes.
 * Asked of the file itself (lseek SEEK_DATA, at most one per data extent:
 * each answer skips the ranges before it), not st_blocks: live chunks
 * written sparsely hid a dead range's blocks (the start punched nothing),
 * and blocks outside every dead range (an Unallocated chunk holding a write
 * whose entry a crash lost) made every later start punch the same holes
 * again (test/review-migration-punch-startup). A start after the punch
 * opens no volume. A file system without hole tracking answers "data"
 * (the punch is then tried, and refused or done, as before). A file a punch
 * was refused on before (the same file: PunchRefusal) is not asked: the
 * same file system refuses again, and each start would open the volume and
 * log it again.
 */
export async function deadRangesHoldData(manager: VolumeManager, rec: VolumeRecord, allocatedByPool: ReadonlyMap<string, number>, deadChunks: readonly number[]): Promise<boolean> {
  if (rec.tier !== 'cold' || deadChunks.length === 0) return false;
  const cs = rec.chunkSizeBytes;
  // Adjacent dead chunks as one range [start, end) in bytes.
  const ranges: { start: number; end: number }[] = [];
  const ascending = deadChunks.every((c, i) => i === 0 || c > deadChunks[i - 1]!);
  for (const c of ascending ? deadChunks : [...deadChunks].sort((a, b) => a - b)) {
    const last = ranges[ranges.length - 1];
    if (last !== undefined && last.end === c * cs) last.end += cs;
    else ranges.push({ start: c * cs, end: (c + 1) * cs });
  }
  const kept = new Set(rec.keptFilePools ?? []);
  for (const poolName of new Set([rec.poolName, ...allocatedByPool.keys()])) {
    const pool = manager.pools.get(poolName);
    if (pool === undefined || kept.has(poolName)) continue;
    let fd: number;
    try {
      fd = fs.openSync(pool.volumeFile(rec.id), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    try {
      if (punchRefusedBefore(manager, rec.id, poolName, fd)) continue;
      let i = 0;
      while (i < ranges.length) {
        const dataAt = await firstDataOffset(fd, ranges[i]!.start);
        if (dataAt === -1) break; // only holes from there to the end of the file
        while (i < ranges.length && ranges[i]!.end <= dataAt) i++;
        if (i < ranges.length && ranges[i]!.start <= dataAt) return true;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return false;
}

/**
 * Finishes the hole punch a kill cut short (see deadRangesHoldData):
 * the same Volume.punchDeadRanges the aborted move runs, safe for any cold
 * volume (it punches only Cold and Discarded chunks' ranges, never a kept
 * file's) and idempotent (a range already a hole stays one). Returns the
 * bytes punched; 0 where the file system cannot punch (counted, logged once
 * by punchDeadRanges; the space stays used, the data is unchanged).
 */
export async function punchAfterInterruptedMove(manager: VolumeManager, vol: Volume): Promise<number> {
  const r = await punchCounted(manager, vol);
  // A refused punch (EOPNOTSUPP) freed nothing: punchCounted logged that (once per file).
  if (r.supported) log.info('freed the dead chunk ranges of a move to cold a kill had cut short', { volume: vol.name, bytesPunched: r.bytesPunched });
  return r.bytesPunched;
}

/** Why a move to `to` cannot start now, or null when it can. */
export function analyzeMigration(manager: VolumeManager, vol: Volume, to: Tier): string | null {
  const r = planMigration(manager, vol, to);
  if (r instanceof TooFewOnlinePools) return r.message;
  return typeof r === 'string' ? r : null;
}

/**
 * ANALYZE: the pool whose file a move to hot/warm fills (null for cold), or
 * why the move cannot start (a TooFewOnlinePools when too few pools of the
 * tier are online: that passes once they are back). The volume's current pool is kept
 * when it is of the target tier, online and has room (cold -> hot promotes in
 * place); otherwise the online pool of that tier with the most free space
 * that fits every chunk to copy.
 */
export function planMigration(manager: VolumeManager, vol: Volume, to: Tier): { pool: Pool | null } | string | TooFewOnlinePools {
  if (vol.failed) return `volume is offline: ${vol.failed.message}`;
  if (to === 'cold') {
    const cold = manager.cold;
    if (!cold) return 'the cold tier is not running';
    if (vol.rec.chunkSizeBytes !== cold.policy.stripeSizeBytes) return `chunk size ${vol.rec.chunkSizeBytes} differs from the stripe size ${cold.policy.stripeSizeBytes}`;
    const need = cold.policy.dataShards + cold.policy.parityShards;
    const online = [...manager.pools.values()].filter((p) => p.rec.tier === 'cold' && p.isOnline()).length;
    if (online < need) return new TooFewOnlinePools(`needs ${need} online cold pools, ${online} online`);
    return { pool: null };
  }
  // Hot and warm data live in a file on a pool of that tier.
  const cs = vol.rec.chunkSizeBytes;
  const cur = vol.pool;
  if (cur.rec.tier === to && cur.isOnline()) {
    const needBytes = vol.chunksOffFile().length * cs;
    if (cur.freeBytes() >= needBytes) return { pool: cur };
  }
  // Every chunk with data moves into the new pool's file (Allocated ones
  // already there, after an interrupted move, need no room).
  const candidates = [...manager.pools.values()].filter((p) => p.rec.tier === to);
  if (candidates.length === 0) return `no pool with tier=${to}`;
  const online = candidates.filter((p) => p.isOnline());
  if (online.length === 0) return new TooFewOnlinePools(`no online pool with tier=${to} (${candidates.map((p) => p.name).join(', ')} offline)`);
  let best: Pool | null = null;
  for (const p of online) {
    if (p.freeBytes() < vol.chunksNotIn(p) * cs) continue;
    if (!best || p.freeBytes() > best.freeBytes()) best = p;
  }
  if (!best) {
    const largest = online.reduce((a, b) => (b.freeBytes() > a.freeBytes() ? b : a));
    return `no pool with tier=${to} has room: ${largest.name} has ${largest.freeBytes()} bytes free, needs ${vol.chunksNotIn(largest) * cs}`;
  }
  return { pool: best };
}


/**
 * The moves of one manager: the volumes with one running (one migration of
 * a volume at a time), each move's promise (stopMigrations waits for them),
 * and the stop that aborts them all.
 */
interface ManagerMoves {
  names: Set<string>;
  inFlight: Set<Promise<unknown>>;
  stop: AbortController;
  /** Why they were stopped (the start of the MigrationAborted message) and when to ask again. */
  stopReason: { why: string; askAgain: string };
}
const moves = new WeakMap<VolumeManager, ManagerMoves>();

function movesOf(manager: VolumeManager): ManagerMoves {
  let m = moves.get(manager);
  if (m === undefined) moves.set(manager, (m = { names: new Set(), inFlight: new Set(), stop: new AbortController(), stopReason: { why: '', askAgain: '' } }));
  return m;
}

/** Whether a migration of `name` is running (started by the API, the CLI or the control loop). */
export function migrationRunning(manager: VolumeManager, name: string): boolean {
  return moves.get(manager)?.names.has(name) ?? false;
}

/**
 * The daemon's stop (Daemon.stop): every move running on `manager`, whoever
 * started it (`couchestor volumes migrate` through the admin API, the
 * control loop), is aborted at its next chunk, as the control loop's stop
 * aborts its own: each chunk's COPY + VERIFY + SWITCH is whole, the volume
 * goes back to its old tier (an aborted move to cold releases or punches
 * the ranges it destaged first), the chunks already moved stay where they
 * are and a later move copies only the rest. No move starts from here on
 * (MigrationAborted, "the daemon is stopping"). Resolves once every move has
 * ended, its abort path included: none runs on beside the close of the
 * front ends and the index. Before, a move asked for through the API ran to
 * its end: one of a big volume held the stop for its whole copy, until the
 * kubelet's SIGKILL cut it after the pod's grace period. `reason`: the
 * message's start and when to ask again (an offline `couchestor volumes
 * migrate` interrupted by Ctrl-C: "interrupted (SIGINT)", at once).
 */
export async function stopMigrations(manager: VolumeManager, reason = { why: 'the daemon is stopping', askAgain: 'once the daemon is back' }): Promise<void> {
  const m = movesOf(manager);
  if (!m.stop.signal.aborted) m.stopReason = reason;
  m.stop.abort();
  await Promise.allSettled([...m.inFlight]);
}

/**
 * Moves volume `name` to tier `to` online. One migration of a volume at a
 * time: two at once (the API and the control loop, say) would race each
 * other's placement and RELEASE, so a second is refused with
 * MigrationInProgress (409 on the API) until the first ends. After
 * stopMigrations (the daemon stopping), refused with MigrationAborted.
 */
export async function migrateVolume(manager: VolumeManager, name: string, to: Tier, opts: MigrateOptions): Promise<MigrationProgress> {
  const m = movesOf(manager);
  if (m.stop.signal.aborted) throw new MigrationAborted(`${m.stopReason.why}: the migration of ${name} to ${to} was not started; ask again${m.stopReason.askAgain ? ' ' + m.stopReason.askAgain : ''}`);
  if (m.names.has(name)) throw new MigrationInProgress(`a migration of volume ${name} is already running; wait for it to end`);
  m.names.add(name);
  const run = migrateVolumeOnce(manager, name, to, opts, m);
  m.inFlight.add(run);
  try {
    return await run;
  } finally {
    m.inFlight.delete(run);
    m.names.delete(name);
  }
}

/**
 * The move, with the volume lent to it (VolumeManager.borrowVolume) for its
 * whole run and given back at its end, done or not: pinned (openVolume), every
 * volume the control loop ever moved stayed open until the daemon stopped (a
 * descriptor and a chunk map each). Made durable first (the last SWITCHes'
 * chunk map), so the last loan closes it when nothing else holds it.
 */
async function migrateVolumeOnce(manager: VolumeManager, name: string, to: Tier, opts: MigrateOptions, m: ManagerMoves): Promise<MigrationProgress> {
  // A closed volume's chunk map read a slice at a time (VolumeManager.openSliced): a move of a big volume stalls no client.
  // An open one taken in this turn, as before: the move's first steps run before writes queued after the call.
  const vol = manager.isOpen(name) ? manager.borrowVolume(name) : await manager.borrowVolumeAsync(name);
  try {
    return await migrateLent(manager, vol, name, to, opts, m);
  } finally {
    if (vol.failed === null && !vol.quiet()) await vol.flush().catch(() => undefined);
    manager.giveBack(vol);
  }
}

async function migrateLent(manager: VolumeManager, vol: Volume, name: string, to: Tier, opts: MigrateOptions, m: ManagerMoves): Promise<MigrationProgress> {
  const stopping = m.stop.signal;
  const from = vol.rec.tier;
  const progress: MigrationProgress = { volume: name, from, to, phase: 'Analyze', chunksTotal: 0, chunksDone: 0, bytesCopied: 0, startedMs: Date.now() };
  const report = () => opts.onProgress?.({ ...progress });
  report();
  // Same tier is allowed only to finish a move that a crash interrupted (the
  // record already names the target): a hot <-> warm one (chunks left on the
  // old pool), or a move to cold killed mid-COPY (chunks left in the file;
  // nothing else moves them: the destager takes only journaled chunks).
  if (from === to && (to === 'cold' ? vol.chunksOnFile().length === 0 : vol.chunksOffFile().length === 0)) throw new InvalidArgument(`volume ${name} is already ${to}`);
  const plan = planMigration(manager, vol, to);
  if (plan instanceof TooFewOnlinePools) throw new TooFewOnlinePools(`cannot migrate ${name} to ${to}: ${plan.message}`);
  if (typeof plan === 'string') throw new NoSuitablePool(`cannot migrate ${name} to ${to}: ${plan}`);
  const fromPool = vol.pool;
  if (plan.pool) progress.toPool = plan.pool.name;
  // What this move keeps on purpose, in the tier switch's commit (see
  // VolumeRecord.keptFilePools): its sources are the files it empties (every
  // open file but the target's; for a move to cold, the placement file too).
  // Preserving, they are kept; otherwise RELEASE frees them, and a restart
  // after a kill before RELEASE finishes it. Files kept by earlier moves stay
  // kept; the target's file (emptied by setTier if not open) never is.
  const targetPool = plan.pool?.name;
  const keptBefore = (vol.rec.keptFilePools ?? legacyKeptFilePools(manager, vol)).filter((p) => p !== targetPool);
  const sources = vol.openFilePools().filter((p) => p !== targetPool);
  const keptIfDone = opts.preserve ? [...keptBefore, ...sources] : keptBefore.filter((p) => !sources.includes(p));
  // After a failure: the sources as they were before (a non-preserving move
  // that failed releases nothing of them it would not also release done),
  // those a preserving one closed kept.
  const keptIfFailed = opts.preserve ? keptIfDone : keptBefore;

  progress.phase = 'Copy';
  // Preservation mode for cold -> hot: every SWITCH while this runs (the
  // copy's, and a client write's promote) keeps the chunk's old stripe.
  if (to !== 'cold' && opts.preserve) vol.preserveOnSwitch = true;
  try {
    // To hot/warm: new chunks are allocated in the target pool's file from
    // here on, and every chunk elsewhere is copied there. Inside the try: a
    // target file that cannot be made (too many files, the pool's volumes/
    // unusable) must not leave preservation mode on for later SWITCHes.
    await vol.setTier(to, plan.pool ?? undefined, keptIfDone);
    // New writes now follow the target tier; ones already on the file path
    // must land before their chunks are copied.
    if (to === 'cold') await vol.drainFileMutations();
    // Chunks to move; re-listed until none are left (a write during the
    // copy may have created new work on the old side).
    for (let round = 0; round < 16; round++) {
      const todo = to === 'cold' ? [...vol.chunksOnFile(), ...journaledChunks(manager, vol)] : vol.chunksOffFile();
      if (todo.length === 0) break;
      progress.chunksTotal = progress.chunksDone + todo.length;
      report();
      let next = 0;
      // Once one worker fails the others stop at their next chunk, and the
      // move waits for their copies in flight: the revert and the close of
      // the target file below must not run beside a copy this move started.
      const failed: { err: unknown }[] = [];
      const worker = async () => {
        while (next < todo.length && failed.length === 0) {
          if (opts.signal?.aborted || stopping.aborted) throw new MigrationAborted(`migration of ${name} aborted`);
          const c = todo[next++]!;
          // A client write may have promoted this chunk since the list was
          // made. Promoting it again would re-copy the whole chunk from the
          // file onto itself: a read-modify-write that loses any write
          // landing in the file meanwhile (found by test/migration-under-writes).
          if (to !== 'cold' && !vol.offPlacement(c)) continue;
          // COPY + VERIFY + SWITCH for one chunk.
          if (to === 'cold') await vol.destageChunk(c, true);
          else await vol.ensurePromoted(c, true);
          progress.chunksDone++;
          progress.bytesCopied += vol.rec.chunkSizeBytes;
          if (progress.chunksDone % 16 === 0) report();
          if (HOLD_MIGRATION) await holdMigration(name, [opts.signal, stopping]);
        }
      };
      const guarded = () => worker().catch((err: unknown) => void failed.push({ err }));
      await Promise.all(Array.from({ length: opts.concurrency ?? DEFAULT_MIGRATION_CONCURRENCY }, guarded));
      // The first failure is the move's error.
      if (failed.length > 0) throw failed[0]!.err;
    }
    const left = to === 'cold' ? vol.chunksOnFile().length : vol.chunksOffFile().length;
    if (left > 0) throw new VolumeFailed(`${left} chunks of ${name} could not be moved`);
    progress.phase = 'Release';
    report();
    if (PAUSE_BEFORE_RELEASE) await pauseForKill(name);
    if (to === 'cold' && !opts.preserve) await vol.releaseFile();
    // The old pool's file holds no chunk now: delete it (preservation mode
    // keeps it on disk until `volumes release`).
    if (to !== 'cold') await vol.releaseOtherFiles(opts.preserve);
    progress.phase = 'Done';
  } catch (err) {
    // A move to cold that destaged every chunk of the file before it
    // stopped (those left were journaled): RELEASE the placement file as a
    // finished move does, before the tier reverts. While the volume is still
    // cold, client writes go to the journal and no read or copy uses the
    // file, so the truncate runs with clients served, not held at the gate
    // (releaseFile checks all of this at its gate, and does nothing if a
    // chunk is in the file); after the revert new chunks are allocated in
    // the file again and a truncate would race them. Preservation mode keeps
    // the file, as a finished move does.
    // With chunks still in the file (releaseFile did nothing), the ranges of
    // those already destaged are freed instead (hole punch), also while the
    // volume is still cold: see punchDeadRanges for why none can be needed.
    // A kill from here until the punch has landed leaves the ranges for the
    // next start (punchAfterInterruptedMove). A file system that cannot
    // punch (EOPNOTSUPP) changes nothing but the space: counted, reported.
    if (to === 'cold' && !opts.preserve && !(await vol.releaseFile().catch(() => false))) {
      if (PAUSE_BEFORE_PUNCH) await pauseForKill(name, 'before-punch');
      const punched = await punchCounted(manager, vol).catch(() => null);
      if (punched !== null) {
        progress.bytesPunched = punched.bytesPunched;
        if (!punched.supported) progress.punchUnsupported = true;
      }
    }
    // Chunks already switched stay readable where they are; new writes go
    // back to the old tier's path.
    await vol.setTier(from, fromPool, keptIfFailed).catch(() => undefined);
    // The target file stays open only if chunks were switched into it:
    // otherwise close and delete it, or every aborted move to another pool
    // would hold one more file open toward the volume's MAX_VOLUME_FILES
    // until a move succeeded. (Never one the index points a chunk at, nor
    // the placement pool's; see releaseOtherFiles.)
    if (to !== 'cold') await vol.releaseOtherFiles(false).catch(() => undefined);
    // A move to cold: a split volume's file on another pool than the
    // placement one may hold no chunk now (all of them destaged before the
    // abort); close it the same way (kept on disk in preservation mode,
    // for `volumes release`). The placement pool's file stays open even
    // when empty (truncated above): new writes are allocated in it again
    // once the tier is reverted.
    else await vol.releaseOtherFiles(opts.preserve).catch(() => undefined);
    progress.phase = err instanceof MigrationAborted ? 'Aborted' : 'Failed';
    progress.finishedMs = Date.now();
    // Aborted by stopMigrations (the daemon's stop, an offline `volumes migrate` interrupted): what
    // the caller (`couchestor volumes migrate`, the API's 409) is told.
    const stopped = err instanceof MigrationAborted && stopping.aborted;
    const thrown = stopped
      ? new MigrationAborted(
          `${m.stopReason.why}: the migration of ${name} to ${to} was aborted after ${progress.chunksDone} of ${progress.chunksTotal} chunks; ` +
            `${name} stays ${from} on its old copy, every acknowledged write in it (the chunks already moved stay readable where they are); ` +
            // The command as asked (--preserve kept: without it the move asked again would free the copy this one keeps).
            `ask again${m.stopReason.askAgain ? ' ' + m.stopReason.askAgain : ''} (\`couchestor volumes migrate ${name} ${to}${opts.preserve ? ' --preserve' : ''}\`): only the chunks not moved yet are copied`,
        )
      : err;
    progress.error = (thrown as Error).message;
    report();
    throw thrown;
  } finally {
    vol.preserveOnSwitch = false;
  }
  progress.finishedMs = Date.now();
  report();
  return progress;
}

/**
 * keptFilePools for a record written before the field: every file fsck
 * counted as kept then (the volume's file on a hot/warm pool it does not
 * have open; a cold volume's placement file with bytes and no chunk in it),
 * since nothing tells an older daemon's preserved copy from a leftover.
 */
function legacyKeptFilePools(manager: VolumeManager, vol: Volume): string[] {
  const open = new Set(vol.openFilePools());
  const kept = [...manager.pools.values()].filter((p) => p.rec.tier !== 'cold' && !open.has(p.name) && fs.existsSync(p.volumeFile(vol.rec.id))).map((p) => p.name);
  if (vol.rec.tier === 'cold' && vol.chunksOnFile().length === 0 && (fs.statSync(vol.pool.volumeFile(vol.rec.id), { throwIfNoEntry: false })?.size ?? 0) > 0) kept.push(vol.pool.name);
  return kept;
}

function journaledChunks(manager: VolumeManager, vol: Volume): number[] {
  return manager.cold ? manager.cold.journal.dirtyChunks(vol.rec.id) : [];
}
