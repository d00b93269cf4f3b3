// `couchestor serve`: opens the metadata, registers pools from the config,
// starts the front ends, and shuts everything down cleanly on SIGTERM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi, registerCompactionRoutes } from './control/api.js';
import { CONFIG_FILE, loadConfig, poolCapacityBytes, refuseAliasedPools, resolvePoolPath, type DaemonConfig } from './config.js';
import { NbdServer } from './dataplane/nbd/server.js';
import { inflightBudget } from './dataplane/inflight-budget.js';
import { S3Frontend } from './dataplane/s3/frontend.js';
import { VolumeManager } from './dataplane/volumes/manager.js';
import { isLmdbCommitFailure, type MetaStore } from './dataplane/meta/store.js';
import { unpatchedLmdbReason } from './dataplane/meta/lmdb-build.js';
import { log } from './log.js';
import { CacheManager, registerCacheMetrics } from './dataplane/cache/index.js';
import { registerHealthRoutes, type RunningHttpServer } from './control/health/index.js';
import { createMetrics, startMetricsServer } from './control/metrics/index.js';
import { HeatTracker } from './control/heat.js';
import { ControlLoop } from './control/loop.js';
import { PrometheusHeat } from './control/prometheus-heat.js';
import { healthChecks, metricsSource } from './control/observe.js';
import { parsePolicyYaml, type ErasureCodingPolicy } from './dataplane/ec/policy.js';
import { SegmentCompactor, registerCompactionMetrics } from './dataplane/ec/compaction.js';
import { forgetRemovedPoolRebuilds } from './dataplane/ec/reconstruction.js';
import { stopMigrations } from './dataplane/volumes/migration.js';
import { DataDirLock, DataDirLocked, readLockHolder } from './data-dir-lock.js';
import { endBySignal } from './end-by-signal.js';
import { prepareHotPool } from './dataplane/objects/hot-segments.js';
import type { Pool } from './dataplane/pools/pool.js';
import { KubePolicies, readColdPolicyOnce, readyWithPolicySource, registerKubeMetrics, type ColdPolicyChoice } from './control/kube/index.js';
import { dirEntries } from './dataplane/pools/identity.js';
import { JOURNAL_ROOM_MARGIN_BYTES } from './dataplane/journal/journal.js';

export const STATE_FILE = 'daemon.json';

export interface DaemonState {
  pid: number;
  nbd: { host: string; port: number; socketPath: string };
  api: { host: string; port: number };
  s3: { host: string; port: number };
  metrics: { host: string; port: number };
}

/**
 * The daemon serving `dataDir` as its daemon.json names it, or null. Only a
 * live `serve` that owns the directory counts: the holder of its lock, or
 * (lock not held) a process with its index open, a daemon of a version before
 * the lock, which never takes it.
 */
export function readDaemonState(dataDir: string): DaemonState | null {
  const st = readStateFile(dataDir);
  if (!st) return null;
  // A live `serve` with that pid is not enough: a killed daemon's pid may now be
  // another directory's daemon (whose API would take this directory's commands).
  // (A missing lock addon throws: an error, not "no daemon".)
  if (DataDirLock.isHeld(dataDir)) {
    const holder = readLockHolder(dataDir);
    return holder.pid === st.pid && holder.role === 'serve' ? st : null;
  }
  // Descriptors not readable (another user's process): trusted, as before the lock.
  return hasIndexOpen(st.pid, dataDir) === false ? null : st;
}

/** daemon.json when the pid it names is a live process running `serve` (of whatever directory). */
function readStateFile(dataDir: string): DaemonState | null {
  try {
    const st = JSON.parse(fs.readFileSync(path.join(dataDir, STATE_FILE), 'utf8')) as DaemonState;
    process.kill(st.pid, 0);
    // A killed daemon's pid may linger as a zombie or be reused by another
    // program: only a live process running `serve` counts.
    const cmdline = fs.readFileSync(`/proc/${st.pid}/cmdline`, 'utf8');
    return cmdline.includes('serve') ? st : null;
  } catch {
    return null;
  }
}

/**
 * Whether process `pid` has `dataDir`'s index (meta/data.mdb, the same inode)
 * open, as every daemon serving it has, whatever its version; null when its
 * descriptors cannot be listed (another user's process).
 */
function hasIndexOpen(pid: number, dataDir: string): boolean | null {
  let index: fs.Stats;
  try {
    index = fs.statSync(path.join(dataDir, 'meta', 'data.mdb'));
  } catch {
    return false; // no index: nothing has it open
  }
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  for (const fd of fds) {
    try {
      const st = fs.statSync(`/proc/${pid}/fd/${fd}`);
      if (st.ino === index.ino && st.dev === index.dev) return true;
    } catch {
      /* closed meanwhile */
    }
  }
  return false;
}

/**
 * The configured pools' existing directories (for DataDirLock.lockPools, before
 * openManager). A missing one is not created here: openManager creates (and
 * locks) a new pool's, and leaves a known pool's missing directory missing.
 */
export function poolDirs(cfg: DaemonConfig): string[] {
  // Nor one with nothing in it: an unmounted disk's mount point must not get a lock file
  // (which would pass for a pool of an earlier version's layout: pools/identity.ts).
  // Nor a path that is not a directory (a file where the pool's directory was: the pool is
  // offline, fsck lists it unreachable; listing it threw a bare ENOTDIR from every command).
  return cfg.pools.map((p) => resolvePoolPath(cfg, p)).filter((dir) => isDirectory(dir) && dirEntries(dir).length > 0);
}

