// Cold chunks as Reed-Solomon stripes: k data + m parity shard records, each
// appended to the segment store of a different cold pool. Reads verify every
// shard; up to m missing or corrupt shards are repaired inline (degraded read).
import { statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { InsufficientShards, NoSuitablePool, TooFewOnlinePools } from '../errors.js';
import type { Database } from 'lmdb';
import type { Pool } from '../pools/pool.js';
import type { MetaStore } from '../meta/store.js';
import { OBJECTS_DB, PARTS_DB } from '../objects/cold-segments.js';
import type { CacheManager, L3Backend } from '../cache/index.js';
import { log } from '../../log.js';
import { decodeStripe, decodeTargets, encodeStripe, lostShardTables, readRebuildLostShards, reconstructMissing } from './codec.js';
import type { ErasureCodingPolicy } from './policy.js';
import { decodeShardHeader, decodeShardRecord, encodeShardHeader, encodeShardRecord, SHARD_HEADER_BYTES, type DecodedShardRecord } from './shard-record.js';
import { SegmentStore, ShardNotFound, type SegmentLocation, type SegmentStoreOptions } from './segment-store.js';

export interface ShardRef {
  pool: string;
  segment: number;
  offsetBytes: number;
  lengthBytes: number;
}

export interface StripeRef {
  /** Owner (volume/object) id, hex of the 16 bytes in every shard header. */
  ownerId: string;
  chunkIndex: number;
  generation: number;
  dataShards: number;
  parityShards: number;
  stripeSizeBytes: number;
  dataLengthBytes: number;
  shards: ShardRef[];
}

export interface StripeHealth {
  /** Shard indexes that are missing, unreadable or fail their CRC. */
  bad: number[];
}

/** Every shard of a stripe as read and verified; undefined where bad (listed in `bad`). */
export interface InspectedStripe extends StripeHealth {
  shards: (Buffer | undefined)[];
}

/** A stripe's rebuilt shard records, decoded and encoded but not yet written (prepareRebuild). */
export interface PreparedRebuild {
  /** Shard indexes rebuilt, ascending; records[t] is shard bad[t]. */
  bad: number[];
  records: Buffer[];
  /** Sum of records' lengths (what landing them holds in memory). */
  lengthBytes: number;
  /** Buffers (under `records`) from the store's record pool, returned to it by landRebuild(). */
  pooled: Buffer[];
}

/** A stripe whose shard `lost` (the only one on the pool being rebuilt) is to be rebuilt (StripeStore.prepareLostShards). */
export interface LostShardJob {
  ref: StripeRef;
  lost: number;
}

/** Which shard of which stripe a place told dead was (StripeStore.onShardsDead). */
export interface DeadShardOf {
  ref: StripeRef;
  index: number;
}

/** Which chunk a stripe belongs to (for queuing its reconstruction). */
export interface StripeContext {
  volumeId: number;
  chunkIndex: number;
}

/**
 * Which holder of a registered source (reconstruction.ts StripeHolderSource)
 * a stripe read belongs to: the reader names it, so a degraded read is
 * queued under it without any lookup from stripe to holder.
 */
export interface HolderStripeContext {
  /** The source's prefix (StripeHolderSource.prefix). */
  source: string;
  /** The holder key within that source. */
  key: string;
}

/** What a reader passes with a stripe read for onDegraded: a volume's chunk or a holder source's key. */
export type ReadContext = StripeContext | HolderStripeContext;

export interface StripeStoreCounters {
  stripesWritten: number;
  healthyReads: number;
  degradedReads: number;
  failedReads: number;
  shardsRebuilt: number;
  /** Shard reads that followed a compaction forward (the reader's reference predates the index flip). */
  forwardedShardReads: number;
}

/**
 * Longest read inspectMany() makes of records stored back to back: 16 of
 * the default 256 KiB shards; long enough that per-read overhead is noise,
 * short enough that one read does not hold a threadpool thread for long.
 */
export const MAX_RUN_BYTES = 4 * 1024 * 1024 + 16 * SHARD_HEADER_BYTES;
/** Bytes of rebuilt-record buffers kept for reuse (StripeStore.recordPool): what a scrub has landing at once. */
export const MAX_POOLED_RECORD_BYTES = 64 * 1024 * 1024;

/**
 * LMDB sub-database of the index: a mark (key poolMarkKey(name)) for every
 * pool a stripe store attached to the index (StripeStore.useIndex) has
 * appended a shard record to, made durable before that append (so before
 * any index entry can name the pool), never removed. A pool whose store opens empty is a new pool if
 * its name is absent, and one that may have been lost and replaced if it is
 * present: an O(1) look-up at start instead of a scan of the whole index.
 */
export const POOLS_WRITTEN_DB = 'cold-pools-written';
/**
 * Key present once the marks cover every pool the index may reference: set
 * by the first useIndex over an index with no reference at all, or after
 * marking every pool known then (an index written before the marks
 * existed). Never a mark's key (those all start "pool:").
 */
const MARKS_COMPLETE_KEY = 'complete';
/** POOLS_WRITTEN_DB's key for `pool`'s mark. */
export function poolMarkKey(pool: string): string {
  return `pool:${pool}`;
}

/** A stripe read back after writing does not match what was written (migration VERIFY). */
export class VerifyMismatch extends Error {
  override name = 'VerifyMismatch';
}

export class StripeStore {
  readonly counters: StripeStoreCounters = { stripesWritten: 0, healthyReads: 0, degradedReads: 0, failedReads: 0, shardsRebuilt: 0, forwardedShardReads: 0 };
  /** Called after a degraded read so reconstruction can be queued. */
  onDegraded: ((ref: StripeRef, health: StripeHealth, ctx: ReadContext | undefined) => void) | null = null;
  private readonly stores = new Map<string, Promise<SegmentStore | null>>();
  /** The stores of `stores` that have opened, for synchronous looks (writeFailure: /readyz, metrics). */
  private readonly opened = new Map<string, SegmentStore>();
  /**
   * Device, inode and birth time of each pool directory when its store was
   * opened (dirKey): a replaced pool gets a fresh store. Not the inode alone:
   * a new file system mounted there has the same root inode number as the
   * last one (tmpfs 1, ext4 2), and the old disk's store was kept.
   */
  private readonly storeIno = new Map<string, string>();
  private lastDegradedLogMs = 0;
  private suppressedDegradedLogs = 0;
  private rotation = 0;
  private cache: CacheManager | null = null;
  /** Stripes being read through the cache (its L3 backend resolves keys here); bounded by reads in flight. */
  private readonly pendingReads = new Map<string, { ref: StripeRef; ctx: ReadContext | undefined }>();
  /**
   * Record buffers of landed rebuilds, reused by the next prepareRebuild():
   * a rebuild then allocates nothing per stripe (fresh 256 KiB buffers drove
   * V8 into a major GC every ~30 stripes, about a third of a rebuild's CPU).
   * Bound: MAX_POOLED_RECORD_BYTES; one record length is pooled (the latest).
   */
  private recordPool: { recordBytes: number; free: Buffer[] } = { recordBytes: 0, free: [] };
  /** Options for segment stores opened from now on (the daemon sets segmentSizeBytes from its config). */
  segmentOptions: SegmentStoreOptions = {};
  /**
   * Where segment compaction copied a record: "pool/segment/offset" of the
   * old place -> the copy (same pool). A reader or a free() holding a
   * reference from before the index flip follows it once the old segment
   * is gone. Insertion order is age; bounded by MAX_FORWARDED_SHARDS (past
   * it the oldest are dropped: such a stale reader loses one shard of its
   * stripe and reads degraded, still correct).
   */
  private readonly forwards = new Map<string, ShardRef>();
  /**
   * Told of shard records no index references any more (segment accounting,
   * compaction.ts): their places (forwards followed), and for each the
   * stripe and shard index it was, so a place on a pool whose store may hold
   * another record there (mayHoldStalePlaces) can be checked (holdsShard).
   */
  onShardsDead: ((shards: ShardRef[], of: readonly DeadShardOf[]) => void) | null = null;
  /**
   * Told of rebuilt records whose flip lost and that sit at the very place
   * the reference they replaced names, on a pool whose store may hold stale
   * places (releaseReplaced): not told dead (live if the flip lost to
   * compaction moving another shard), but a free() of that reference may
   * have been checked while the place held nothing yet (compaction.ts).
   */
  onLostFlipAtSamePlace: ((shards: ShardRef[], of: readonly DeadShardOf[]) => void) | null = null;
  /**
   * Told when a pool's segment store is opened over a replaced or empty
   * directory (before anything uses it): the dead-byte hints of that pool's
   * old segments name another store's bytes. `fresh`: the store holds no
   * record (its segments are all new, so every hint of the pool is void).
   */
  onStoreReplaced: ((pool: string, fresh: boolean) => void) | null = null;
  /** POOLS_WRITTEN_DB once the index is attached (useIndex); null: no marks kept, no store judged replaced. */
  private poolsWritten: Database<number, string> | null = null;
  /** Pools whose mark is durable (a cache of POOLS_WRITTEN_DB); bounded by the cold pools. */
  private readonly markedPools = new Set<string>();
  /** Marks being committed, per pool (the first appends to a pool share one); bounded by the cold pools. */
  private readonly marking = new Map<string, Promise<void>>();
  /**
   * Pools whose current store was opened empty in this process while the
   * pool was marked written (POOLS_WRITTEN_DB: the index may name places
   * on it; a pool lost and replaced, not a new one): those references name
   * places of the store it replaced, which are another record's or none.
   * Bounded by the cold pools.
   */
  private readonly freshStores = new Set<string>();
  private writeEpoch = 0;
  private nextWriteToken = 0;
  /** Write sessions in flight -> the epoch each began in; bounded by concurrent writers (destages, rebuilds, uploads). */
  private readonly writesInFlight = new Map<number, number>();
  private writeWaiters: (() => void)[] = [];
  /** Reader holds (hold()) -> the references held; bounded by reads in flight. */
  private readonly heldByReaders = new Map<number, readonly StripeRef[]>();
  private nextHoldToken = 0;

  constructor(
    private readonly pools: () => Pool[],
    readonly policy: ErasureCodingPolicy,
  ) {}

  private segDir(pool: Pool): string {
    return path.join(pool.rec.path, 'segments');
  }

  /** The pool's segment store; null while the pool is offline (retried on next use). */
  private store(pool: Pool): Promise<SegmentStore | null> {
    let s = this.stores.get(pool.name);
    const ino = dirKey(pool.rec.path);
    const prevIno = this.storeIno.get(pool.name);
    if (s && ino !== prevIno) {
      // The directory was removed or replaced: the old store's files are gone.
      const old = s;
      void old.then((st) => st?.close()).catch(() => undefined);
      this.stores.delete(pool.name);
      this.opened.delete(pool.name);
      s = undefined;
    }
    if (!s) {
      if (ino !== null) this.storeIno.set(pool.name, ino);
      s = pool.isOnline()
        ? mkdir(this.segDir(pool), { recursive: true })
            // A replaced pool's segments/ directory is new: its name is made durable with the first commit.
            .then(async (created) => {
              const st = await SegmentStore.open(this.segDir(pool), { ...this.segmentOptions, createdDir: created !== undefined });
              // Told before any caller gets the store: no record of it is counted yet.
              const fresh = st.segments().every((g) => g.sizeBytes === 0);
              // O(1): no index entry can name a pool without its mark (markWritten precedes every append).
              if (fresh && this.poolMarked(pool.name)) this.freshStores.add(pool.name);
              else this.freshStores.delete(pool.name);
              if (fresh || (prevIno !== undefined && ino !== null && ino !== prevIno)) this.onStoreReplaced?.(pool.name, fresh);
              if (this.stores.get(pool.name) === s) this.opened.set(pool.name, st);
              return st;
            })
            .catch((err: Error) => {
            log.warn('stripe store: pool offline', { pool: pool.name, err: err.message });
            this.stores.delete(pool.name);
            return null;
          })
        : Promise.resolve(null);
      if (pool.isOnline()) this.stores.set(pool.name, s);
    }
    return s;
  }

  private poolByName(name: string): Pool | undefined {
    return this.pools().find((p) => p.name === name);
  }

  /** Online cold pools, rotated so stripes spread evenly. */
  private placement(count: number, exclude: Set<string>): Pool[] {
    const online = this.pools().filter((p) => p.rec.tier === 'cold' && p.isOnline() && !exclude.has(p.name));
    if (online.length < count) {
      throw new TooFewOnlinePools(`need ${count} online cold pools for a stripe, have ${online.length}`);
    }
    const start = this.rotation++ % online.length;
    return Array.from({ length: count }, (_, i) => online[(start + i) % online.length]!);
  }

  /**
   * Attaches the index: from now on every pool is marked in
   * POOLS_WRITTEN_DB before a shard record is appended to it, and a store
   * that opens empty is judged replaced by its mark (mayHoldStalePlaces).
   * Call before the first stripe is written (the manager does, at creation;
   * SegmentCompactor too if nobody did). A store that writes without it
   * keeps no marks, and a later start then takes a pool of its for new.
   *
   * The first call over an index made before the marks existed (no
   * MARKS_COMPLETE_KEY) marks every pool the index knows (its pools table)
   * and every pool configured now: a superset of the pools any reference
   * can name, in one synchronous transaction (O(pools), once). Over an index
   * holding no reference at all it marks nothing.
   */
  useIndex(meta: MetaStore): void {
    if (this.poolsWritten !== null) return;
    const db = meta.openDB<number, string>(POOLS_WRITTEN_DB);
    if (db.get(MARKS_COMPLETE_KEY) === undefined) {
      const nonEmpty = (keys: Iterable<unknown>) => {
        for (const _ of keys) return true;
        return false;
      };
      // Where references live: the chunk map (volumes), cold objects and their multipart parts. Any key
      // at all: the object store's start below every key (lmdb-js's default start skips its 0x01 keys).
      const mayReference =
        nonEmpty(meta.chunks.getKeys({ limit: 1 })) ||
        nonEmpty(meta.openDB<unknown, Buffer>(OBJECTS_DB).getKeys({ start: Buffer.from([0]), limit: 1 })) ||
        nonEmpty(meta.openDB<unknown, Buffer>(PARTS_DB).getKeys({ start: Buffer.from([0]), limit: 1 }));
      const names = mayReference ? new Set([...meta.listPools().map((p) => p.name), ...this.pools().map((p) => p.name)]) : new Set<string>();
      db.transactionSync(() => {
        for (const name of names) void db.put(poolMarkKey(name), 1);
        void db.put(MARKS_COMPLETE_KEY, 1);
      });
      if (names.size > 0) log.info('stripe store: marked the pools of an index written before pool marks', { pools: [...names].sort() });
    }
    this.poolsWritten = db;
  }

  /** Whether `pool` is marked written (POOLS_WRITTEN_DB); false without the index. */
  private poolMarked(pool: string): boolean {
    if (this.markedPools.has(pool)) return true;
    if (this.poolsWritten?.get(poolMarkKey(pool)) === undefined) return false;
    this.markedPools.add(pool);
    return true;
  }

  /**
   * Resolves once `pool`'s mark is durable (at once if it was): awaited
   * before every append to the pool, so an index entry naming a place on it
   * (flipped only after the append) is never committed without the mark.
   * Rejects if the commit fails (the append is then not made). Call it with
   * the store to append to already open: its opening judges it from the
   * marks made before it (store()).
   */
  private markWritten(pool: string): Promise<void> | undefined {
    const db = this.poolsWritten;
    if (db === null || this.poolMarked(pool)) return undefined;
    let p = this.marking.get(pool);
    if (p === undefined) {
      // Committed durably when it resolves (MetaStore: overlappingSync off); LMDB commits in order.
      p = db
        .put(poolMarkKey(pool), 1)
        .then(() => void this.markedPools.add(pool))
        .finally(() => this.marking.delete(pool));
      this.marking.set(pool, p);
    }
    return p;
  }

  private async appendShard(pool: Pool, record: Buffer): Promise<ShardRef> {
    const store = await this.store(pool);
    if (!store) throw new NoSuitablePool(`pool ${pool.name} went offline`);
    // After the store is opened (and judged from the marks as they were): marked first, a new
    // pool's first store would be taken for a replaced one (test/cold-pool-marks).
    await this.markWritten(pool.name);
    const [loc] = await store.append([record]);
    pool.usedBytes += record.length; // compaction passes set it from the segment files (refreshPoolUsage)
    return { pool: pool.name, ...(loc as SegmentLocation) };
  }

  /**
   * Encodes and durably writes one stripe; resolves with its reference. With
   * `verify`, every shard record is read back once durable and must be byte
   * for byte the record written (so its CRC holds), and each data shard's
   * stored payload must equal its slice of `data`: the stored stripe is
   * proven to decode to the source without a decode, a cache fill or a
   * second CRC pass. VerifyMismatch otherwise.
   */
  async writeStripe(ownerId: Buffer, chunkIndex: number, generation: number, data: Buffer, opts: { verify?: boolean } = {}): Promise<StripeRef> {
    const token = this.beginWrite();
    try {
      return await this.writeStripeNow(ownerId, chunkIndex, generation, data, opts);
    } finally {
      this.endWrite(token);
    }
  }

  private async writeStripeNow(ownerId: Buffer, chunkIndex: number, generation: number, data: Buffer, opts: { verify?: boolean }): Promise<StripeRef> {
    const p = this.policy;
    const shards = await encodeStripe(p, data);
    const pools = this.placement(p.dataShards + p.parityShards, new Set());
    const records = shards.map((shard, i) =>
      encodeShardRecord(
        { ownerId, chunkIndex, stripeGeneration: generation, shardIndex: i, dataShards: p.dataShards, parityShards: p.parityShards },
        shard,
        p.compression,
      ),
    );
    const refs = await Promise.all(records.map((record, i) => this.appendShard(pools[i]!, record)));
    const ref: StripeRef = {
      ownerId: ownerId.toString('hex'),
      chunkIndex,
      generation,
      dataShards: p.dataShards,
      parityShards: p.parityShards,
      stripeSizeBytes: p.stripeSizeBytes,
      dataLengthBytes: data.length,
      shards: refs,
    };
    if (opts.verify === true) await this.verifyWritten(ref, records, data);
    this.counters.stripesWritten++;
    return ref;
  }

  private async verifyWritten(ref: StripeRef, records: Buffer[], data: Buffer): Promise<void> {
    const shardBytes = ref.stripeSizeBytes / ref.dataShards;
    await Promise.all(
      records.map(async (written, i) => {
        const s = ref.shards[i]!;
        const pool = this.poolByName(s.pool);
        const store = pool ? await this.store(pool) : null;
        if (!store) throw new VerifyMismatch(`chunk ${ref.chunkIndex}: pool ${s.pool} of shard ${i} went offline before verification`);
        const stored = await store.readBackMatches(s, written);
        if (!stored) throw new VerifyMismatch(`chunk ${ref.chunkIndex}: shard ${i} on pool ${s.pool} does not read back as written`);
        if (i >= ref.dataShards) return; // parity: proven equal to what the encoder produced
        const from = i * shardBytes;
        const want = data.subarray(Math.min(from, data.length), Math.min(from + shardBytes, data.length));
        // Uncompressed records hold the shard itself; a compressed one is decoded (and its CRC checked) once.
        const payload = decodeShardHeader(stored).compression === 'lz4' ? decodeShardRecord(stored).shard : stored.subarray(SHARD_HEADER_BYTES);
        const tailIsPadding = payload.subarray(want.length).every((b) => b === 0);
        if (payload.length !== shardBytes || !payload.subarray(0, want.length).equals(want) || !tailIsPadding) {
          throw new VerifyMismatch(`chunk ${ref.chunkIndex}: data shard ${i} on pool ${s.pool} does not hold its slice of the source`);
        }
      }),
    );
  }

  /** One verified shard, or undefined when it cannot be had. `into`: see SegmentStore.read. */
  private async readShard(ref: StripeRef, i: number, into?: Buffer): Promise<Buffer | undefined> {
    const s = ref.shards[i]!;
    const pool = this.poolByName(s.pool);
    if (!pool || !pool.isOnline()) return undefined;
    try {
      const store = await this.store(pool);
      if (!store) return undefined;
      try {
        return this.ownShard(ref, i, await store.read(s, into));
      } catch (err) {
        // Compacted away since the caller took `ref`: the record was copied first.
        const moved = err instanceof ShardNotFound ? this.resolve(s) : s;
        if (moved === s) throw err;
        this.counters.forwardedShardReads++;
        return this.ownShard(ref, i, await store.read(moved, into));
      }
    } catch (err) {
      log.debug('stripe store: shard unreadable', { pool: s.pool, shard: i, err: (err as Error).message });
      return undefined;
    }
  }

  /**
   * A verified record's shard if it is shard `i` of `ref`. A location can
   * outlive its pool (pool replaced, segment reused): a record is only ours
   * if every identity field matches, not just its CRC.
   */
  private ownShard(ref: StripeRef, i: number, rec: DecodedShardRecord): Buffer | undefined {
    const h = rec.header;
    if (h.shardIndex !== i || h.stripeGeneration !== ref.generation || h.chunkIndex !== ref.chunkIndex || h.ownerId.toString('hex') !== ref.ownerId) {
      log.warn('shard location holds another record; treating shard as lost', { pool: ref.shards[i]!.pool, shard: i, chunk: ref.chunkIndex });
      return undefined;
    }
    return rec.shard;
  }

  private policyOf(ref: StripeRef): ErasureCodingPolicy {
    return { ...this.policy, dataShards: ref.dataShards, parityShards: ref.parityShards, stripeSizeBytes: ref.stripeSizeBytes };
  }

  /**
   * Puts the three-tier cache in front of stripe reads: L1/L2 hold decoded
   * stripe data, this store is its L3. Keys name immutable bytes (owner,
   * chunk, generation and the first shard's place), so no write can make a
   * cached entry stale, not even across restarts (L2 persists).
   */
  useCache(cache: CacheManager): void {
    this.cache = cache;
  }

  /** The cache's L3: resolves a key of a stripe being read through the cache. */
  readonly l3: L3Backend = {
    get: async (key) => {
      const p = this.pendingReads.get(key);
      return p ? this.readStripeUncached(p.ref, p.ctx) : undefined;
    },
  };

  static cacheKey(ref: StripeRef): string {
    const s0 = ref.shards[0]!;
    return `stripe/${ref.ownerId}/${ref.chunkIndex}/${ref.generation}/${s0.pool}.${s0.segment}.${s0.offsetBytes}`;
  }

  /** Reads a stripe's data (through the cache when there is one). `ctx` is passed to onDegraded. */
  async readStripe(ref: StripeRef, ctx?: ReadContext): Promise<Buffer> {
    // Held from this tick: `ref` may be one a destage has just replaced and freed (see hold()).
    const release = this.hold([ref]);
    try {
      if (!this.cache) return await this.readStripeUncached(ref, ctx);
      const key = StripeStore.cacheKey(ref);
      this.pendingReads.set(key, { ref, ctx });
      try {
        const data = await this.cache.get(key);
        if (!data) throw new InsufficientShards(`stripe of chunk ${ref.chunkIndex} could not be read`);
        return data;
      } finally {
        this.pendingReads.delete(key);
      }
    } finally {
      release();
    }
  }

  /** Reads a stripe's data, decoding from parity when data shards are bad. */
  private async readStripeUncached(ref: StripeRef, ctx?: ReadContext): Promise<Buffer> {
    const k = ref.dataShards;
    const m = ref.parityShards;
    const shards: (Buffer | undefined)[] = await Promise.all(Array.from({ length: k }, (_, i) => this.readShard(ref, i)));
    const bad: number[] = [];
    shards.forEach((s, i) => s === undefined && bad.push(i));
    if (bad.length === 0) {
      this.counters.healthyReads++;
      return concatData(shards as Buffer[], ref.dataLengthBytes);
    }
    const parity = await Promise.all(Array.from({ length: m }, (_, j) => this.readShard(ref, k + j)));
    parity.forEach((s, j) => s === undefined && bad.push(k + j));
    const all = [...shards, ...parity];
    if (bad.length > m) {
      this.counters.failedReads++;
      log.error('stripe unreadable: more shards lost than parity can repair', { lost: bad.length, parity: m, pools: bad.map((i) => ref.shards[i]!.pool) });
      throw new InsufficientShards(`stripe lost ${bad.length} of ${k + m} shards (can repair ${m})`);
    }
    const data = await decodeStripe(this.policyOf(ref), all);
    this.counters.degradedReads++;
    this.logDegraded(bad.map((i) => ref.shards[i]!.pool));
    this.onDegraded?.(ref, { bad }, ctx);
    return data.subarray(0, ref.dataLengthBytes);
  }

  /** One event line per second at most: a lost pool makes every read degraded. */
  private logDegraded(pools: string[]): void {
    const now = Date.now();
    if (now - this.lastDegradedLogMs < 1000) {
      this.suppressedDegradedLogs++;
      return;
    }
    log.warn('degraded read repaired inline', { pools, similarSinceLastLine: this.suppressedDegradedLogs, degradedReadsTotal: this.counters.degradedReads });
    this.lastDegradedLogMs = now;
    this.suppressedDegradedLogs = 0;
  }

  /** Drops a superseded stripe's cached data (its key is never asked for again). */
  forget(ref: StripeRef): void {
    this.cache?.delete(StripeStore.cacheKey(ref));
  }

  /** Checks every shard of a stripe (scrub). */
  async check(ref: StripeRef): Promise<StripeHealth> {
    return { bad: (await this.inspect(ref)).bad };
  }

  /**
   * Reads and verifies every shard of a stripe (CRC and identity), keeping
   * the good ones so a rebuild that follows need not read them again.
   * `scratch` (one buffer per shard, each at least a record long): records are read
   * into it and the shards returned are views of it, valid until the
   * caller's next use of `scratch`. A scan of many stripes then allocates
   * no read buffers (on the 2-core VM, GC was a quarter of a rebuild).
   */
  async inspect(ref: StripeRef, scratch?: Buffer[]): Promise<InspectedStripe> {
    const n = ref.dataShards + ref.parityShards;
    const shards = await Promise.all(Array.from({ length: n }, (_, i) => this.readShard(ref, i, scratch?.[i])));
    const bad: number[] = [];
    shards.forEach((s, i) => s === undefined && bad.push(i));
    return { bad, shards };
  }

  /**
   * inspect() of many stripes at once, for scans (scrub): per pool, records
   * of `refs` that sit back to back in a segment are read with one read of
   * at most MAX_RUN_BYTES (on the 2-core VM, one threadpool round trip per
   * 256 KiB record, each waiting its turn for a CPU, was most of a rebuild's
   * wall time), then each record is verified on its own (CRC and identity).
   * A run that fails to read is read again record by record, so a bad spot
   * costs only its own shards. Shards are views of `scratch` (from
   * scanScratchBytes(); a bigger buffer is allocated if it is short), valid
   * until the caller's next use of it.
   */
  async inspectMany(refs: StripeRef[], scratch: Buffer): Promise<InspectedStripe[]> {
    const shards = refs.map((ref) => new Array<Buffer | undefined>(ref.dataShards + ref.parityShards).fill(undefined));
    const items: { r: number; i: number; s: ShardRef }[] = [];
    refs.forEach((ref, r) => ref.shards.forEach((s, i) => items.push({ r, i, s })));
    const { runs, scratchBytes } = planRuns(items);
    const buf = scratch.length >= scratchBytes ? scratch : Buffer.allocUnsafe(scratchBytes);
    await Promise.all(
      runs.map(async (run) => {
        const pool = this.poolByName(run.pool);
        const store = pool !== undefined && pool.isOnline() ? await this.store(pool) : null;
        if (!store) return; // every shard of the run stays undefined (lost)
        const into = buf.subarray(run.at, run.at + run.lengthBytes);
        let bytes: Buffer | undefined;
        try {
          bytes = await store.readRun({ segment: run.segment, offsetBytes: run.offsetBytes, lengthBytes: run.lengthBytes }, into);
        } catch (err) {
          if (err instanceof ShardNotFound) {
            // Compacted since `refs` were taken: its records were copied first, and
            // readShard (below, record by record) follows the forwards. Otherwise the
            // segment went with its pool (lost and replaced): so did every record in it.
            const first = run.items[0]!.s;
            if (this.resolve(first) === first) return;
          }
          log.debug('stripe store: shard run unreadable, reading its records one by one', { pool: run.pool, segment: run.segment, err: (err as Error).message });
        }
        let pos = 0;
        for (const it of run.items) {
          const ref = refs[it.r]!;
          const at = pos;
          pos += it.s.lengthBytes;
          if (bytes === undefined) {
            shards[it.r]![it.i] = await this.readShard(ref, it.i, into.subarray(at, pos));
            continue;
          }
          try {
            shards[it.r]![it.i] = this.ownShard(ref, it.i, decodeShardRecord(bytes.subarray(at, pos)));
          } catch (err) {
            log.debug('stripe store: shard unreadable', { pool: it.s.pool, shard: it.i, err: (err as Error).message });
          }
        }
      }),
    );
    return shards.map((s) => {
      const bad: number[] = [];
      s.forEach((shard, i) => shard === undefined && bad.push(i));
      return { bad, shards: s };
    });
  }

  /** Bytes of scratch inspectMany() needs for `count` stripes shaped like `ref` (uncompressed records). */
  static scanScratchBytes(ref: StripeRef, count: number): number {
    const n = ref.dataShards + ref.parityShards;
    return count * n * (SHARD_HEADER_BYTES + Math.ceil(ref.stripeSizeBytes / ref.dataShards));
  }

  /**
   * Rebuilds bad shards onto cold pools that hold no other shard of the
   * stripe. Returns the new reference (same generation), or null when the
   * stripe is healthy. Throws NoSuitablePool / InsufficientShards.
   * `inspected`: this stripe's shards as inspect() just read them (verified,
   * identity checked), so they are not read a second time.
   */
  async rebuild(ref: StripeRef, inspected?: InspectedStripe): Promise<StripeRef | null> {
    const prepared = await this.prepareRebuild(ref, inspected);
    return prepared === null ? null : this.landRebuild(ref, prepared);
  }

  /**
   * First half of rebuild(): decodes only the bad shards and encodes their
   * records, in memory. Once this resolves, `inspected`'s buffers (scratch)
   * are no longer used, so a scan can read its next stripe into them while
   * landRebuild() writes this one: reading and landing overlap.
   */
  async prepareRebuild(ref: StripeRef, inspected?: InspectedStripe): Promise<PreparedRebuild | null> {
    const ownerId = Buffer.from(ref.ownerId, 'hex');
    const chunkIndex = ref.chunkIndex;
    const n = ref.dataShards + ref.parityShards;
    // A stripe needs n distinct pools: with fewer online, every stripe has a
    // shard on an offline pool and no rebuilt shard could be placed. Say so
    // before reading and decoding: otherwise, after a pool loss with no spare,
    // each retry re-reads and decodes every degraded stripe only to fail here.
    const online = this.pools().filter((p) => p.rec.tier === 'cold' && p.isOnline()).length;
    if (online < n) throw new TooFewOnlinePools(`need ${n} online cold pools to rebuild a stripe, have ${online}`);
    const { bad, shards } = inspected ?? (await this.inspect(ref));
    if (shards.length !== n) throw new RangeError(`inspected stripe has ${shards.length} shard slots, expected ${n}`);
    if (bad.length === 0) return null;
    if (bad.length > ref.parityShards) throw new InsufficientShards(`stripe lost ${bad.length} shards, parity ${ref.parityShards}`);
    // Only the lost rows are decoded; the surviving shards stay where they are.
    // Uncompressed, each is decoded straight into its record's payload.
    const recordBytes = SHARD_HEADER_BYTES + ref.stripeSizeBytes / ref.dataShards;
    const inPlace = this.policy.compression === 'none' && Number.isInteger(recordBytes);
    const pooled = inPlace ? bad.map(() => this.takeRecordBuffer(recordBytes)) : [];
    let missing: number[];
    let rebuilt: Buffer[];
    try {
      ({ missing, rebuilt } = await reconstructMissing(
        this.policyOf(ref),
        shards,
        inPlace ? pooled.map((b) => b.subarray(SHARD_HEADER_BYTES)) : undefined,
      ));
    } catch (err) {
      this.releaseRecordBuffers(pooled);
      throw err;
    }
    let lengthBytes = 0;
    const records = missing.map((i, t) => {
      const record = encodeShardRecord(
        { ownerId, chunkIndex, stripeGeneration: ref.generation, shardIndex: i, dataShards: ref.dataShards, parityShards: ref.parityShards },
        rebuilt[t]!,
        this.policy.compression,
        pooled[t],
      );
      lengthBytes += record.length;
      return record;
    });
    return { bad: missing, records, lengthBytes, pooled };
  }

  /**
   * Pool rebuild, read side: for each job (a stripe and the index of its one
   * shard the lost pool held), reads exactly k surviving shards, ranked by
   * `sourceRank` (pool name -> rank, lower first; the same pools for every
   * stripe, so each pool's records are read in write order), verifies each
   * (CRC and identity: it is decode input), and decodes only the lost shard
   * into a recycled record buffer. The other survivors are not read:
   * verifying them is the scrub's job. Uncompressed records of one shape
   * (the usual case) go through the native kernel (prepareLostShardsInKernel);
   * others are read in runs of up to MAX_RUN_BYTES into `scratch(bytes)` (a
   * buffer the caller reuses once this resolves) and checked and decoded in JS.
   * Returns, per job, the prepared record, or null when a source was missing
   * or failed verification (nothing is decoded from it); the caller then
   * rebuilds that stripe through prepareRebuild(), which reads every survivor
   * and so uses another one.
   */
  async prepareLostShards(
    jobs: readonly LostShardJob[],
    sourceRank: ReadonlyMap<string, number>,
    scratch: (bytes: number) => Buffer,
  ): Promise<(PreparedRebuild | null)[]> {
    const k0 = jobs[0]?.ref.dataShards;
    const m0 = jobs[0]?.ref.parityShards;
    const stripe0 = jobs[0]?.ref.stripeSizeBytes;
    const native = this.policy.compression === 'none' && jobs.every((j) => j.ref.dataShards === k0 && j.ref.parityShards === m0 && j.ref.stripeSizeBytes === stripe0);
    if (native) return this.prepareLostShardsInKernel(jobs, sourceRank);
    const sources: number[][] = [];
    const ok: boolean[] = [];
    const items: { j: number; i: number; s: ShardRef }[] = [];
    jobs.forEach(({ ref, lost }, j) => {
      const chosen = StripeStore.rebuildSources(ref, lost, sourceRank);
      sources.push(chosen);
      ok.push(chosen.length === ref.dataShards);
      if (!ok[j]) return;
      for (const i of chosen) items.push({ j, i, s: ref.shards[i]! });
    });
    const { runs, scratchBytes } = planRuns(items);
    const buf = scratch(scratchBytes);
    // Each source's whole record as read (unverified), per job and shard index.
    const records = jobs.map((job) => new Array<Buffer | undefined>(job.ref.shards.length).fill(undefined));
    await Promise.all(
      runs.map(async (run) => {
        const pool = this.poolByName(run.pool);
        const store = pool !== undefined && pool.isOnline() ? await this.store(pool) : null;
        let bytes: Buffer | undefined;
        if (store) {
          try {
            bytes = await store.readRun({ segment: run.segment, offsetBytes: run.offsetBytes, lengthBytes: run.lengthBytes }, buf.subarray(run.at, run.at + run.lengthBytes));
          } catch (err) {
            // Compacted away, pool gone, torn: these stripes take the slow path (which follows forwards).
            log.debug('pool rebuild: source run unreadable', { pool: run.pool, segment: run.segment, err: (err as Error).message });
          }
        }
        let pos = 0;
        for (const it of run.items) {
          const at = pos;
          pos += it.s.lengthBytes;
          if (bytes === undefined) ok[it.j] = false;
          else records[it.j]![it.i] = bytes.subarray(at, pos);
        }
      }),
    );
    return this.decodeLostJs(jobs, sources, records, ok);
  }

  /** The k sources of a pool rebuild's stripe: survivors on ranked pools, best rank first; fewer than k if not enough. */
  private static rebuildSources(ref: StripeRef, lost: number, sourceRank: ReadonlyMap<string, number>): number[] {
    const ranked: number[] = [];
    for (let i = 0; i < ref.shards.length; i++) if (i !== lost && sourceRank.has(ref.shards[i]!.pool)) ranked.push(i);
    ranked.sort((a, b) => sourceRank.get(ref.shards[a]!.pool)! - sourceRank.get(ref.shards[b]!.pool)!);
    return ranked.slice(0, ref.dataShards).sort((a, b) => a - b);
  }

  /**
   * prepareLostShards for uncompressed records of one shape, all in the
   * native kernel (readRebuildLostShards): it preads each source record,
   * checks its CRC while in cache and decodes, on the threadpool; here only
   * the descriptors are pinned and the headers' identities checked (after
   * the kernel ran: an output whose sources fail any check is discarded,
   * never written).
   */
  private async prepareLostShardsInKernel(jobs: readonly LostShardJob[], sourceRank: ReadonlyMap<string, number>): Promise<(PreparedRebuild | null)[]> {
    const ref0 = jobs[0]!.ref;
    const k = ref0.dataShards;
    const shardBytes = ref0.stripeSizeBytes / k;
    const recordBytes = SHARD_HEADER_BYTES + shardBytes;
    const out: (PreparedRebuild | null)[] = jobs.map(() => null);
    const pins = new Map<string, Promise<{ fd: number; release: () => void } | null>>();
    const pin = (s: ShardRef) => {
      const place = `${s.pool}\0${s.segment}`;
      let p = pins.get(place);
      if (p === undefined) {
        const pool = this.poolByName(s.pool);
        p = (async () => {
          const store = pool !== undefined && pool.isOnline() ? await this.store(pool) : null;
          return store ? await store.pinRead(s.segment) : null;
        })().catch((err: Error) => {
          // Compacted away (the slow path follows forwards), pool gone: its stripes take the slow path.
          log.debug('pool rebuild: source segment unreadable', { pool: s.pool, segment: s.segment, err: err.message });
          return null;
        });
        pins.set(place, p);
      }
      return p;
    };
    const chosen: { j: number; src: number[] }[] = [];
    for (const [j, { ref, lost }] of jobs.entries()) {
      const src = StripeStore.rebuildSources(ref, lost, sourceRank);
      if (src.length === ref.dataShards && src.every((i) => ref.shards[i]!.lengthBytes === recordBytes)) chosen.push({ j, src });
    }
    const fdOf = await Promise.all(chosen.map(({ j, src }) => Promise.all(src.map((i) => pin(jobs[j]!.ref.shards[i]!)))));
    try {
      const live = chosen.filter((_, c) => fdOf[c]!.every((p) => p !== null));
      const liveFds = chosen.map((_, c) => fdOf[c]!).filter((f) => f.every((p) => p !== null));
      if (live.length === 0) return out;
      const fds = new Int32Array(live.length * k);
      const offsets = new Float64Array(live.length * k);
      const tables: Buffer[] = [];
      const outs: Buffer[] = [];
      live.forEach(({ j, src }, t) => {
        const { ref, lost } = jobs[j]!;
        src.forEach((i, x) => {
          fds[t * k + x] = liveFds[t]![x]!.fd;
          offsets[t * k + x] = ref.shards[i]!.offsetBytes;
        });
        tables.push(lostShardTables(ref.dataShards, ref.parityShards, src, lost));
        const record = this.takeRecordBuffer(recordBytes);
        encodeShardHeader(
          { ownerId: Buffer.from(ref.ownerId, 'hex'), chunkIndex: ref.chunkIndex, stripeGeneration: ref.generation, shardIndex: lost, dataShards: ref.dataShards, parityShards: ref.parityShards },
          shardBytes,
          record,
        );
        outs.push(record);
      });
      const headers = Buffer.allocUnsafe(live.length * k * SHARD_HEADER_BYTES);
      const ok = new Uint8Array(live.length * k);
      try {
        await readRebuildLostShards(fds, offsets, tables, outs, k, shardBytes, headers, ok);
      } catch (err) {
        this.releaseRecordBuffers(outs);
        throw err;
      }
      live.forEach(({ j, src }, t) => {
        const { ref } = jobs[j]!;
        let good = true;
        src.forEach((i, x) => {
          const at = t * k + x;
          if (ok[at] === 1 && this.headerIsShard(ref, i, headers.subarray(at * SHARD_HEADER_BYTES, (at + 1) * SHARD_HEADER_BYTES), shardBytes)) return;
          good = false;
          log.warn('pool rebuild: source shard fails its read, CRC or identity check; another survivor is used', { pool: ref.shards[i]!.pool, chunk: ref.chunkIndex, shard: i });
        });
        if (!good) {
          this.releaseRecordBuffers([outs[t]!]); // nothing of it is written
          return;
        }
        out[j] = { bad: [jobs[j]!.lost], records: [outs[t]!], lengthBytes: recordBytes, pooled: [outs[t]!] };
      });
      return out;
    } finally {
      for (const p of pins.values()) void p.then((h) => h?.release());
    }
  }

  /** Whether `rec` (unverified; at least its header) heads an uncompressed record of shard `i` of `ref`, `shardBytes` long. */
  private headerIsShard(ref: StripeRef, i: number, rec: Buffer, shardBytes: number): boolean {
    try {
      const h = decodeShardHeader(rec);
      return (
        h.compression === 'none' &&
        h.payloadLengthBytes === shardBytes &&
        h.uncompressedLengthBytes === shardBytes &&
        h.shardIndex === i &&
        h.stripeGeneration === ref.generation &&
        h.chunkIndex === ref.chunkIndex &&
        h.dataShards === ref.dataShards &&
        h.parityShards === ref.parityShards &&
        h.ownerId.toString('hex') === ref.ownerId
      );
    } catch {
      return false;
    }
  }

  /** prepareLostShards' verify + decode in JS (any record format, e.g. LZ4 payloads). */
  private async decodeLostJs(jobs: readonly LostShardJob[], sources: number[][], records: (Buffer | undefined)[][], ok: boolean[]): Promise<(PreparedRebuild | null)[]> {
    const shards = jobs.map((job) => new Array<Buffer | undefined>(job.ref.shards.length).fill(undefined));
    for (const [j, { ref }] of jobs.entries()) {
      if (!ok[j]) continue;
      for (const i of sources[j]!) {
        let shard: Buffer | undefined;
        try {
          shard = this.ownShard(ref, i, decodeShardRecord(records[j]![i]!));
        } catch (err) {
          log.warn('pool rebuild: source shard fails verification; another survivor is used', { pool: ref.shards[i]!.pool, chunk: ref.chunkIndex, shard: i, err: (err as Error).message });
        }
        if (shard === undefined) {
          ok[j] = false;
          break;
        }
        shards[j]![i] = shard;
      }
    }
    const out: (PreparedRebuild | null)[] = [];
    for (const [j, { ref, lost }] of jobs.entries()) {
      if (!ok[j]) {
        out.push(null);
        continue;
      }
      const recordBytes = SHARD_HEADER_BYTES + ref.stripeSizeBytes / ref.dataShards;
      const inPlace = this.policy.compression === 'none' && Number.isInteger(recordBytes);
      const pooled = inPlace ? [this.takeRecordBuffer(recordBytes)] : [];
      const target = inPlace ? pooled[0]!.subarray(SHARD_HEADER_BYTES) : Buffer.allocUnsafe(ref.stripeSizeBytes / ref.dataShards);
      const src = sources[j]!;
      try {
        await decodeTargets(this.policyOf(ref), src, src.map((i) => shards[j]![i]!), [lost], [target]);
      } catch (err) {
        this.releaseRecordBuffers(pooled);
        throw err;
      }
      const record = encodeShardRecord(
        { ownerId: Buffer.from(ref.ownerId, 'hex'), chunkIndex: ref.chunkIndex, stripeGeneration: ref.generation, shardIndex: lost, dataShards: ref.dataShards, parityShards: ref.parityShards },
        target,
        this.policy.compression,
        pooled[0],
      );
      out.push({ bad: [lost], records: [record], lengthBytes: record.length, pooled });
    }
    return out;
  }

  /**
   * Pool rebuild, write side: appends every prepared record (one shard per
   * stripe) to `poolName` in one append (one writev), and returns each
   * stripe's new reference. The records are written, NOT durable: the
   * caller holds a write session (beginWrite) and flips the index only after
   * `store.sync()` resolved (the same store: one opened for a directory
   * replaced meanwhile would sync nothing of these), so a pool rebuild shares one fdatasync among many
   * groups (like a copy's single fsync at its end) instead of one per group.
   * The record buffers are recycled on return.
   */
  async landLostShards(poolName: string, store: SegmentStore, items: readonly { ref: StripeRef; prepared: PreparedRebuild }[]): Promise<StripeRef[]> {
    const token = this.beginWrite();
    try {
      const pool = this.poolByName(poolName);
      if (!pool || !pool.isOnline()) throw new NoSuitablePool(`pool ${poolName} is offline`);
      for (const { ref, prepared } of items) {
        if (prepared.bad.length !== 1) throw new RangeError('landLostShards: one rebuilt shard per stripe');
        if (ref.shards.some((s, i) => i !== prepared.bad[0] && s.pool === poolName)) {
          throw new NoSuitablePool(`pool ${poolName} holds another shard of chunk ${ref.chunkIndex}`);
        }
      }
      await this.markWritten(poolName);
      const locs = await store.append(
        items.map((it) => it.prepared.records[0]!),
        { durable: false },
      );
      let bytes = 0;
      const next = items.map(({ ref, prepared }, t) => {
        const shards = ref.shards.slice();
        shards[prepared.bad[0]!] = { pool: poolName, ...locs[t]! };
        bytes += prepared.lengthBytes;
        return { ...ref, shards };
      });
      pool.usedBytes += bytes;
      this.counters.shardsRebuilt += items.length;
      return next;
    } finally {
      // append() settled (resolved or rejected): nothing writes the buffers any more.
      for (const it of items) this.releaseRecordBuffers(it.prepared.pooled);
      this.endWrite(token);
    }
  }

  /**
   * Whether shard `i` of `ref` is still held by its pool's current store:
   * its place lies inside a segment of that store and the record there has
   * this shard's identity (a replaced pool reuses segment numbers). Reads at
   * most the 64-byte header; the payload is not verified (scrub's job).
   */
  async shardPresent(ref: StripeRef, i: number): Promise<boolean> {
    const s = this.resolve(ref.shards[i]!);
    const pool = this.poolByName(s.pool);
    const store = pool !== undefined && pool.isOnline() ? await this.store(pool) : null;
    if (!store || !store.contains(s)) return false;
    try {
      const h = decodeShardHeader(await store.readRun({ segment: s.segment, offsetBytes: s.offsetBytes, lengthBytes: SHARD_HEADER_BYTES }));
      return h.shardIndex === i && h.stripeGeneration === ref.generation && h.chunkIndex === ref.chunkIndex && h.ownerId.toString('hex') === ref.ownerId && SHARD_HEADER_BYTES + h.payloadLengthBytes === s.lengthBytes;
    } catch {
      return false;
    }
  }

  private takeRecordBuffer(recordBytes: number): Buffer {
    if (this.recordPool.recordBytes === recordBytes) {
      const b = this.recordPool.free.pop();
      if (b !== undefined) return b;
    }
    return Buffer.allocUnsafe(recordBytes);
  }

  /** Call only once nothing reads or writes the buffers any more (their appends settled). */
  private releaseRecordBuffers(buffers: Buffer[]): void {
    for (const b of buffers) {
      if (this.recordPool.recordBytes !== b.length) this.recordPool = { recordBytes: b.length, free: [] };
      if ((this.recordPool.free.length + 1) * b.length > MAX_POOLED_RECORD_BYTES) return;
      this.recordPool.free.push(b);
    }
  }

  /** Second half of rebuild(): appends the prepared records (durable on return) and returns the new reference. */
  async landRebuild(ref: StripeRef, prepared: PreparedRebuild): Promise<StripeRef> {
    const token = this.beginWrite();
    try {
      return await this.landRebuildNow(ref, prepared);
    } finally {
      this.endWrite(token);
    }
  }

  private async landRebuildNow(ref: StripeRef, prepared: PreparedRebuild): Promise<StripeRef> {
    const { bad, records } = prepared;
    const next = ref.shards.slice();
    let results: PromiseSettledResult<void>[];
    try {
      const keep = new Set(ref.shards.filter((_, i) => !bad.includes(i)).map((s) => s.pool));
      const targets = this.placement(bad.length, keep);
      // allSettled: a buffer goes back to the pool only once no append can still be writing it.
      results = await Promise.allSettled(
        bad.map(async (i, t) => {
          next[i] = await this.appendShard(targets[t]!, records[t]!);
        }),
      );
    } finally {
      this.releaseRecordBuffers(prepared.pooled);
    }
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    this.counters.shardsRebuilt += bad.length;
    return { ...ref, shards: next };
  }

  /**
   * Marks a superseded stripe's space as reclaimable. Segment compaction
   * rewrites live records later; until then the bytes stay where they are,
   * so readers holding the old reference are safe.
   */
  free(ref: StripeRef): void {
    this.forget(ref);
    this.onShardsDead?.(
      ref.shards.map((s) => this.resolve(s)),
      ref.shards.map((_, index) => ({ ref, index })),
    );
  }

  /**
   * Whether a place told dead may name bytes of a store that is gone: its
   * pool's store was opened empty in this process while the pool was marked
   * written (POOLS_WRITTEN_DB: lost and replaced, or emptied; never a new
   * pool), so a reference from before that names another record's place,
   * or none. Until the next start (its recount). True for an emptied pool
   * too: its frees are then header-checked, which counts them exactly.
   */
  mayHoldStalePlaces(pool: string): boolean {
    return this.freshStores.has(pool);
  }

  /**
   * Whether `at` (a place of shard `of.index` of `of.ref`, forwards
   * followed) holds that shard's record in its pool's current store,
   * written (durable or not) and with its identity in the header. False if
   * the place lies outside what the store has written, the header names
   * another record or cannot be read, or the store was replaced while this
   * looked; undefined (cannot tell) while the pool is offline or unknown.
   * Reads the 64-byte header. 'unwritten': false because the place lies
   * beyond what the store has written (a record may land there later).
   */
  async holdsShard(at: ShardRef, of: DeadShardOf): Promise<boolean | 'unwritten' | undefined> {
    const pool = this.poolByName(at.pool);
    if (pool === undefined || !pool.isOnline()) return undefined;
    const opened = this.store(pool);
    const store = await opened;
    if (!store) return undefined;
    if (!store.written(at)) return this.stores.get(pool.name) === opened ? 'unwritten' : false;
    const ref = of.ref;
    try {
      const h = decodeShardHeader(await store.readRun({ segment: at.segment, offsetBytes: at.offsetBytes, lengthBytes: SHARD_HEADER_BYTES }));
      const ours = h.shardIndex === of.index && h.stripeGeneration === ref.generation && h.chunkIndex === ref.chunkIndex && h.ownerId.toString('hex') === ref.ownerId && SHARD_HEADER_BYTES + h.payloadLengthBytes === at.lengthBytes;
      return ours && this.stores.get(pool.name) === opened;
    } catch {
      return false;
    }
  }

  /**
   * After a rebuild's index flip was tried (volume replaceStripe): when it
   * flipped, the replaced shards of `old` are dead; when it did not (the
   * chunk was rewritten meanwhile), the freshly written shards of `next` are.
   *
   * A rebuilt shard that landed at the very place `old` names (a replaced
   * pool's fresh segments reuse the old places) is left out on purpose, not
   * told apart by identity: if the flip lost to a rewrite or delete, that
   * writer's free(old) has already counted the place, which is now this
   * record's (counting it here would count it twice:
   * test/ec-release-replaced-same-place); if it lost to compaction moving
   * another shard, the index still names the place with this stripe's
   * generation and the record serves it (live). On a pool whose store may
   * hold stale places, that free()'s header check may have found the place
   * empty (the record landed after it): such a place is handed to
   * onLostFlipAtSamePlace, which counts it only for a free() that found it
   * so (test/review-dead-accounting-same-place). A place a stale reference
   * names on a replaced pool (free() and a flipped release tell it too) holds
   * another record or none: the accounting counts it only if its header is
   * this shard's (compaction.ts markDead, holdsShard). What does stay off
   * until the start-up recount: rebuilt records
   * whose flip was never tried or threw (under-counted), e.g. a pool rebuild's
   * window that failed its sync or found the pool lost or replaced, or a
   * flip transaction that rejected. Every flip that is tried reports here:
   * Volume.replaceStripe also when its chunk map has already moved on (it
   * returns early with flipped false: test/volume-replace-stripe-superseded)
   * and ColdObjectHolders.replace after its compare-and-swap.
   */
  releaseReplaced(old: StripeRef, next: StripeRef, flipped: boolean): void {
    const dead: ShardRef[] = [];
    const of: DeadShardOf[] = [];
    const samePlace: ShardRef[] = [];
    const samePlaceOf: DeadShardOf[] = [];
    old.shards.forEach((s, i) => {
      const n = next.shards[i]!;
      if (n.pool === s.pool && n.segment === s.segment && n.offsetBytes === s.offsetBytes) {
        if (!flipped && this.mayHoldStalePlaces(n.pool)) {
          samePlace.push(n);
          samePlaceOf.push({ ref: next, index: i });
        }
        return;
      }
      dead.push(flipped ? this.resolve(s) : n);
      of.push({ ref: flipped ? old : next, index: i });
    });
    if (flipped && dead.length > 0) this.forget(old);
    if (dead.length > 0) this.onShardsDead?.(dead, of);
    if (samePlace.length > 0) this.onLostFlipAtSamePlace?.(samePlace, samePlaceOf);
  }

  /**
   * A write session: from the first shard appended until the caller's index
   * flip is issued. writeStripe and landRebuild end theirs when they
   * resolve, so their callers must issue the flip (LMDB put or transaction)
   * in the continuation, with no I/O awaited in between (the destager and
   * replaceStripe do); a cold object upload ends its session after its flip
   * (objects/cold-segments.ts). Compaction's generation check backs this up
   * for volume stripes. Compaction deletes a segment only after every
   * session that began before it looked has ended (writesSettled): until
   * then a record it saw as unreferenced may be about to be referenced.
   */
  beginWrite(): number {
    const token = ++this.nextWriteToken;
    this.writesInFlight.set(token, this.writeEpoch);
    return token;
  }

  endWrite(token: number): void {
    if (!this.writesInFlight.delete(token)) return;
    const waiters = this.writeWaiters;
    this.writeWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Resolves true once every write session begun before the call has ended,
   * false if that takes longer than timeoutMs (or `stop` says so): the
   * caller then leaves its segment for a later pass.
   */
  async writesSettled(timeoutMs: number, stop: () => boolean = () => false): Promise<boolean> {
    const epoch = ++this.writeEpoch;
    const deadline = Date.now() + timeoutMs;
    const older = () => [...this.writesInFlight.values()].some((e) => e < epoch);
    while (older()) {
      const leftMs = deadline - Date.now();
      if (leftMs <= 0 || stop()) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(leftMs, 1000));
        this.writeWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  /** The shard's current place: `s` unless compaction copied it (possibly more than once). */
  resolve(s: ShardRef): ShardRef {
    let at = s;
    // A copy can itself be compacted later; the chain is short (one hop per compaction of that record).
    for (let hops = 0; hops < 16; hops++) {
      const next = this.forwards.get(shardPlace(at));
      if (next === undefined) return at;
      at = next;
    }
    return at;
  }

  /**
   * A reader keeps `refs` readable until it calls the returned release,
   * whether or not the index still holds them: segment compaction copies
   * their records (readers then follow the forwards) and keeps a segment
   * holding one it did not copy. For references that leave the index while
   * read: a GET of a version overwritten meanwhile, a read that took a
   * stripe just before a destage freed it. Bounded by readers in flight.
   */
  hold(refs: readonly StripeRef[]): () => void {
    const token = ++this.nextHoldToken;
    this.heldByReaders.set(token, refs);
    return () => void this.heldByReaders.delete(token);
  }

  /** Every reference held by a reader now (hold()). */
  *heldRefs(): Iterable<StripeRef> {
    for (const refs of this.heldByReaders.values()) yield* refs;
  }

  /** Compaction copied records of `pool` (durable at `to`): readers and frees of old references follow. */
  addForwards(pool: string, moves: { from: SegmentLocation; to: SegmentLocation }[]): void {
    for (const { from, to } of moves) {
      this.forwards.set(shardPlace({ pool, ...from }), { pool, ...to });
      if (this.forwards.size > MAX_FORWARDED_SHARDS) this.forwards.delete(this.forwards.keys().next().value!);
    }
  }

  /** Names of the cold pools (online or not). */
  coldPoolNames(): string[] {
    return this.pools()
      .filter((p) => p.rec.tier === 'cold')
      .map((p) => p.name);
  }

  /** The segment store of a cold pool (opened if need be); null while it is offline or unknown. */
  async segmentStore(poolName: string): Promise<SegmentStore | null> {
    const pool = this.poolByName(poolName);
    return pool === undefined ? null : this.store(pool);
  }

  /**
   * Why the pool's open segment store takes no writes, if it does not (a
   * write failed: SegmentStore.writeFailure); undefined too while none is open.
   */
  writeFailure(poolName: string): { error: Error; clearsWithRoom: boolean } | undefined {
    return this.opened.get(poolName)?.writeFailure;
  }

  /** Sets each cold pool's usedBytes to the bytes of its segment files (appends and compaction change it). */
  async refreshPoolUsage(): Promise<void> {
    for (const pool of this.pools()) {
      if (pool.rec.tier !== 'cold' || !pool.isOnline()) continue;
      const store = await this.store(pool);
      if (store) pool.usedBytes = store.segments().reduce((sum, seg) => sum + seg.sizeBytes, 0);
    }
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) {
      const store = await s;
      await store?.close();
    }
    this.stores.clear();
    this.opened.clear();
  }
}

/**
 * Forwarding entries kept (see StripeStore.forwards): 64 segments' worth of
 * 256 KiB records in 256 MiB segments, ~10 MiB of map.
 */
export const MAX_FORWARDED_SHARDS = 65_536;

/** Records read with one read: back to back in one segment of one pool, at most MAX_RUN_BYTES in all. */
interface ShardRun<T> {
  pool: string;
  segment: number;
  offsetBytes: number;
  lengthBytes: number;
  /** Where the run goes in the caller's scratch buffer. */
  at: number;
  /** In offset order; each item's record follows the previous one's. */
  items: T[];
}

/**
 * Groups shard records by (pool, segment), sorts each group by offset and
 * coalesces records that sit back to back into runs of at most
 * MAX_RUN_BYTES. Runs come group by group (in the order each group first
 * appears in `items`), and are laid out in that order one after the other
 * in a scratch buffer of `scratchBytes`.
 */
function planRuns<T extends { s: ShardRef }>(items: readonly T[]): { runs: ShardRun<T>[]; scratchBytes: number } {
  const byPlace = new Map<string, T[]>();
  for (const it of items) {
    const place = `${it.s.pool}\0${it.s.segment}`;
    let group = byPlace.get(place);
    if (group === undefined) byPlace.set(place, (group = []));
    group.push(it);
  }
  const runs: ShardRun<T>[] = [];
  let scratchBytes = 0;
  for (const group of byPlace.values()) {
    group.sort((a, b) => a.s.offsetBytes - b.s.offsetBytes);
    let run: ShardRun<T> | undefined;
    for (const it of group) {
      if (run !== undefined && run.offsetBytes + run.lengthBytes === it.s.offsetBytes && run.lengthBytes + it.s.lengthBytes <= MAX_RUN_BYTES) {
        run.items.push(it);
        run.lengthBytes += it.s.lengthBytes;
      } else {
        run = { pool: it.s.pool, segment: it.s.segment, offsetBytes: it.s.offsetBytes, lengthBytes: it.s.lengthBytes, at: scratchBytes, items: [it] };
        runs.push(run);
      }
      scratchBytes += it.s.lengthBytes;
    }
  }
  return { runs, scratchBytes };
}

function shardPlace(s: ShardRef): string {
  return `${s.pool}/${s.segment}/${s.offsetBytes}`;
}

/** A directory's device, inode and birth time (as Pool.isOnline tells it), or null when it cannot be read. */
function dirKey(dir: string): string | null {
  try {
    const st = statSync(dir, { bigint: true });
    return `${st.dev}:${st.ino}:${st.birthtimeNs}`;
  } catch {
    return null;
  }
}

function concatData(shards: Buffer[], lengthBytes: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  let pos = 0;
  for (const s of shards) {
    if (pos >= lengthBytes) break;
    pos += s.copy(out, pos, 0, Math.min(s.length, lengthBytes - pos));
  }
  return out;
}
