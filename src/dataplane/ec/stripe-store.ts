// Cold chunks as Reed-Solomon stripes: k data + m parity shard records, each
// appended to the segment store of a different cold pool. Reads verify every
// shard; up to m missing or corrupt shards are repaired inline (degraded read).
import { statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { InsufficientShards, NoSuitablePool } from '../errors.js';
import type { Pool } from '../pools/pool.js';
import type { CacheManager, L3Backend } from '../cache/index.js';
import { log } from '../../log.js';
import { decodeStripe, encodeStripe, reconstructMissing } from './codec.js';
import type { ErasureCodingPolicy } from './policy.js';
import { decodeShardHeader, decodeShardRecord, encodeShardRecord, SHARD_HEADER_BYTES } from './shard-record.js';
import { SegmentStore, type SegmentLocation } from './segment-store.js';

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
}

/** Which chunk a stripe belongs to (for queuing its reconstruction). */
export interface StripeContext {
  volumeId: number;
  chunkIndex: number;
}

export interface StripeStoreCounters {
  stripesWritten: number;
  healthyReads: number;
  degradedReads: number;
  failedReads: number;
  shardsRebuilt: number;
}

/** A stripe read back after writing does not match what was written (migration VERIFY). */
export class VerifyMismatch extends Error {
  override name = 'VerifyMismatch';
}

export class StripeStore {
  readonly counters: StripeStoreCounters = { stripesWritten: 0, healthyReads: 0, degradedReads: 0, failedReads: 0, shardsRebuilt: 0 };
  /** Called after a degraded read so reconstruction can be queued. */
  onDegraded: ((ref: StripeRef, health: StripeHealth, ctx: StripeContext | undefined) => void) | null = null;
  private readonly stores = new Map<string, Promise<SegmentStore | null>>();
  /** Inode of each pool directory when its store was opened: a replaced pool gets a fresh store. */
  private readonly storeIno = new Map<string, number>();
  private lastDegradedLogMs = 0;
  private suppressedDegradedLogs = 0;
  private rotation = 0;
  private cache: CacheManager | null = null;
  /** Stripes being read through the cache (its L3 backend resolves keys here); bounded by reads in flight. */
  private readonly pendingReads = new Map<string, { ref: StripeRef; ctx: StripeContext | undefined }>();

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
    const ino = dirIno(pool.rec.path);
    if (s && ino !== this.storeIno.get(pool.name)) {
      // The directory was removed or replaced: the old store's files are gone.
      const old = s;
      void old.then((st) => st?.close()).catch(() => undefined);
      this.stores.delete(pool.name);
      s = undefined;
    }
    if (!s) {
      if (ino !== null) this.storeIno.set(pool.name, ino);
      s = pool.isOnline()
        ? mkdir(this.segDir(pool), { recursive: true })
            .then(() => SegmentStore.open(this.segDir(pool)))
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
      throw new NoSuitablePool(`need ${count} online cold pools for a stripe, have ${online.length}`);
    }
    const start = this.rotation++ % online.length;
    return Array.from({ length: count }, (_, i) => online[(start + i) % online.length]!);
  }

  private async appendShard(pool: Pool, record: Buffer): Promise<ShardRef> {
    const store = await this.store(pool);
    if (!store) throw new NoSuitablePool(`pool ${pool.name} went offline`);
    const [loc] = await store.append([record]);
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
      const rec = await store.read(s, into);
      // A location can outlive its pool (pool replaced, segment reused): a
      // record is only ours if every identity field matches, not just its CRC.
      const h = rec.header;
      if (h.shardIndex !== i || h.stripeGeneration !== ref.generation || h.chunkIndex !== ref.chunkIndex || h.ownerId.toString('hex') !== ref.ownerId) {
        log.warn('shard location holds another record; treating shard as lost', { pool: s.pool, shard: i, chunk: ref.chunkIndex });
        return undefined;
      }
      return rec.shard;
    } catch (err) {
      log.debug('stripe store: shard unreadable', { pool: s.pool, shard: i, err: (err as Error).message });
      return undefined;
    }
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
  async readStripe(ref: StripeRef, ctx?: StripeContext): Promise<Buffer> {
    if (!this.cache) return this.readStripeUncached(ref, ctx);
    const key = StripeStore.cacheKey(ref);
    this.pendingReads.set(key, { ref, ctx });
    try {
      const data = await this.cache.get(key);
      if (!data) throw new InsufficientShards(`stripe of chunk ${ref.chunkIndex} could not be read`);
      return data;
    } finally {
      this.pendingReads.delete(key);
    }
  }

  /** Reads a stripe's data, decoding from parity when data shards are bad. */
  private async readStripeUncached(ref: StripeRef, ctx?: StripeContext): Promise<Buffer> {
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
   * `scratch` (one buffer per shard, from scratchFor()): records are read
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

  /** Buffers for inspect() of `ref`'s stripe; `reuse` is returned when it is big enough. */
  static scratchFor(ref: StripeRef, reuse?: Buffer[]): Buffer[] {
    const n = ref.dataShards + ref.parityShards;
    const recordBytes = SHARD_HEADER_BYTES + Math.ceil(ref.stripeSizeBytes / ref.dataShards);
    if (reuse !== undefined && reuse.length === n && reuse.every((b) => b.length >= recordBytes)) return reuse;
    return Array.from({ length: n }, () => Buffer.allocUnsafe(recordBytes));
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
    if (online < n) throw new NoSuitablePool(`need ${n} online cold pools to rebuild a stripe, have ${online}`);
    const { bad, shards } = inspected ?? (await this.inspect(ref));
    if (shards.length !== n) throw new RangeError(`inspected stripe has ${shards.length} shard slots, expected ${n}`);
    if (bad.length === 0) return null;
    if (bad.length > ref.parityShards) throw new InsufficientShards(`stripe lost ${bad.length} shards, parity ${ref.parityShards}`);
    // Only the lost rows are decoded; the surviving shards stay where they are.
    const { missing, rebuilt } = await reconstructMissing(this.policyOf(ref), shards);
    let lengthBytes = 0;
    const records = missing.map((i, t) => {
      const record = encodeShardRecord(
        { ownerId, chunkIndex, stripeGeneration: ref.generation, shardIndex: i, dataShards: ref.dataShards, parityShards: ref.parityShards },
        rebuilt[t]!,
        this.policy.compression,
      );
      lengthBytes += record.length;
      return record;
    });
    return { bad: missing, records, lengthBytes };
  }

  /** Second half of rebuild(): appends the prepared records (durable on return) and returns the new reference. */
  async landRebuild(ref: StripeRef, prepared: PreparedRebuild): Promise<StripeRef> {
    const { bad, records } = prepared;
    const keep = new Set(ref.shards.filter((_, i) => !bad.includes(i)).map((s) => s.pool));
    const targets = this.placement(bad.length, keep);
    const next = ref.shards.slice();
    await Promise.all(
      bad.map(async (i, t) => {
        next[i] = await this.appendShard(targets[t]!, records[t]!);
      }),
    );
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
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) {
      const store = await s;
      await store?.close();
    }
    this.stores.clear();
  }
}

function dirIno(dir: string): number | null {
  try {
    return statSync(dir).ino;
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
