// The three-tier read cache: L1 in memory (S3-LFU policy, optional LZ4), L2 an mmap'd file
// (inclusive of what it holds, filled by L1 demotion and L3 promotion), L3 a backend (cold store).
//
// Values are shared, not copied: put() takes ownership of the Buffer it is given and get()
// returns a Buffer the caller must treat as read-only. Copies would double the cost of a
// 4 KiB hit; the block and object front ends already hand over buffers they do not reuse.
import { compressSync, uncompressSync } from 'lz4-napi';
import { CacheClosedError, InvalidCacheConfigError, InvalidCacheKeyError } from './errors.js';
import { L2File, L2_MAX_KEY_BYTES, type L2Stats } from './l2-file.js';
import { S3Lfu } from './s3-lfu.js';

/** The cold tier as the cache sees it. The erasure-coded store implements it. */
export interface L3Backend {
  get(key: string): Promise<Buffer | undefined>;
}

export interface L2Options {
  /** File on the hot pool; created (zero-filled) if missing or of another size. */
  path: string;
  capacityBytes: number;
  /** Entries smaller than this are dropped from L1 rather than demoted. */
  minEntryBytes: number;
}

export interface CacheManagerOptions {
  l1CapacityBytes: number;
  l2: L2Options | undefined;
  l3?: L3Backend;
  /** Values of at least this many bytes are LZ4-compressed in L1 (and L2) when that saves >= 1/8. */
  lz4ThresholdBytes?: number;
}

export interface TierStats {
  hits: number;
  misses: number;
  evictions: number;
  /** Bytes held (compressed size where compressed). */
  bytes: number;
  entries: number;
}

export interface CacheStats {
  l1: TierStats & { capacityBytes: number };
  l2: (TierStats & { capacityBytes: number; corruptions: number; recoveredEntries: number }) | undefined;
  l3: { hits: number; misses: number; errors: number };
}

/** Block front-end keys: `vol/<volumeId>/<chunkIndex>`. */
export function chunkKey(volumeId: string, chunkIndex: number): string {
  return `vol/${volumeId}/${chunkIndex}`;
}

// Map + node + key string overhead charged to every L1 entry, so many tiny values cannot
// exceed the byte budget by their bookkeeping alone.
const L1_ENTRY_OVERHEAD_BYTES = 96;
// A range wider than this is invalidated by scanning the cached keys instead of per index.
const RANGE_SCAN_THRESHOLD = 256;
// Bound on concurrently tracked L3 fetches; beyond it reads still work but are not deduplicated or promoted.
const MAX_INFLIGHT_L3 = 4096;
// Keys up to this many UTF-16 code units cannot exceed L2_MAX_KEY_BYTES (3 UTF-8 bytes per unit at most).
const SHORT_KEY_MAX_LENGTH = Math.floor(L2_MAX_KEY_BYTES / 3);
// L1 sketch sizing: assume 4 KiB blocks until the cache knows better (it grows on demand).
const EXPECTED_ENTRY_BYTES = 4096;

/** An LZ4-compressed L1 value. Uncompressed values are stored as the Buffer itself, so a hit
 * costs no extra indirection. */
class Lz4Value {
  constructor(
    readonly stored: Buffer,
    readonly rawLengthBytes: number,
  ) {}
}

type L1Value = Buffer | Lz4Value;

interface InflightFetch {
  promise: Promise<Buffer | undefined>;
  stale: boolean;
}

export class CacheManager {
  private readonly options: CacheManagerOptions;
  private readonly l1: S3Lfu<string, L1Value>;
  private readonly l2: L2File | undefined;
  private readonly inflight = new Map<string, InflightFetch>();
  private isOpen = false;
  /** lz4ThresholdBytes is set: L1 may hold Lz4Value entries. */
  private readonly lz4: boolean;
  private l1Hits = 0;
  private l1Misses = 0;
  private readonly l3Counters = { hits: 0, misses: 0, errors: 0 };

