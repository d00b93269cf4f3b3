// The LMDB index: pools, volumes and the chunk map (volume, chunk) -> state.
// Every mutation is an LMDB transaction; callers that promise durability
// await `durable()` which resolves once all earlier writes are synced.
import { open, type RootDatabase, type Database, type Transaction } from 'lmdb';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { ensureDurableDir, syncDirSync } from '../dir-sync.js';
import { MetadataFailed } from '../errors.js';
import path from 'node:path';
import type { StripeRef } from '../ec/stripe-store.js';

export type Tier = 'hot' | 'warm' | 'cold';
export const TIERS: readonly Tier[] = ['hot', 'warm', 'cold'];

export interface PoolRecord {
  name: string;
  path: string;
  tier: Tier;
  capacityBytes: number;
  labels: Record<string, string>;
  /**
   * The uuid in the pool directory's identity file (pools/identity.ts): the
   * directory is this pool only while its identity names it. Absent: a record
   * from a build before the identity (openManager writes one at start when the
   * directory holds our layout).
   */
  uuid?: string;
}

export interface VolumeRecord {
  name: string;
  id: number;
  sizeBytes: number;
  chunkSizeBytes: number;
  /** Tier the volume's chunks are placed on (migration changes it). */
  tier: Tier;
  /** Pool holding the volume's hot/warm data file. */
  poolName: string;
  readOnly: boolean;
  createdMs: number;
  /** User labels, matched by StoragePolicy volumeSelector. */
  labels?: Record<string, string>;
  /**
   * Hot/warm pools whose file of this volume preservation mode keeps on
   * purpose once no chunk is in it (a preserving move's source; for a cold
   * volume, its placement pool when a preserving move to cold kept the
   * file's bytes). Written in the tier switch's commit, before any chunk
   * moves, so a restart can tell such a copy from a file a kill left between
   * the last SWITCH and RELEASE: a file no chunk is in, other than a hot/warm
   * volume's placement file, whose pool is not listed here is such a
   * leftover, and the next daemon start finishes its RELEASE (volumes/
   * manager.ts finishInterruptedReleases). Absent: a record written before
   * this field existed; then nothing is known, every such file counts as
   * kept (the old behaviour: freed by `volumes release` or the next move),
   * and the volume's next move or `volumes release` writes the list.
   */
  keptFilePools?: string[];
  /**
   * Hot/warm pools replaced by `couchestor pools replace --discard-volumes`
   * while chunks of this volume were only there: that data is gone, and the
   * volume never opens again (reads are I/O errors, never zeros) until it is
   * deleted.
   */
  lostOnPools?: string[];
}

/** Chunk states in the chunk map. Absent = never written (reads as zeros). */
export const enum ChunkState {
  Unallocated = 0,
  /** Data lives in the volume's file on `pool`. */
  Allocated = 1,
  /** Trimmed/zeroed: reads as zeros, but the file region may hold stale bytes. */
  Discarded = 2,
  /** Data lives in an erasure-coded stripe (`stripe`). */
  Cold = 3,
}

export interface ChunkEntry {
  state: ChunkState;
  /**
   * Pool whose volume file holds the chunk when Allocated: usually the
   * volume's poolName, another hot/warm pool while (or after an interrupted)
   * move between pools. '' for Cold chunks.
   */
  pool: string;
  stripe?: StripeRef;
  /** Highest journal sequence merged into this chunk's stripe (replay skips older records). */
  destagedSeq?: number;
  /**
   * Highest stripe generation the chunk has had, kept while it is not Cold
   * (after a promote) so its next stripe is numbered above every older one.
   */
  lastGeneration?: number;
  /**
   * The stripe a cold -> hot migration in preservation mode kept (its SWITCH
   * did not free it): still referenced, so compaction and fsck keep it,
   * until `volumes release` or a volume delete frees it. Any state.
   */
  preserved?: StripeRef;
}

/**
 * A cold pool whose last rebuild was not complete (ec/reconstruction.ts
 * incompleteRebuilds), kept across restarts: the volumes it could not open
 * and the stripes it left not rebuilt. Gone once the pool is fully rebuilt.
 */
export interface IncompleteRebuildRecord {
  volumesSkipped: string[];
  notRebuilt: number;
  /**
   * Absent: the last rebuild finished and left the above. 'running': a
   * whole-pool rebuild started (written before it lands anything) and has not
   * finished; the fields are what was listed before it. A daemon that finds
   * it at start died during that rebuild: the pool is listed as
   * 'interrupted'. 'interrupted': a whole-pool rebuild was cut (stop, crash,
   * failure); how many stripes it left is not known (notRebuilt at least 1)
   * and the retry timer rebuilds the whole pool.
   */
  state?: 'running' | 'interrupted';
}

