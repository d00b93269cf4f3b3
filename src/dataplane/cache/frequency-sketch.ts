// Shared pieces of the L1 replacement policy: key hashing, the TinyLFU frequency sketch
// (4-bit count-min, blocked, aged) and a bounded ghost list of recently dropped key hashes.

export type PolicyKey = string | number;

export type EvictionListener<K, V> = (key: K, value: V, weight: number) => void;

/** FNV-1a over the key's UTF-16 code units (two per step), finished with a murmur3 avalanche. */
export function hashKey(key: PolicyKey): number {
  let h: number;
  if (typeof key === 'number') {
    h = (key | 0) ^ Math.floor(key / 4294967296);
  } else {
    // The whole key, two code units per multiply. This is the L1 index's hash as well as
    // the sketch's and the ghost's (it runs on every L1 lookup): keys that hashed alike
    // would share one probe run of the index, so no part of the key is left out (hashing
    // only the last 16 code units, as before, made every key with a common 16-unit tail
    // and length collide). A collision costs probe length and sketch accuracy, never
    // correctness.
    const len = key.length;
    h = Math.imul(0x811c9dc5 ^ len, 0x01000193);
    let i = 0;
    for (; i + 1 < len; i += 2) h = Math.imul(h ^ (key.charCodeAt(i) | (key.charCodeAt(i + 1) << 16)), 0x01000193);
    if (i < len) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const COUNTER_MAX = 15;
// Bound on the sketch: 2^22 blocks of 16 one-byte counters = 64 MiB at most.
const SKETCH_MAX_BLOCKS = 1 << 22;
const BLOCK_COUNTERS = 16;

/**
 * Count-min sketch of 4 counters per key saturating at 15, halved every 10 x C additions
 * (TinyLFU's aging). The 4 counters of a key lie in one 16-byte block, as in Caffeine's
 * block layout, so an access costs one cache miss instead of four.
 */
export class FrequencySketch {
  private counters: Uint8Array;
  private blockMask: number;
  private additions = 0;
  private sampleSize: number;

  constructor(expectedEntries: number) {
    const blocks = FrequencySketch.blocksFor(expectedEntries);
    this.counters = new Uint8Array(blocks * BLOCK_COUNTERS);
    this.blockMask = blocks - 1;
    this.sampleSize = FrequencySketch.sampleSizeFor(expectedEntries);
  }

  /** One 16-counter block per expected entry, rounded to a power of two. */
  static blocksFor(entries: number): number {
    let blocks = 16;
    while (blocks < entries && blocks < SKETCH_MAX_BLOCKS) blocks <<= 1;
    return blocks;
  }

  static sampleSizeFor(entries: number): number {
    return 10 * Math.max(16, Math.min(entries, SKETCH_MAX_BLOCKS));
  }

  /** Grows (and clears) the sketch when the cache holds more entries than it was sized for. */
  ensureCapacity(entries: number): void {
    const blocks = FrequencySketch.blocksFor(entries);
    if (blocks <= this.blockMask + 1) {
      this.sampleSize = Math.max(this.sampleSize, FrequencySketch.sampleSizeFor(entries));
      return;
    }
    this.counters = new Uint8Array(blocks * BLOCK_COUNTERS);
    this.blockMask = blocks - 1;
    this.sampleSize = FrequencySketch.sampleSizeFor(entries);
    this.additions = 0;
  }

  frequency(hash: number): number {
    const base = (hash & this.blockMask) << 4;
    // The block index uses the low bits of the hash; the slots come from the high bits of a
    // remix (the low bits of a product depend only on the low bits of its input).
    const h = Math.imul(hash ^ (hash >>> 16), 0x9e3779b1);
    const c = this.counters;
    return Math.min(
      c[base + (h >>> 30)]!,
      c[base + 4 + ((h >>> 22) & 3)]!,
      c[base + 8 + ((h >>> 14) & 3)]!,
      c[base + 12 + ((h >>> 6) & 3)]!,
    );
  }

  /** Conservative update: only the counters at the current minimum are raised. */
  increment(hash: number): void {
    const base = (hash & this.blockMask) << 4;
    const h = Math.imul(hash ^ (hash >>> 16), 0x9e3779b1);
    const c = this.counters;
    const i0 = base + (h >>> 30);
    const i1 = base + 4 + ((h >>> 22) & 3);
    const i2 = base + 8 + ((h >>> 14) & 3);
    const i3 = base + 12 + ((h >>> 6) & 3);
    const c0 = c[i0]!;
    const c1 = c[i1]!;
    const c2 = c[i2]!;
    const c3 = c[i3]!;
    let min = c0 < c1 ? c0 : c1;
    if (c2 < min) min = c2;
    if (c3 < min) min = c3;
    if (min >= COUNTER_MAX) return;
    if (c0 === min) c[i0] = min + 1;
    if (c1 === min) c[i1] = min + 1;
    if (c2 === min) c[i2] = min + 1;
    if (c3 === min) c[i3] = min + 1;
    if (++this.additions >= this.sampleSize) this.age();
  }

  private age(): void {
    // Halve four counters per step: each byte holds 0..15, so shifting the 32-bit word and
    // masking each byte's top bit is exactly the per-byte halving, at a quarter of the steps
    // (this runs every 10 x C additions, i.e. amortised on every miss).
    const words = new Uint32Array(this.counters.buffer, this.counters.byteOffset, this.counters.length >>> 2);
    for (let i = 0; i < words.length; i++) words[i] = (words[i]! >>> 1) & 0x7f7f7f7f;
    this.additions = this.additions >>> 1;
  }
}


/**
 * Ghost list: remembers the hashes of the last `capacity` entries dropped, so a key that
 * comes back soon is recognised. A direct-mapped table (2 slots per remembered key) of
 * (hash, insertion stamp) pairs side by side, so a probe touches one cache line; no
 * allocation, O(1). A collision forgets the older ghost, which only costs a little hit
 * ratio, never correctness. Stamps are uint32 and compared modulo 2^32 (capacity < 2^31).
 */
export class GhostList {
  private table: Uint32Array;
  private mask: number;
  private clock = 0;
  private capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    const slots = GhostList.slotsFor(capacity);
    this.table = new Uint32Array(2 * slots);
    this.mask = slots - 1;
  }

  private static slotsFor(capacity: number): number {
    let slots = 64;
    while (slots < 2 * capacity && slots < 2 * SKETCH_MAX_BLOCKS) slots <<= 1;
    return slots;
  }

  /** Grows (and forgets) when the cache holds more entries than the ghost was sized for. */
  ensureCapacity(entries: number): void {
    if (entries <= this.capacity) return;
    this.capacity = entries;
    const slots = GhostList.slotsFor(entries);
    if (slots <= this.mask + 1) return;
    this.table = new Uint32Array(2 * slots);
    this.mask = slots - 1;
  }

  add(hash: number): void {
    const i = (hash & this.mask) << 1;
    // Stamp 0 means "empty": the clock skips it when it wraps.
    let clock = (this.clock + 1) >>> 0;
    if (clock === 0) clock = 1;
    this.clock = clock;
    this.table[i] = hash;
    this.table[i + 1] = clock;
  }

  /** True if hash was dropped within the last `capacity` drops; a hit is consumed. */
  take(hash: number): boolean {
    const i = (hash & this.mask) << 1;
    const t = this.table;
    const stamp = t[i + 1]!;
    if (stamp === 0 || t[i] !== hash || ((this.clock - stamp) >>> 0) >= this.capacity) return false;
    t[i + 1] = 0;
    return true;
  }
}