  constructor(options: CacheManagerOptions) {
    if (!Number.isSafeInteger(options.l1CapacityBytes) || options.l1CapacityBytes <= 0) {
      throw new InvalidCacheConfigError('l1CapacityBytes must be a positive integer');
    }
    if (options.lz4ThresholdBytes !== undefined && !(options.lz4ThresholdBytes >= 0)) {
      throw new InvalidCacheConfigError('lz4ThresholdBytes must be >= 0');
    }
    if (options.l2 !== undefined && !(options.l2.minEntryBytes >= 0)) {
      throw new InvalidCacheConfigError('l2.minEntryBytes must be >= 0');
    }
    this.options = options;
    this.lz4 = options.lz4ThresholdBytes !== undefined;
    this.l1 = new S3Lfu<string, L1Value>({
      maximumWeight: options.l1CapacityBytes,
      expectedEntries: Math.max(64, Math.ceil(options.l1CapacityBytes / EXPECTED_ENTRY_BYTES)),
      // Without L2 an eviction has nowhere to go: no listener call per eviction.
      ...(options.l2 === undefined ? {} : { onEvict: (key: string, entry: L1Value) => this.demote(key, entry) }),
    });
    this.l2 = options.l2 === undefined ? undefined : new L2File(options.l2.path, options.l2.capacityBytes);
  }

  /** Opens L2 (recovering its entries after a clean close). */
  async open(): Promise<void> {
    this.l2?.open();
    this.isOpen = true;
  }

  /** Flushes L2 and marks it clean so the next open() finds its entries; drops L1. */
  async close(): Promise<void> {
    if (!this.isOpen) return;
    this.isOpen = false;
    for (const f of this.inflight.values()) f.stale = true;
    this.inflight.clear();
    this.l1.clear();
    this.l2?.close();
  }

  /** L1, then L2, then L3; an L2 hit is promoted to L1, an L3 hit to L2 and L1. */
  get(key: string): Promise<Buffer | undefined> {
    if (!this.isOpen) return Promise.reject(new CacheClosedError('get'));
    const cached = this.getCached(key);
    if (cached !== undefined) return Promise.resolve(cached);
    const l3 = this.options.l3;
    if (l3 === undefined) return Promise.resolve(undefined);
    const joined = this.inflight.get(key);
    if (joined !== undefined) return joined.promise;
    return this.fetchFromL3(l3, key);
  }

  /** L1 and L2 only, synchronously (both are memory); undefined means "ask L3". */
  getCached(key: string): Buffer | undefined {
    this.assertOpen('get');
    const entry = this.l1.get(key);
    if (entry !== undefined) {
      this.l1Hits++;
      // Without LZ4 every entry is a Buffer: no `instanceof` (a prototype walk on a Buffer).
      return this.lz4 && entry instanceof Lz4Value ? uncompressSync(entry.stored) : (entry as Buffer);
    }
    this.l1Misses++;
    if (this.l2 === undefined) return undefined;
    const l2Entry = this.l2.get(key);
    if (l2Entry === undefined) return undefined;
    // Inclusive: the L2 copy stays valid, so a later L1 eviction need not rewrite it.
    this.insertL1(key, l2Entry.lz4 ? new Lz4Value(l2Entry.stored, l2Entry.rawLengthBytes) : l2Entry.stored, false);
    return l2Entry.lz4 ? uncompressSync(l2Entry.stored) : l2Entry.stored;
  }