function isDirectory(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/**
 * A known pool left offline at start (its directory missing) is used again once
 * the directory is back, mounted or made for a replaced disk, without a restart.
 * Before its first use it gets what the start gives a pool present then: its
 * lock (lockPools: a second data directory naming it is kept out, and one that
 * took it meanwhile keeps it offline here) and, for a hot pool, the S3 objects/
 * fan-out (prepareHotPool; without it every PUT placed there answered 503).
 * Pool.isOnline, the one gate every use passes (placement, the stripe store,
 * volume opens, /readyz), runs this once the directory is there (Pool.adoptWhenBack).
 */
function adoptWhenBack(pool: Pool, dataDir: string): void {
  let locked = false;
  pool.adoptWhenBack(() => {
    const lock = DataDirLock.heldFor(dataDir);
    try {
      if (lock && !locked) lock.lockPools([pool.rec.path], lock.role);
    } catch (err) {
      // Locked at start already (a directory present but not the pool then: poolDirs took it).
      if (!(err instanceof DataDirLocked && err.holderPid === process.pid)) throw err;
    }
    locked = true;
    if (pool.rec.tier === 'hot') prepareHotPool(pool);
  });
}

/**
 * Opens the metadata and (re)registers the configured pools. `coldPolicy`: where
 * the cold tier's ErasureCodingPolicy comes from instead of coldTier.ecPolicyFile
 * (on Kubernetes, the custom resource).
 */
export async function openManager(cfg: DaemonConfig, opts: { coldTier: boolean; coldPolicy?: (coldPoolCount: number) => Promise<ColdPolicyChoice>; progress?: StartProgress } = { coldTier: true }): Promise<VolumeManager> {
  refuseAliasedPools(cfg);
  await opts.progress?.at('the index');
  const manager = VolumeManager.open(cfg.dataDir);
  // The hot pool holding the cold tier's journal (manager.journalPool).
  const journalPool = manager.journalPool()?.name;
  const created: string[] = [];
  try {
    await opts.progress?.at('the pools');
    // A new pool whose path is a file: refused before any pool is made (a known one is offline, as a missing one).
    for (const p of cfg.pools) {
      const dir = resolvePoolPath(cfg, p);
      if (!manager.pools.has(p.name) && fs.existsSync(dir) && !isDirectory(dir)) {
        throw new Error(`${path.join(cfg.dataDir, CONFIG_FILE)}: pool ${p.name}: its path ${dir} is not a directory: give each pool a directory (made when missing)`);
      }
    }
    for (const p of cfg.pools) {
      const dir = resolvePoolPath(cfg, p);
      const known = manager.pools.get(p.name);
      if (!fs.existsSync(dir)) {
        // A pool the index knows at this path whose directory is gone: its disk is not
        // mounted, or died. Made again, an empty directory (on whatever filesystem holds
        // the mount point) would pass for the pool: ready, written to, its shards and
        // volume files silently missing. Left offline: /readyz and pools list say so,
        // placement avoids it; a replaced disk is mounted (or the directory made) and rebuilt.
        if (known !== undefined && path.resolve(known.rec.path) === dir) {
          const replaced =
            p.tier === 'cold'
              ? `make the directory (empty) and run \`couchestor pools replace ${p.name}\` (its shards are rebuilt from parity)`
              : p.name === journalPool
                ? `make the directory and an empty journal/ in it (the cold tier's journal it held is lost: the acknowledged writes to cold volumes not yet destaged; serve refuses to start until journal/ is there; and the volume files it held: their volumes read as I/O errors), running \`couchestor pools replace ${p.name} --discard-volumes\` on the empty directory before making journal/`
                : `make the directory (empty) and run \`couchestor pools replace ${p.name}\` (with --discard-volumes when volumes had data only there: they then read as I/O errors)`;
          log.warn(`pool directory missing: the pool is offline (not made again); mount its disk; for a replaced disk, ${replaced}`, { pool: p.name, path: dir });
          adoptWhenBack(known, cfg.dataDir);
          continue;
        }
        if (known !== undefined) {
          // A known pool given a new path (moved to another disk, or mistyped) that is not
          // there: made empty, it would lose what the pool holds just the same (the cold
          // tier's journal, its shards, its volume files). Registered at the new path,
          // offline: the old directory is never used again by mistake.
          const old = path.resolve(known.rec.path);
          log.warn(`pool directory missing at the pool's new path: the pool is offline (not made); move its contents from ${old} to ${dir} (or mount its disk there), or give it back its old path`, { pool: p.name, path: dir });
          const moved = await manager.putPool({ ...known.rec, tier: p.tier, path: dir, ...(p.capacity === 'auto' ? {} : { capacityBytes: p.capacity }), labels: { tier: p.tier, ...p.labels } }, { makeDir: false });
          adoptWhenBack(moved, cfg.dataDir);
          continue;
        }
        created.push(dir);
      } else if (known !== undefined && path.resolve(known.rec.path) === dir && known.offlineButPresent()) {
        // There, but not the pool (pools/identity.ts): an unmounted disk's empty mount point,
        // another pool's disk, another node's. Offline as a missing one, its record untouched
        // (capacity: auto would be the wrong filesystem's); used once its identity is there.
        log.warn(`pool directory is not the pool: the pool is offline; ${known.offlineReason() ?? 'its identity does not match'}`, { pool: p.name, path: dir });
        adoptWhenBack(known, cfg.dataDir);
        continue;
      } else if (known === undefined && dirEntries(dir).length === 0) {
        created.push(dir); // a new pool in an empty directory: not locked by poolDirs
      }
      const pool = await manager.putPool({
        name: p.name,
        tier: p.tier,
        path: dir,
        capacityBytes: poolCapacityBytes(cfg, p),
        labels: { tier: p.tier, ...p.labels },
      });
      // A known pool given a new path that exists: its identity there decides.
      if (known !== undefined && pool.offlineButPresent()) {
        log.warn(`pool directory at the pool's new path is not the pool: the pool is offline; ${pool.offlineReason() ?? ''}`, { pool: p.name, path: dir });
        adoptWhenBack(pool, cfg.dataDir);
      }
    }
    // A new pool's directory, made just now: locked as the existing ones were (poolDirs), before anything uses it.
    const lock = DataDirLock.heldFor(cfg.dataDir);
    if (lock && created.length > 0) lock.lockPools(created, lock.role);
  } catch (err) {
    await manager.close().catch(() => undefined);
    throw err;
  }
  manager.configuredPools = new Set(cfg.pools.map((p) => p.name));
  // A pool made another tier is never rebuilt again: its incomplete-rebuild record (and gauge
  // series) would stay forever. Dropped before the cold tier loads the list. (One only taken out
  // of the configuration stays a cold pool in the index: kept.)
  await forgetRemovedPoolRebuilds(manager.meta, cfg.pools.filter((p) => p.tier === 'cold').map((p) => p.name));
  if (opts.coldTier) {
    try {
      await startConfiguredColdTier(cfg, manager, opts.coldPolicy, opts.progress);
      await opts.progress?.at('the cold pool usage');
    } catch (err) {
      // A journal that refuses to open (JournalCorrupt), or a stop during the start: the index (and the cold tier) closed.
      await manager.close().catch(() => undefined);
      throw err;
    }
    // Each cold pool's usedBytes from its segment files: the index holds no total and
    // appends only add to it, so without this it read 0 after a restart until the first
    // compaction pass (never with compaction off). The segment stores know their files'
    // sizes once open (offline `pools list` counts the same files: segmentFilesBytes).
    await manager.cold?.stripes.refreshPoolUsage().catch((err: unknown) => log.warn('cold pool usage not counted at start (set by the next compaction pass)', { err: String(err) }));
  }
  return manager;
}

/** The read cache in front of the cold tier: L1 RAM, L2 an mmap'd file on the hot pool, L3 the stripes. */
async function startCache(cfg: DaemonConfig, manager: VolumeManager): Promise<CacheManager | null> {
  const c = cfg.cache;
  if (!manager.cold || c.l1CapacityBytes <= 0) return null;
  const hot = [...manager.pools.values()].find((p) => p.rec.tier === 'hot');
  const l2Path = hot && path.join(hot.rec.path, 'cache', 'l2.cache');
  const l2CapacityBytes = hot && l2Path && c.l2CapacityBytes > 0 ? l2CapacityBesideJournal(c.l2CapacityBytes, hot, l2Path, manager) : 0;
  const cacheWith = (l2: boolean) =>
    new CacheManager({
      l1CapacityBytes: c.l1CapacityBytes,
      l2: l2 && l2Path && l2CapacityBytes > 0 ? { path: l2Path, capacityBytes: l2CapacityBytes, minEntryBytes: c.l2MinEntryBytes } : undefined,
      l3: manager.cold!.stripes.l3,
      ...(c.lz4ThresholdBytes ? { lz4ThresholdBytes: c.lz4ThresholdBytes } : {}),
    });
  let cm = cacheWith(true);
  try {
    if (hot) fs.mkdirSync(path.join(hot.rec.path, 'cache'), { recursive: true });
    await cm.open();
  } catch (err) {
    // L2 is only a cache: a hot pool with no room for its file (ENOSPC: a small disk, or one
    // filled by volumes) must not stop the daemon, nor keep the space the journal needs.
    const code = (err as NodeJS.ErrnoException | null)?.code;
    if (l2Path === undefined || typeof code !== 'string') throw err;
    log.warn('read cache: L2 not used, its file cannot be made on the hot pool (L1 only; free space or lower cache.l2CapacityBytes)', { pool: hot!.rec.name, path: l2Path, capacityBytes: c.l2CapacityBytes, err: String(err) });
    cm = cacheWith(false);
    await cm.open();
  }
  const l2 = cm.stats().l2;
  if (l2 !== undefined && l2.corruptions > 0) {
    log.warn('read cache: L2 records failing their checksum dropped at start (the hot pool disk may be failing)', { path: l2Path, dropped: l2.corruptions, kept: l2.recoveredEntries });
  }
  manager.cold.stripes.useCache(cm);
  return cm;
}

/** An L2 file smaller than this is not made: a handful of chunks, not worth its mapping. */
const MIN_USEFUL_L2_BYTES = 1024 * 1024;

/**
 * The L2 file's size: cache.l2CapacityBytes, less what it would take of the
 * journal's room when both are on one file system: the journal's capacity not
 * yet on disk, and the room each append leaves (JOURNAL_ROOM_MARGIN_BYTES).
 * Zero-filled at start, an L2 file that fit but left less than that made
 * every cold write wait for room (JOURNAL_FULL_TIMEOUT_MS, 30 s) and then
 * fail with ENOSPC. Smaller than asked (or none): said once at start. A file
 * system that reports no size (ramfs) cannot be judged, as in the journal's
 * own check: the size asked.
 */
function l2CapacityBesideJournal(wantBytes: number, hot: Pool, l2Path: string, manager: VolumeManager): number {
  const journal = manager.cold?.journal;
  const journalDir = manager.journalDir();
  if (!journal || journalDir === null) return wantBytes;
  let freeBytes: number;
  try {
    if (fs.statSync(journalDir).dev !== fs.statSync(hot.rec.path).dev) return wantBytes;
    const st = fs.statfsSync(hot.rec.path);
    if (st.blocks === 0) return wantBytes;
    // The file a previous run left is given back to the disk when it is made again.
    const existingBytes = fs.statSync(l2Path, { throwIfNoEntry: false })?.size ?? 0;
    freeBytes = st.bavail * st.bsize + existingBytes;
  } catch {
    return wantBytes; // not measurable: the fill itself tells (ENOSPC: L1 only)
  }
  const journalRoomBytes = Math.max(0, journal.capacityBytes - journal.bytesLive - journal.bytesSpare) + JOURNAL_ROOM_MARGIN_BYTES;
  const roomBytes = Math.max(0, freeBytes - journalRoomBytes);
  if (roomBytes >= wantBytes) return wantBytes;
  const sizes = { pool: hot.rec.name, path: l2Path, configuredBytes: wantBytes, freeBytes, journalRoomBytes };
  if (roomBytes < MIN_USEFUL_L2_BYTES) {
    log.warn("read cache: L2 not used: the hot pool's free space is the journal's room (L1 only; free space, or lower coldTier.journalCapacityBytes)", sizes);
    // A previous run's file is room too.
    fs.rmSync(l2Path, { force: true });
    return 0;
  }
  const capacityBytes = Math.floor(roomBytes / MIN_USEFUL_L2_BYTES) * MIN_USEFUL_L2_BYTES;
  log.warn("read cache: L2 made smaller than cache.l2CapacityBytes: the rest of the hot pool's free space is the journal's room", { ...sizes, capacityBytes });
  return capacityBytes;
}

/** Chunk entries the start's scan for the highest destagedSeq reads between two yields to the event loop. */
export const START_SCAN_SLICE_ENTRIES = 1024;

/**
 * VolumeManager.highestDestagedSeqSlices with a yield to the event loop between
 * two slices: read in one go it blocked ~0.85 s per 100,000 entries
 * (bench/cold-maintenance-stalls). Runs before the cold tier starts, when
 * nothing in this process writes a chunk entry (no destager, no front end:
 * openManager's caller listens only after).
 */
export async function highestDestagedSeqSliced(manager: VolumeManager, sliceEntries = START_SCAN_SLICE_ENTRIES, progress?: StartProgress): Promise<number> {
  let highest = 0;
  for (const h of manager.highestDestagedSeqSlices(sliceEntries)) {
    highest = h;
    await new Promise<void>((resolve) => setImmediate(resolve));
    progress?.throwIfStopped(); // a read-only scan: stopped between two slices
  }
  return highest;
}

/** On Kubernetes: the cold tier's ErasureCodingPolicy as last read from the cluster, for a start while the apiserver is down. */
function kubeEcCacheFile(cfg: DaemonConfig): string {
  return path.resolve(cfg.dataDir, 'kube-ec-policy.json');
}

/**
 * Starts the erasure-coded tier when the policy file exists (or `coldPolicy`,
 * the custom resource, is there and valid) and enough cold pools do
 * (openManager's last step).
 */
export async function startConfiguredColdTier(cfg: DaemonConfig, manager: VolumeManager, coldPolicy?: (coldPoolCount: number) => Promise<ColdPolicyChoice>, progress?: StartProgress): Promise<void> {
  const coldPools = cfg.pools.filter((p) => p.tier === 'cold').length;
  let policy: ErasureCodingPolicy;
  // An offline command on Kubernetes: the custom resource too (there is no policy file).
  if (!coldPolicy && cfg.kubernetes.enabled) coldPolicy = (n) => readColdPolicyOnce(cfg.kubernetes, n, kubeEcCacheFile(cfg));
  await progress?.at('the cold tier policy');
  if (coldPolicy) {
    // A policy the cluster does not give (apiserver unreachable, no such resource, invalid here) is said in its status; the daemon serves on.
    // Up to kubernetes.startSyncTimeoutMs for the apiserver's first list: a stop ends the wait at once (it writes nothing).
    const asked = coldPolicy(coldPools);
    const chosen = progress ? await progress.until(asked) : await asked;
    if ('disabled' in chosen) {
      log.warn(`cold tier disabled: ${chosen.disabled}`);
      return;
    }
    policy = chosen.policy;
    log.info('cold tier policy from the cluster', { ecPolicy: policy.name, dataShards: policy.dataShards, parityShards: policy.parityShards, stripeSizeBytes: policy.stripeSizeBytes });
  } else {
    const file = path.resolve(cfg.dataDir, cfg.coldTier.ecPolicyFile);
    if (!fs.existsSync(file)) {
      log.warn('cold tier disabled: no erasure-coding policy file', { file });
      return;
    }
    policy = parsePolicyYaml(fs.readFileSync(file, 'utf8'), coldPools);
  }
  await progress?.at('the scan for the highest destaged seq');
  const highestDestagedSeq = await highestDestagedSeqSliced(manager, START_SCAN_SLICE_ENTRIES, progress);
  // The replay runs in one go (synchronous): a stop asked meanwhile takes effect once it is done.
  await progress?.at('the journal replay');
  manager.startColdTier(policy, {
    intervalMs: cfg.coldTier.destageIntervalMs,
    thresholdPercent: cfg.coldTier.destageThresholdPercent,
    concurrency: 2,
    journalCapacityBytes: cfg.coldTier.journalCapacityBytes,
    highestDestagedSeq,
  });
  if (manager.cold) manager.cold.stripes.segmentOptions = { segmentSizeBytes: cfg.coldTier.segmentSizeBytes };
}

/** Segment compaction (space reclaim) over the cold pools; null without a cold tier. */
function startCompaction(cfg: DaemonConfig, manager: VolumeManager): SegmentCompactor | null {
  if (!manager.cold) return null;
  const c = cfg.coldTier.compaction;
  const compactor = new SegmentCompactor(manager.cold.stripes, manager.meta, () => manager.openVolumes(), {
    intervalMs: c.intervalMs,
    deadFraction: c.deadFraction,
    maxBytesPerSecond: c.maxBytesPerSecond,
  });
  compactor.start();
  return compactor;
}

export class Daemon {
  private constructor(
    readonly cfg: DaemonConfig,
    readonly manager: VolumeManager,
    readonly nbd: NbdServer,
    readonly api: FastifyInstance,
    readonly s3: S3Frontend,
    readonly metrics: RunningHttpServer,
    readonly heat: HeatTracker,
    readonly loop: ControlLoop,
    readonly cache: CacheManager | null,
    readonly state: DaemonState,
    readonly compactor: SegmentCompactor | null,
    private readonly lock: DataDirLock,
    readonly kube: KubePolicies | null,
  ) {}

  /**
   * Starts serving cfg.dataDir. First of all takes the data directory's lock
   * (src/data-dir-lock.ts; `lock` when the caller took it already, as serve
   * does before loadConfig): a second daemon or an offline CLI command on the
   * directory is refused (DataDirLocked, naming this pid) before it opens
   * the index or the journal, also while this start is still replaying.
   * The daemon holds the lock until stop() or its death.
   */
  static async start(cfg: DaemonConfig, opts: { lock?: DataDirLock; progress?: StartProgress } = {}): Promise<Daemon> {
    const lock = opts.lock ?? DataDirLock.acquire(cfg.dataDir, 'serve', SERVE_LOCKED_ADVICE);
    const progress = opts.progress ?? new StartProgress();
    // What has started so far, undone in reverse order when a later step
    // fails (a port in use, say): the process then exits with the error
    // instead of hanging on half-open listeners and timers. The lock is
    // dropped last, once the index and journal are closed.
    // A stop during the start (StartStopped, from progress.at() between two
    // steps) is undone the same way.
    const started: Array<() => unknown> = [() => lock.release()];
    try {
      await progress.at('the pool locks');
      // Pools may lie outside the data directory: each is locked too, before anything opens.
      lock.lockPools(poolDirs(cfg), 'serve');
      // A daemon of a version before the lock never takes it: while one still
      // serves (daemon.json naming a live serve with this index open; when its
      // descriptors cannot be read, refused as before the lock), do not start.
      const lockless = readStateFile(cfg.dataDir);
      if (lockless && lockless.pid !== process.pid && hasIndexOpen(lockless.pid, cfg.dataDir) !== false) {
        throw new DataDirLocked(cfg.dataDir, lockless.pid, 'serve', 'it is a version before the data-directory lock and serves without taking it: stop it first');
      }
      // Holding the lock, no other daemon can own a daemon.json here: it is a
      // killed one's. Gone before anything opens, or a CLI would take it for
      // this daemon when the pid is the same (a container restart, a reboot)
      // and send commands to the API it names while this start replays.
      fs.rmSync(path.join(cfg.dataDir, STATE_FILE), { force: true });
      return await Daemon.startSteps(cfg, started, lock, progress);
    } catch (err) {
      for (const undo of started.reverse()) await Promise.resolve().then(undo).catch(() => undefined);
      throw err;
    }
  }

  private static async startSteps(cfg: DaemonConfig, started: Array<() => unknown>, lock: DataDirLock, progress: StartProgress): Promise<Daemon> {
    // On Kubernetes the policies are custom resources: their list + watch starts first (the cold tier's comes from it).
    if (cfg.kubernetes.enabled) await progress.at('the Kubernetes client');
    const kube = cfg.kubernetes.enabled ? await KubePolicies.create(cfg.kubernetes, { ecCacheFile: kubeEcCacheFile(cfg) }) : null;
    if (kube) {
      kube.start();
      // Stopping it waits for a list in flight (up to 10 s against a hung apiserver). A stop
      // during the start does not: the requests write nothing, and the process exits next.
      started.push(() => (progress.stopRequested ? Promise.race([kube.stop(), new Promise((r) => setTimeout(r, KUBE_STOP_AT_START_MS).unref())]) : kube.stop()));
    }
    const manager = await openManager(cfg, { coldTier: true, progress, ...(kube ? { coldPolicy: (n: number) => kube.coldPolicy(n) } : {}) });
    // Removed after the index has closed (the stop runs these in reverse): its last commits may fail too.
    started.push(survivingIndexCommitFailures(manager.meta));
    started.push(() => manager.close());
    kube?.attach(manager);
    if (PAUSE_START_AFTER_OPEN) {
      await progress.at('the test pause after-open');
      await progress.until(pauseStart('after-open'));
    }
    // Before any front end serves: a RELEASE a kill cut short (not fsck, which must not change anything).
    // Each volume's is whole or taken up again by the next start (as after a kill).
    await progress.at('the interrupted releases');
    await manager.finishInterruptedReleases();
    // Deletes a stop or crash cut short (a "deleting" mark): finished in the background, the daemon serving meanwhile.
    void manager.resumeDeletes();
    if (cfg.demoVolume && manager.listVolumes().length === 0) {
      await progress.at('the demo volume');
      await manager.createVolume({ name: cfg.demoVolume.name, sizeBytes: cfg.demoVolume.sizeBytes });
      log.info('created demo volume', { name: cfg.demoVolume.name, sizeBytes: cfg.demoVolume.sizeBytes });
    }
    await progress.at('the NBD listeners');
    inflightBudget.setCapacity(cfg.limits.inflightBytes);
    const nbd = new NbdServer({ manager, defaultExport: cfg.defaultExport });
    started.push(() => nbd.close());
    const tcp = await listening('NBD', cfg.nbd.port, nbd.listenTcp(cfg.nbd.port, cfg.listenHost));
    const socketPath = path.resolve(cfg.dataDir, cfg.nbd.socketPath);
    await nbd.listenUnix(socketPath);
    await progress.at('the read cache');
    const cache = await startCache(cfg, manager);
    if (cache) started.push(() => cache.close());
    const heat = new HeatTracker(manager, 3_600_000, cfg.control.heatSampleIntervalMs);
    heat.start();
    started.push(() => heat.stop());
    const hs = cfg.control.heatSource;
    const loop = new ControlLoop(manager, {
      ...(kube ? { policies: kube.source, onPass: (s) => kube.afterPass(s) } : { policiesDir: path.resolve(cfg.dataDir, cfg.control.policiesDir) }),
      intervalMs: cfg.control.reconcileIntervalMs,
      preservationMode: cfg.control.preservationMode,
      heat: hs.type === 'prometheus' ? new PrometheusHeat(hs.url, hs.metrics) : heat,
      ecPolicyNames: kube ? () => kube.ecPolicyNames() : () => (manager.cold ? [manager.cold.policy.name] : []),
    });
    const compactor = startCompaction(cfg, manager);
    if (compactor) started.push(() => compactor.stop()); // runs before the manager closes (reverse order)
    const api = buildApi(manager, loop, cache);
    started.push(() => api.close());
    let daemon: Daemon | null = null; // set once started: the compaction route asks whether its stop has begun
    if (compactor) registerCompactionRoutes(api, compactor, () => daemon?.stopStep != null);
    // Probes share the admin API's port (8081 by default, as DESIGN.md says).
    let open = true;
    const checks = healthChecks(manager, () => open);
    registerHealthRoutes(api, kube ? { ...checks, ready: readyWithPolicySource(checks.ready, kube) } : checks);
    api.addHook('onClose', async () => {
      open = false;
    });
    const migrations = () => ({ completedTotal: { ...loop.totals }, active: loop.activeMigrations() });
    const registry = createMetrics(metricsSource(manager, heat, migrations));
    if (cache) registerCacheMetrics(cache, registry);
    if (compactor) registerCompactionMetrics(compactor, registry);
    if (kube) registerKubeMetrics(kube, registry);
    await progress.at('the HTTP listeners');
    const metrics = await listening('metrics', cfg.metrics.port, startMetricsServer({ host: cfg.listenHost, port: cfg.metrics.port, registry }));
    started.push(() => metrics.close());
    await listening('admin API', cfg.api.port, api.listen({ port: cfg.api.port, host: cfg.listenHost }));
    const apiAddr = api.server.address();
    // S3 front end (issue #6): hot buckets on the hot pools, cold buckets through the stripe store.
    const s3 = await listening('S3', cfg.s3.port, S3Frontend.start({ manager, dataDir: cfg.dataDir, host: cfg.listenHost, port: cfg.s3.port, stripes: manager.cold?.stripes, domains: cfg.s3.domains, bodyIdleTimeoutMs: cfg.s3.bodyIdleTimeoutMs, sendIdleTimeoutMs: cfg.s3.sendIdleTimeoutMs, registry }));
    started.push(() => s3.close());
    // Last look: from here the daemon is ready and a stop is Daemon.stop().
    await progress.at('ready');
    const state: DaemonState = {
      pid: process.pid,
      nbd: { host: tcp.address, port: tcp.port, socketPath },
      api: { host: cfg.listenHost, port: typeof apiAddr === 'object' && apiAddr ? apiAddr.port : cfg.api.port },
      s3: { host: s3.host, port: s3.port },
      metrics: { host: metrics.host, port: metrics.port },
    };
    fs.writeFileSync(path.join(cfg.dataDir, STATE_FILE), JSON.stringify(state));
    loop.start();
    // A policy's spec changed (or one came or went): a pass now, not at the next interval.
    if (kube) kube.onSpecChange = () => void loop.reconcileAgain().catch((err: unknown) => log.error('control loop pass failed', { err: (err as Error).message }));
    daemon = new Daemon(cfg, manager, nbd, api, s3, metrics, heat, loop, cache, state, compactor, lock, kube);
    return daemon;
  }

  /** What stop() is waiting for now (null before the stop): the second signal's log line names it. */
  stopStep: string | null = null;

  async stop(): Promise<void> {
    const step = (what: string) => (this.stopStep = what);
    // Every move is aborted at its next chunk, the admin API's (`volumes migrate`) as the control
    // loop's; both wait for them to end (the volume back on its old tier) before anything closes.
    // The segment compaction stops with them: a pass (the background one, or one asked for with
    // `couchestor compact`: unthrottled, as long as the copy of every live record of the segments
    // over the dead fraction) ends after its current batch, and none starts (the request: 409).
    // Stopped later (after the NBD drain, up to 10 s), a pass ran on whole during the stop, one
    // asked for during it too, and was answered 409 as if cut. Before the stripe store closes.
    step('the migrations in flight (aborted at their next chunk) and the segment compaction (ended after its current batch)');
    await Promise.all([stopMigrations(this.manager), this.loop.stop(), this.compactor?.stop()]);
    step('the Kubernetes client');
    await this.kube?.stop();
    step('the NBD clients (their requests in flight, up to 10 s)');
    await this.nbd.close();
    // Pool rebuilds stop before the admin API closes: closing waits for in-flight requests, and a
    // rebuild request (one queued behind the retry timer's run) would run to its end, starting a
    // whole-pool rebuild during the stop. Cut, the run is recorded (interrupted); the queued one is refused.
    step('the pool rebuild');
    await this.manager.cold?.reconstructor.stop();
    step('the admin API (its requests in flight)');
    await this.api.close();
    step('the S3 clients (their requests in flight)');
    await this.s3.close();
    step('the metrics server');
    await this.metrics.close();
    this.heat.stop();
    step('the close of the volumes, the destager, the journal and the index');
    await this.manager.close();
    step('the close of the read cache');
    await this.cache?.close();
    fs.rmSync(path.join(this.cfg.dataDir, STATE_FILE), { force: true });
    this.lock.release(); // last: nothing of this daemon touches the directory any more
  }
}

/**
 * A stop (SIGTERM, SIGINT) asked for while the daemon starts. Carries the
 * step that was running then; Daemon.start has closed what it had opened.
 */
export class StartStopped extends Error {
  override name = 'StartStopped';
  constructor(
    readonly signal: string,
    readonly step: string,
  ) {
    super(`stopped (${signal}) during start-up at ${step}; what it had opened is closed`);
  }
}

/**
 * Where a start is, and whether a stop was asked for. The start calls at()
 * between two steps and ends there (StartStopped) once a stop was asked:
 * every step is whole or taken up by the next start as after a kill (the
 * pools' registration, the journal replay, an interrupted RELEASE), so none
 * is cut in the middle. A step runs to its end (the journal replay runs in
 * one go), except a wait that writes nothing (the apiserver's first list, a
 * test pause: until()), which a stop ends at once.
 */
export class StartProgress {
  step = 'the configuration';
  private stopAsked: { signal: string; step: string } | null = null;
  private readonly onStop = new Set<() => void>();

  get stopRequested(): boolean {
    return this.stopAsked !== null;
  }

  /** Asks the start to end at its next step; the first call counts. */
  requestStop(signal: string): void {
    if (this.stopAsked) return;
    this.stopAsked = { signal, step: this.step };
    for (const wake of this.onStop) wake();
  }

  /** Between two steps: throws StartStopped when a stop was asked, else `step` starts. */
  async at(step: string): Promise<void> {
    this.throwIfStopped();
    this.step = step;
    if (ANNOUNCE_START_STEPS) process.stdout.write(`couchestor start-step ${step}\n`);
    if (PAUSE_START_AT_STEP === step) await this.until(pauseStart(`step ${step}`));
  }

  throwIfStopped(): void {
    if (this.stopAsked) throw new StartStopped(this.stopAsked.signal, this.stopAsked.step);
  }

  /** `p`, or StartStopped as soon as a stop is asked: for a wait that writes nothing. */
  until<T>(p: Promise<T>): Promise<T> {
    this.throwIfStopped();
    let wake: () => void = () => undefined;
    const stopped = new Promise<never>((_, reject) => {
      wake = () => reject(new StartStopped(this.stopAsked!.signal, this.stopAsked!.step));
      this.onStop.add(wake);
    });
    return Promise.race([p, stopped]).finally(() => this.onStop.delete(wake));
  }
}

/** How long a stop during the start waits for the Kubernetes informers' requests in flight to end. */
const KUBE_STOP_AT_START_MS = 1_000;

/** Test hook: with COUCHESTOR_TEST_START_STEPS=1, each step of the start prints `couchestor start-step STEP` on stdout as it begins. */
const ANNOUNCE_START_STEPS = process.env.COUCHESTOR_TEST_START_STEPS === '1';

const SERVE_LOCKED_ADVICE = 'one process at a time may open a data directory (a second daemon would replay and destage the same journal): stop it first, or serve another --data-dir';

/**
 * Test hook: with COUCHESTOR_TEST_PAUSE_START=after-open in the daemon's
 * environment, a start stops for good once the index is open and the journal
 * replayed (the destager running), before any listener and before daemon.json
 * is written: the window a CLI cannot see through daemon.json. It prints
 * `couchestor paused start-after-open {"pid":N}` and waits for a signal.
 */
const PAUSE_START_AFTER_OPEN = process.env.COUCHESTOR_TEST_PAUSE_START === 'after-open';
/** With COUCHESTOR_TEST_PAUSE_START=step:STEP, the start stops for good as step STEP begins (`couchestor paused start-step STEP {"pid":N}`); a stop ends it. */
const PAUSE_START_AT_STEP = process.env.COUCHESTOR_TEST_PAUSE_START?.startsWith('step:') ? process.env.COUCHESTOR_TEST_PAUSE_START.slice('step:'.length) : null;

/**
 * Test hook: with COUCHESTOR_TEST_INDEX_WRITE_AT_SECOND_SIGNAL=1, a second
 * signal to a started daemon first queues an index transaction and ends it
 * at the next turn of the event loop: what a second signal meets when it
 * lands while a commit is queued (an S3 PUT's index flip, a destage's, the
 * heat samples'), as it often does on a busy node. Found so by a loop of
 * stops with NBD writers and S3 PUTs (1 hang in 33), and made certain here.
 */
const INDEX_WRITE_AT_SECOND_SIGNAL = process.env.COUCHESTOR_TEST_INDEX_WRITE_AT_SECOND_SIGNAL === '1';

function pauseStart(point: string): Promise<never> {
  process.stdout.write(`couchestor paused start-${point} ${JSON.stringify({ pid: process.pid })}\n`);
  // A bare promise holds no handle: the process would end (exit 13). The timer holds it.
  setInterval(() => undefined, 60_000);
  return new Promise<never>(() => undefined);
}

/**
 * The second signal: the process ends at once, by that signal (a shell and
 * the container runtime report 128 + its number: 143 for SIGTERM, as a stop
 * during the start exits), whatever the stop was waiting for. It skips nothing the durability
 * contract needs. An acknowledged write is durable before its answer: an
 * NBD FLUSH or FUA write only after its fdatasync (the journal's group
 * commit, the volume file's), an S3 PUT's 200 only after its data is synced
 * and its index record committed. So the stop's waits are for what was
 * never promised: NBD requests in flight (unanswered writes may be lost, as
 * in any crash), a copy (an aborted or cut move keeps the old copy: the
 * index flips a chunk only after its new copy is durable, and frees the old
 * only after the flip), a destage (the journal keeps its records until
 * their stripe is committed), the close of the index (LMDB's copy-on-write
 * commit with two meta pages: a process ending mid-commit leaves the last
 * commit, which a reader was shown only once durable). What is lost is
 * cheap: the read cache's L2 (marked unclean while open: the next start
 * empties it) and the heat counted since its last write to the index (one a
 * pass, at most 30 s apart). The kernel drops the data
 * directory's and pools' locks with the process; the next start removes the
 * daemon.json left behind, replays the journal, finishes or undoes an
 * interrupted move or RELEASE: as after a SIGKILL, which the crash tests
 * cover.
 */
function exitNow(sig: string, first: string, waitingFor: string): never {
  log.warn('second signal: exiting now, without waiting for the stop to end; every acknowledged write is durable already, the next start recovers the rest as after a crash', { signal: sig, first, waitingFor });
  // By the signal, not process.exit(128 + n), which could hang for good on LMDB's write thread (see end-by-signal.ts).
  endBySignal(sig as NodeJS.Signals);
}

/**
 * A failed index commit (the metadata disk full, MDB_MAP_FULL) leaves
 * rejections lmdb-js made that no caller can handle (isLmdbCommitFailure);
 * Node 20 ends the process on them. Instead the index is latched failed
 * (MetaStore.commitFailed): every later FLUSH that needs it and every S3
 * write fails with MetadataFailed, /readyz and /healthz name it, reads and
 * other volumes go on. Any other unhandled rejection is rethrown, which
 * ends the process as Node's default does. Returns the remover.
 */
function survivingIndexCommitFailures(meta: MetaStore): () => void {
  let logged: Error | null = null;
  const onUnhandled = (reason: unknown, promise: Promise<unknown>) => {
    if (!isLmdbCommitFailure(reason, promise)) throw reason;
    meta.commitFailed(reason);
    // Logged once the cause is latched too (lmdb-js's writer error carries it in commitError), once per latch.
    void Promise.allSettled([(reason as { commitError?: unknown }).commitError]).then(() => {
      if (meta.failed === logged) return;
      logged = meta.failed;
      log.error('metadata index: a commit failed; writes that need the index fail until the daemon restarts', { err: logged!.message });
    });
  };
  process.on('unhandledRejection', onUnhandled);
  return () => process.off('unhandledRejection', onUnhandled);
}

/** Names the listener in a bind failure: "S3 port 9000: listen EADDRINUSE ...". */
async function listening<T>(what: string, port: number, bound: Promise<T>): Promise<T> {
  try {
    return await bound;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`cannot listen for ${what} on port ${port}: ${e.code === 'EADDRINUSE' ? 'the port is in use (another daemon? pick another with --' + flagFor(what) + ')' : e.message}`, { cause: err });
  }
}