export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class MetaStore {
  private constructor(
    private readonly root: RootDatabase,
    readonly pools: Database<PoolRecord, string>,
    readonly volumes: Database<VolumeRecord, string>,
    readonly chunks: Database<ChunkEntry, [number, number]>,
    private readonly counters: Database<number, string>,
    /**
     * Dead (no longer referenced) shard-record bytes per cold segment,
     * [pool, segment] -> bytes: which segments are worth compacting
     * (ec/compaction.ts). A hint, recounted from the index at start-up.
     */
    readonly segmentDeadBytes: Database<number, [string, number]>,
    /** Cold pools not fully rebuilt, pool name -> record (Reconstructor writes, loads at start). */
    readonly incompleteRebuilds: Database<IncompleteRebuildRecord, string>,
    /** Hot pool name -> the cold tier's journal directory made on it (journalMadeOn). */
    private readonly journalDirs: Database<string, string>,
    /** 'id' -> this data directory's id (dataDirId), written in every pool identity. */
    private readonly dataDirIdentity: Database<string, string>,
    /**
     * Journal file number -> 1 for every live journal file whose name is durable
     * (Journal.fileLog): recorded before any FLUSH counting its records is
     * answered, removed before the file is unlinked or made a spare. A recorded
     * file missing at open held acknowledged writes (VolumeManager.refuseMissingJournalFiles).
     */
    readonly journalFiles: Database<number, number>,
    /**
     * Volumes being deleted, id -> the record as it was (deleteVolume):
     * out of the namespace, their chunk map still being removed a batch at a
     * time (removeDeletingChunks, whose last batch removes the mark). A mark
     * found at start is finished in the background (VolumeManager.resumeDeletes).
     */
    private readonly deletingVolumes: Database<VolumeRecord, number>,
  ) {
    for (const db of [pools, volumes, chunks, counters, segmentDeadBytes, incompleteRebuilds, journalDirs, dataDirIdentity, journalFiles, deletingVolumes] as object[]) this.latchingWrites(db);
    this.countingChunkWrites(chunks);
  }

  /** Watchers of writes to chunk maps (watchChunkWrites), by volume id: at most one entry per volume being opened. */
  private readonly chunkWatchers = new Map<number, Set<ChunkWriteWatcher>>();

  /**
   * Keeps the chunk of every put and remove of `volumeId`'s chunk entries
   * from now until done() (takeChunks): a volume opened a slice at a time
   * (VolumeManager.openSliced) knows which entries changed while it read
   * its map, to read them again. Kept when the write is made, before it
   * commits: a write queued before the watch is not kept (the caller awaits
   * a commit after starting it for those).
   */
  watchChunkWrites(volumeId: number): { takeChunks(): number[] | null; done(): void } {
    let set = this.chunkWatchers.get(volumeId);
    if (set === undefined) this.chunkWatchers.set(volumeId, (set = new Set()));
    const watchers = set;
    const w: ChunkWriteWatcher = { chunks: new Set() };
    watchers.add(w);
    return {
      // The chunks written since the last take (null: more than WATCHED_CHUNKS_MAX of them).
      takeChunks: () => {
        const taken = w.chunks === null ? null : [...w.chunks];
        w.chunks = new Set();
        return taken;
      },
      done: () => {
        if (!watchers.delete(w)) return;
        if (watchers.size === 0 && this.chunkWatchers.get(volumeId) === watchers) this.chunkWatchers.delete(volumeId);
      },
    };
  }

  private countingChunkWrites(chunks: Database<ChunkEntry, [number, number]>): void {
    const w = chunks as unknown as Record<'put' | 'remove', (...args: unknown[]) => unknown>;
    for (const m of ['put', 'remove'] as const) {
      const write = w[m].bind(chunks);
      w[m] = (...args: unknown[]) => {
        if (this.chunkWatchers.size > 0) {
          const key = args[0];
          const watchers = Array.isArray(key) ? this.chunkWatchers.get(key[0] as number) : undefined;
          if (watchers !== undefined) {
            for (const w of watchers) if (w.chunks !== null && w.chunks.add((key as [number, number])[1]).size > WATCHED_CHUNKS_MAX) w.chunks = null;
          }
        }
        return write(...args);
      };
    }
  }

  /**
   * A failed commit rejects `db`'s put, remove and transaction with the latched
   * MetadataFailed (commitFailed), as transaction() and durable() do, not
   * lmdb-js's "Commit failed (see commitError for details)", whose
   * commitError nobody handles: an awaited write then answered S3 500
   * "try again" (CreateMultipartUpload) and the offline CLI ended on an
   * unhandled rejection. One wrapper per Database (lmdb-js hands out one
   * object per name). Its transaction(), like MetaStore.transaction(), is
   * refused once latched: each further failed commit was lmdb-js's stderr
   * print and another failed page write (mdb.c's overflow, see daemon.ts).
   */
  private latchingWrites<D extends object>(db: D): D {
    if (latching.has(db)) return db;
    latching.add(db);
    const w = db as unknown as Record<'put' | 'remove' | 'transaction', (...args: unknown[]) => unknown>;
    const transaction = w.transaction.bind(db);
    // As MetaStore.transaction: refused once latched (nothing written), a failed commit rejects with the latch.
    w.transaction = (...args: unknown[]) =>
      this.commitFailure ? Promise.reject(this.commitFailure) : (transaction(...args) as Promise<unknown>).then(undefined, (err: unknown) => this.rejectLatched(err));
    for (const m of ['put', 'remove'] as const) {
      const write = w[m].bind(db);
      w[m] = (...args: unknown[]) => {
        const done = write(...args);
        if (typeof (done as PromiseLike<unknown> | undefined)?.then !== 'function') return done;
        return (done as Promise<unknown>).then(undefined, (err: unknown) => this.rejectLatched(err));
      };
    }
    return db;
  }

  /**
   * This data directory's id, made (durably) the first time it is asked for.
   * Every pool identity names it: a pool directory of another data directory
   * (another node's disk) is never taken for one of ours.
   */
  dataDirId(): string {
    const have = this.dataDirIdentity.get('id');
    if (have !== undefined) return have;
    const id = randomUUID();
    this.dataDirIdentity.putSync('id', id);
    return id;
  }

  static open(dataDir: string): MetaStore {
    const dir = path.join(dataDir, 'meta');
    ensureDurableDir(dir);
    const fresh = !existsSync(path.join(dir, 'data.mdb'));
    // overlappingSync off: a resolved commit is already on stable storage,
    // which is what FLUSH/FUA promise to clients.
    const root = open({ path: dir, overlappingSync: false, maxDbs: 64, mapSize: 4 * 1024 ** 3 });
    // LMDB syncs its data file, never the directory: the name of a data.mdb
    // it just made is durable only after this (before any commit is
    // reported durable: none has been issued yet).
    if (fresh) syncDirSync(dir);
    return new MetaStore(
      root,
      root.openDB<PoolRecord, string>({ name: 'pools' }),
      root.openDB<VolumeRecord, string>({ name: 'volumes' }),
      root.openDB<ChunkEntry, [number, number]>({ name: 'chunks' }),
      root.openDB<number, string>({ name: 'counters' }),
      root.openDB<number, [string, number]>({ name: 'segment-dead-bytes' }),
      root.openDB<IncompleteRebuildRecord, string>({ name: 'rebuild-incomplete' }),
      root.openDB<string, string>({ name: 'journal-dirs' }),
      root.openDB<string, string>({ name: 'data-dir-identity' }),
      root.openDB<number, number>({ name: 'journal-files' }),
      root.openDB<VolumeRecord, number>({ name: 'deleting-volumes' }),
    );
  }

  /**
   * Whether the cold tier's journal directory was ever made on hot pool
   * `pool` (markJournalMade), or, with no pool, on any: its directory missing
   * later is a lost journal (a wiped or wrong disk), not a first start.
   */
  journalMadeOn(pool?: string): boolean {
    return pool === undefined ? this.journalDirs.getKeysCount() > 0 : this.journalDirs.get(pool) !== undefined;
  }

  /** The pools a journal directory was made on (markJournalMade), by name. */
  journalPools(): string[] {
    return [...this.journalDirs.getKeys()];
  }

  /** Records, durably before it returns, that the journal directory `dir` exists on hot pool `pool`. */
  markJournalMade(pool: string, dir: string): void {
    if (this.journalDirs.get(pool) === dir) return;
    this.journalDirs.putSync(pool, dir);
  }

  /** The cold tier's journal identity (journal/.couchestor-journal) recorded at its open, if any. */
  journalId(): string | undefined {
    return this.dataDirIdentity.get('journal-id');
  }

  /** Records the journal identity, durably, when it changed. */
  setJournalId(id: string): void {
    if (this.dataDirIdentity.get('journal-id') !== id) this.dataDirIdentity.putSync('journal-id', id);
  }

  /** Set once a commit failed (see durable, commitFailed). */
  private commitFailure: Error | null = null;
  /** Whether commitFailure names the cause (lmdb-js's own error says only "see commitError"). */
  private commitCauseKnown = false;

  /**
   * Resolves once every write issued before the call is durable. After a
   * failed commit it always rejects: lmdb-js rejects only the callers
   * waiting on that commit, and a later call with nothing new to commit
   * resolves at once although the failed writes are not on disk (and the
   * callers' in-memory state no longer matches the index: restart).
   */
  async durable(): Promise<void> {
    if (this.commitFailure) throw this.commitFailure;
    try {
      await this.root.flushed;
    } catch (err) {
      this.commitFailed(err);
      throw this.commitFailure!;
    }
  }

  /**
   * Latches a failed index commit (see durable): every later durable()
   * rejects with it and the health probes report it. Typed, and saying what
   * to do: S3 answers it 503 (not "try again"). `err` is what a writer of
   * the commit was rejected with, or its cause; lmdb-js's writer error
   * carries the cause in a second promise (commitError), handled here (left
   * unhandled it ends the process) and named in the latch once it settles.
   */
  commitFailed(err: unknown): void {
    const commitError = lmdbCommitErrorOf(err);
    if (commitError) commitError.then(undefined, (cause: unknown) => this.commitFailed(cause));
    const known = !commitError;
    if (this.commitFailure && (this.commitCauseKnown || !known)) return;
    this.commitFailure = new MetadataFailed(`metadata index commit failed (${(err as Error | null)?.message ?? String(err)}); restart the daemon`);
    latched.add(this.commitFailure);
    this.commitCauseKnown = known;
  }

  /** The latched commit failure (see durable), or null. */
  get failed(): Error | null {
    return this.commitFailure;
  }

  /** A named sub-database for another part of the store (objects, stripes, ...). */
  openDB<V, K extends import('lmdb').Key = string>(name: string): Database<V, K> {
    return this.latchingWrites(this.root.openDB<V, K>({ name }));
  }

  /**
   * Runs `fn` in one write transaction. lmdb-js does NOT roll back writes
   * made before `fn` throws: do every check first, then write. A failed
   * commit rejects with the latched MetadataFailed (commitFailed), not
   * lmdb-js's "Commit failed (see commitError for details)".
   */
  transaction<T>(fn: () => T): Promise<T> {
    // Latched: refused before any write (lmdb-js would try to commit again, a native error print and a failed page write each).
    if (this.commitFailure) return Promise.reject(this.commitFailure);
    return this.root.transaction(fn).catch((err: unknown) => this.rejectLatched(err));
  }

  /**
   * Rethrows `err`, or, for lmdb-js's "Commit failed" writer error, latches
   * it (commitFailed) and throws the latch once its cause is known (lmdb-js
   * rejects commitError in the same commit's callback): a client or the
   * CLI reads "metadata index commit failed (No space left on device ...)",
   * not "(Commit failed (see commitError for details))".
   */
  private async rejectLatched(err: unknown): Promise<never> {
    const commitError = lmdbCommitErrorOf(err);
    if (!commitError) throw err;
    this.commitFailed(err);
    await Promise.allSettled([commitError]);
    throw this.commitFailure!;
  }

  nextVolumeId(): number {
    return this.root.transactionSync(() => {
      const id = (this.counters.get('volumeId') ?? 0) + 1;
      this.counters.putSync('volumeId', id);
      return id;
    });
  }

  listPools(): PoolRecord[] {
    return [...this.pools.getRange()].map((e) => e.value);
  }

  listVolumes(): VolumeRecord[] {
    return [...this.volumes.getRange()].map((e) => e.value);
  }

  /** Chunk entries of one volume, in chunk order: from chunk `fromChunk` on, at most `limit` of them (a slice of the map: VolumeManager.openSliced). */
  *volumeChunks(volumeId: number, fromChunk = 0, limit?: number): Iterable<{ chunkIndex: number; entry: ChunkEntry }> {
    for (const { key, value } of this.chunks.getRange({ start: [volumeId, fromChunk], end: [volumeId + 1, 0], ...(limit !== undefined ? { limit } : {}) })) {
      yield { chunkIndex: key[1], entry: value };
    }
  }

  /**
   * A delete's first step, one small transaction: volume `rec` leaves the
   * namespace (its name is free for a new volume, with a new id) and a
   * "deleting <id>" mark is recorded, durable before it returns. Its chunk
   * map stays for removeDeletingChunks: removed in one transaction, a
   * 1M-entry map held the event loop ~2.4 s (and reading it ~1.3 s more).
   */
  async deleteVolume(rec: VolumeRecord): Promise<void> {
    await this.transaction(() => {
      if (this.volumes.get(rec.name)?.id === rec.id) void this.volumes.remove(rec.name);
      void this.deletingVolumes.put(rec.id, rec);
    });
    await this.durable();
  }

  /**
   * One batch of a delete's chunk-map removal, one transaction: the first
   * `limit` chunk entries of volume `id` (marked deleting) are removed and
   * returned, as they were in that transaction; the batch that finds fewer
   * removes the mark too. Resolves once committed (durable: overlappingSync
   * is off), so what the entries named may be freed then.
   */
  removeDeletingChunks(id: number, limit: number): Promise<{ removed: ChunkEntry[]; done: boolean }> {
    return this.transaction(() => {
      const got = [...this.chunks.getRange({ start: [id, 0], end: [id + 1, 0], limit })];
      for (const { key } of got) void this.chunks.remove(key);
      const done = got.length < limit;
      if (done) void this.deletingVolumes.remove(id);
      return { removed: got.map((e) => e.value), done };
    });
  }

  /** Chunk-map removals of deleted volumes running in this process (VolumeManager.removeChunkMap). */
  private readonly removals = new Set<Promise<unknown>>();

  /** Registers a running chunk-map removal, until it settles (deletesSettled). */
  removalRunning(removal: Promise<unknown>): void {
    this.removals.add(removal);
    const done = () => void this.removals.delete(removal);
    removal.then(done, done);
  }

  /**
   * Resolves once no chunk-map removal runs in this process (one started
   * meanwhile waited for too). A compaction pass waits for it first: the
   * space a delete frees is what the pass is asked to reclaim (its hints
   * are told as each batch commits), and the records of a volume being
   * deleted are never copied as live.
   */
  async deletesSettled(): Promise<void> {
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }

  /** The volumes being deleted (deleteVolume's marks not yet removed). */
  listDeletingVolumes(transaction?: Transaction): VolumeRecord[] {
    return [...this.deletingVolumes.getRange(transaction !== undefined ? { transaction } : {})].map((e) => e.value);
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

/** Databases whose writes MetaStore.latchingWrites wraps. */
const latching = new WeakSet<object>();
/** Every MetadataFailed commitFailed latched: a write nobody awaited rejects with one (isLmdbCommitFailure). */
const latched = new WeakSet<Error>();

/** lmdb-js's writer error for a failed commit ("Commit failed (see commitError for details)"): its commitError promise, else null. */
function lmdbCommitErrorOf(err: unknown): PromiseLike<unknown> | null {
  const commitError = (err as { commitError?: unknown } | null)?.commitError;
  return err instanceof Error && typeof (commitError as PromiseLike<unknown> | undefined)?.then === 'function' ? (commitError as PromiseLike<unknown>) : null;
}

/**
 * Whether an unhandled rejection is lmdb-js reporting a failed index commit,
 * the only ones a daemon survives (its process handler latches the index,
 * MetaStore.commitFailed, and rethrows anything else). lmdb-js makes two
 * kinds no caller may hold: the promise a write returned, when the writer
 * did not await it (Volume.setChunk's is handled, a compaction pass's
 * dead-bytes hint is not), rejected with "Commit failed (see commitError for
 * details)" and the cause in `commitError`; and that commitError promise
 * itself, awaited by no one (lmdb-js issue #368), rejected with the cause: an
 * Error with lmdb's numeric code (an errno such as 28 ENOSPC, or MDB_MAP_FULL
 * -30792), on a promise carrying its own `reject`. A write made on a
 * MetaStore's Database rejects instead with the latched MetadataFailed
 * (latchingWrites), accepted too.
 */
export function isLmdbCommitFailure(reason: unknown, promise: Promise<unknown>): boolean {
  if (reason instanceof Error && latched.has(reason)) return true;
  if (lmdbCommitErrorOf(reason) && /^Commit failed\b/.test((reason as Error).message)) return true;
  return reason instanceof Error && typeof (reason as { code?: unknown }).code === 'number' && typeof (promise as { reject?: unknown }).reject === 'function';
}

/** One watchChunkWrites: the chunks written since its last take (null past WATCHED_CHUNKS_MAX). */
interface ChunkWriteWatcher {
  chunks: Set<number> | null;
}

/** Distinct chunks a watcher keeps before it says "too many" (VolumeManager.openSliced then reads the whole map again). */
const WATCHED_CHUNKS_MAX = 65_536;