  /** Caches value under key (taking ownership of the Buffer), replacing any cached copy. */
  put(key: string, value: Buffer): void {
    this.assertOpen('put');
    // A key of 1..341 UTF-16 code units is at most 1023 UTF-8 bytes: valid without counting.
    if (typeof key !== 'string' || key.length === 0 || key.length > SHORT_KEY_MAX_LENGTH) checkKey(key);
    this.markStale(key);
    // The L2 copy is now stale; it is rewritten when L1 demotes the new value.
    if (this.l2 !== undefined) this.l2.delete(key);
    const threshold = this.options.lz4ThresholdBytes;
    if (threshold === undefined || value.length < threshold || value.length === 0) {
      // Uncompressed: the weight is known without asking what kind of entry this is. This
      // is the steady-eviction miss path (get miss, then put): an `instanceof` on a Buffer
      // walks its prototype chain, and weightOf() would pay it again.
      if (!this.l1.set(key, value, value.length + 2 * key.length + L1_ENTRY_OVERHEAD_BYTES, true)) this.demote(key, value);
      return;
    }
    this.insertL1(key, this.encode(value), true);
  }

  /** Removes key from every cache tier; true if a tier held it. */
  delete(key: string): boolean {
    this.assertOpen('delete');
    this.markStale(key);
    const entry = this.l1.delete(key);
    const inL2 = this.l2?.delete(key) ?? false;
    return entry !== undefined || inL2;
  }

  /** Call on every write to key's backing data: no later read returns the old bytes. */
  invalidate(key: string): void {
    this.delete(key);
  }

  /** Invalidates every key starting with prefix (e.g. `vol/<id>/` on volume deletion); returns how many. */
  invalidatePrefix(prefix: string): number {
    this.assertOpen('invalidatePrefix');
    return this.invalidateMatching((key) => key.startsWith(prefix));
  }

  /** Invalidates `vol/<volumeId>/<i>` for firstChunkIndex <= i < endChunkIndex; returns how many were cached. */
  invalidateChunkRange(volumeId: string, firstChunkIndex: number, endChunkIndex: number): number {
    this.assertOpen('invalidateChunkRange');
    if (!Number.isSafeInteger(firstChunkIndex) || !Number.isSafeInteger(endChunkIndex) || firstChunkIndex < 0) {
      throw new RangeError('chunk indexes must be non-negative safe integers');
    }
    if (endChunkIndex <= firstChunkIndex) return 0;
    if (endChunkIndex - firstChunkIndex <= RANGE_SCAN_THRESHOLD) {
      let n = 0;
      for (let i = firstChunkIndex; i < endChunkIndex; i++) if (this.delete(chunkKey(volumeId, i))) n++;
      return n;
    }
    const prefix = `vol/${volumeId}/`;
    return this.invalidateMatching((key) => {
      if (!key.startsWith(prefix)) return false;
      const rest = key.slice(prefix.length);
      if (!/^\d+$/.test(rest)) return false;
      const index = Number(rest);
      return index >= firstChunkIndex && index < endChunkIndex;
    });
  }

  stats(): CacheStats {
    const l2: L2Stats | undefined = this.l2?.opened ? this.l2.stats() : undefined;
    return {
      l1: {
        hits: this.l1Hits,
        misses: this.l1Misses,
        evictions: this.l1.evictionCount,
        bytes: this.l1.weightedSize,
        entries: this.l1.size,
        capacityBytes: this.options.l1CapacityBytes,
      },
      l2:
        l2 === undefined
          ? undefined
          : {
              hits: l2.hits,
              misses: l2.misses,
              evictions: l2.evictions,
              bytes: l2.bytes,
              entries: l2.entries,
              capacityBytes: l2.capacityBytes,
              corruptions: l2.corruptions,
              recoveredEntries: l2.recoveredEntries,
            },
      l3: { ...this.l3Counters },
    };
  }

  private invalidateMatching(match: (key: string) => boolean): number {
    const keys = new Set<string>();
    for (const k of this.l1.keys()) if (match(k)) keys.add(k);
    if (this.l2 !== undefined) for (const k of this.l2.keys()) if (match(k)) keys.add(k);
    for (const [k, f] of this.inflight) {
      if (match(k)) {
        f.stale = true;
        this.inflight.delete(k);
      }
    }
    for (const k of keys) this.delete(k);
    return keys.size;
  }