function flagFor(what: string): string {
  return what === 'admin API' ? 'api-port' : what === 'NBD' ? 'nbd-port' : `${what.toLowerCase()}-port`;
}

export async function serve(dataDir: string, overrides: (cfg: DaemonConfig) => void): Promise<void> {
  // Handlers first of all: without one a SIGTERM during the start (a journal
  // replay, a wait for the apiserver) killed the process wherever it was, or,
  // as PID 1 in a container, was ignored until the grace period's SIGKILL.
  // During the start a stop ends it at its next step (StartProgress); once
  // ready, Daemon.stop(). A second signal while stopping, during the start or
  // after it, is the operator's "now" (a second Ctrl-C, `docker stop` after
  // one): exitNow, which says what that skips and why nothing acknowledged is lost.
  const progress = new StartProgress();
  let daemon: Daemon | null = null;
  let firstSignal: string | null = null;
  const stop = (sig: string) => {
    if (firstSignal !== null) {
      const first = firstSignal;
      const now = () => exitNow(sig, first, daemon ? (daemon.stopStep ?? 'the start of the stop') : `the end of the start-up step ${progress.step}`);
      if (INDEX_WRITE_AT_SECOND_SIGNAL && daemon) {
        void daemon.manager.meta.transaction(() => undefined);
        setImmediate(now);
        return;
      }
      now();
    }
    firstSignal = sig;
    if (!daemon) {
      log.info('stopping during start-up: at the end of the step in progress (a second signal exits now)', { signal: sig, step: progress.step });
      progress.requestStop(sig);
      return;
    }
    log.info('stopping (a second signal exits now)', { signal: sig });
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        log.error('shutdown failed', { err: (err as Error).message });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let cfg: DaemonConfig;
  try {
    // Before loadConfig, which may write the default configuration: a refused
    // second daemon changes nothing in the directory.
    const lock = DataDirLock.acquire(dataDir, 'serve', SERVE_LOCKED_ADVICE);
    try {
      cfg = loadConfig(dataDir);
      overrides(cfg);
    } catch (err) {
      lock.release();
      throw err;
    }
    daemon = await Daemon.start(cfg, { lock, progress });
  } catch (err) {
    if (!(err instanceof StartStopped)) throw err;
    // Exit status as a shell reports a process killed by that signal (143 for SIGTERM): not 0, the daemon never served.
    process.stderr.write(`couchestor: ${err.message}\n`);
    process.exit(128 + (os.constants.signals[err.signal as NodeJS.Signals] ?? 15));
  }
  const lmdbProblem = unpatchedLmdbReason('self');
  if (lmdbProblem) log.warn('the index runs an unpatched lmdb-js: a failed page write (full or failing metadata disk) overflows a heap buffer; reinstall (npm ci) without PREBUILDS_ONLY/LMDB_PREBUILD', { reason: lmdbProblem });
  // One machine-readable line on stdout: tests and scripts wait for it.
  process.stdout.write(`couchestor ready ${JSON.stringify(daemon.state)}\n`);
  log.info('serving', { dataDir: cfg.dataDir, nbd: `${daemon.state.nbd.host}:${daemon.state.nbd.port}`, socket: daemon.state.nbd.socketPath, api: daemon.state.api.port, s3: daemon.state.s3.port });
}