  private fetchFromL3(l3: L3Backend, key: string): Promise<Buffer | undefined> {
    if (this.inflight.size >= MAX_INFLIGHT_L3) {
      // Untracked: a write racing this read could not be detected, so do not promote.
      return l3.get(key).then((v) => {
        if (v === undefined) this.l3Counters.misses++;
        else this.l3Counters.hits++;
        return v;
      });
    }
    const fetch: InflightFetch = { promise: undefined as unknown as Promise<Buffer | undefined>, stale: false };
    fetch.promise = l3.get(key).then(
      (value) => {
        if (this.inflight.get(key) === fetch) this.inflight.delete(key);
        if (value === undefined) {
          this.l3Counters.misses++;
          return undefined;
        }
        this.l3Counters.hits++;
        // A write or invalidation since the fetch started means these bytes may be old:
        // hand them to this (concurrent) reader, but never cache them.
        if (!fetch.stale && this.isOpen) {
          const entry = this.encode(value);
          if (this.l2 !== undefined && value.length >= this.options.l2!.minEntryBytes) {
            this.putL2(this.l2, key, entry);
          }
          this.insertL1(key, entry, false);
        }
        return value;
      },
      (err: unknown) => {
        if (this.inflight.get(key) === fetch) this.inflight.delete(key);
        this.l3Counters.errors++;
        throw err;
      },
    );
    this.inflight.set(key, fetch);
    return fetch.promise;
  }

  private markStale(key: string): void {
    if (this.inflight.size === 0) return;
    const f = this.inflight.get(key);
    if (f !== undefined) {
      f.stale = true;
      this.inflight.delete(key);
    }
  }

  private encode(value: Buffer): L1Value {
    const threshold = this.options.lz4ThresholdBytes;
    if (threshold !== undefined && value.length >= threshold && value.length > 0) {
      const compressed = compressSync(value);
      if (compressed.length <= value.length - (value.length >>> 3)) return new Lz4Value(compressed, value.length);
    }
    return value;
  }

  private insertL1(key: string, entry: L1Value, countAccess: boolean): void {
    // Larger than all of L1: keep it in L2 only.
    if (!this.l1.set(key, entry, weightOf(key, entry), countAccess)) this.demote(key, entry);
  }

  private demote(key: string, entry: L1Value): void {
    const l2 = this.l2;
    const rawLengthBytes = entry instanceof Lz4Value ? entry.rawLengthBytes : entry.length;
    if (l2 === undefined || !this.isOpen || rawLengthBytes < this.options.l2!.minEntryBytes) return;
    if (l2.has(key)) return; // inclusive: the copy there holds the same bytes
    this.putL2(l2, key, entry);
  }

  private putL2(l2: L2File, key: string, entry: L1Value): void {
    if (entry instanceof Lz4Value) l2.put(key, entry.stored, entry.rawLengthBytes, true);
    else l2.put(key, entry, entry.length, false);
  }

  private assertOpen(operation: 'get' | 'put' | 'delete' | 'invalidatePrefix' | 'invalidateChunkRange'): void {
    if (!this.isOpen) throw new CacheClosedError(operation);
  }
}

function weightOf(key: string, entry: L1Value): number {
  const storedBytes = entry instanceof Lz4Value ? entry.stored.length : entry.length;
  return storedBytes + 2 * key.length + L1_ENTRY_OVERHEAD_BYTES;
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidCacheKeyError('empty');
  // A UTF-16 code unit is at most 3 UTF-8 bytes: short keys need no byte count.
  if (key.length * 3 > L2_MAX_KEY_BYTES && Buffer.byteLength(key, 'utf8') > L2_MAX_KEY_BYTES) throw new InvalidCacheKeyError(`longer than ${L2_MAX_KEY_BYTES} bytes`);
}
