// The L1 replacement policy, "S3-LFU": S3-FIFO (small FIFO, main, ghost of small's evictees)
// whose one-hit small-queue evictees duel main's victim on TinyLFU frequency, and which
// switches to plain LRU while sampled shadow caches show LRU winning on the current workload
// (and from promotion after 1 hit in small to 2 while a third shadow shows that winning).
//
// Chosen by measurement (bench/cache-hit-ratio, 7 traces x 4 sizes) over LRU, plain S3-FIFO
// and Caffeine-style W-TinyLFU (bench/cache-wtinylfu.ts). S3-FIFO's quick demotion wins on
// the web traces; the sketch duel recovers what it loses on loops and mixed workloads; no
// S3-FIFO variant matches LRU on file-system traces (sprite) whose blocks come back a few
// times at reuse distances between the small queue's and the cache's size, hence the
// switch. Main is kept in recency order (a hit relinks) with CLOCK counters on top, so the
// LRU mode needs no other list.
//
// Entries live in parallel arrays indexed by slot (as lru-cache does), not in node objects,
// and keys find their slot through an open-addressing table of (slot, hash) pairs keyed by
// the policy's own hash, not through a Map: the policy needs that hash on every miss anyway
// (sketch, ghost, shadow sampling), so a miss pays one string hash instead of two (V8's for
// the Map, ours), and a miss's get + insert + eviction cost three probes of one typed array
// instead of three Map operations (a third of the miss path, measured) and the Map's
// periodic rehash of its deleted entries. Nothing allocates once the arrays have grown.
import { FrequencySketch, GhostList, hashKey, type EvictionListener, type PolicyKey } from './frequency-sketch.js';

const SMALL = 0;
const MAIN = 1;
// Tuned on the traces: small queue 10% (S3-FIFO's), CLOCK counters up to 7 (S3-FIFO: 3),
// promotion to main after 1 hit in small (S3-FIFO: 2; the policy moves to 2 while a third
// shadow shows it ahead, below), and a one-hit evictee displaces main's victim only when the
// sketch rates it more than 2 accesses hotter.
const SMALL_FRACTION = 0.1;
const FREQ_MAX = 7;
const PROMOTE_HITS = 1;
const ALT_PROMOTE_HITS = 2;
const DUEL_MARGIN = 2;

// Mode switch. Two shadow caches (S3-LFU and LRU, hash keys only, no values) see the accesses
// of 1 key in SAMPLE_RATE (chosen by hash, as SHARDS does) at 1/SAMPLE_RATE of the capacity.
// Each sampled lookup adds (LRU shadow hit) - (S3-LFU shadow hit) to two exponentially
// decayed scores: a slow one over about SWITCH_WINDOW_ACCESSES and a fast one over about
// BURST_WINDOW_ACCESSES (both in unsampled accesses). The real cache follows the slow score
// once it leads by SWITCH_HYSTERESIS_HITS, and the fast one at once when it leads by
// BURST_LEAD_HITS: on file-system traces LRU wins in bursts of a few thousand accesses that a
// slow score, still carrying S3-LFU's long lead, cannot see in time. Both thresholds count
// *sampled* hits, not scaled by 1/SAMPLE_RATE: the noise of a sampled score is a number of
// sampled hits, so a threshold divided by the sample rate (1.25 hits at 1 in 16) flipped the
// mode on noise. Sampling keeps the shadows at >= MIN_SHADOW_ENTRIES, below which a
// miniature cache stops predicting the full one. Chosen on the traces (docs/cache.md).
//
// Promotion threshold. A third shadow, S3-LFU promoting after ALT_PROMOTE_HITS hits in small,
// sees the same sampled keys; a third slow score (its hits - the PROMOTE_HITS shadow's, same
// window and hysteresis as the LRU score) sets how many hits in small the real cache asks of
// an entry before promoting it (1 or 2). Unlike the LRU switch, this one changes no list and
// no ordering, only the threshold read when small evicts, so following a noisy score costs
// almost nothing: the web traces at small sizes want 2 (web07 1%: +194 hits), most cells 1.
const MODE_LFU = 0;
const MODE_LRU = 1;
const MIN_SHADOW_ENTRIES = 128;
const MAX_SAMPLE_RATE = 1 << 12;
const SWITCH_WINDOW_ACCESSES = 100_000;
const SWITCH_HYSTERESIS_HITS = 5;
const BURST_WINDOW_ACCESSES = 10_000;
const BURST_LEAD_HITS = 40;
const BURST_MIN_SAMPLES = 256;

export interface S3LfuOptions<K, V> {
  maximumWeight: number;
  expectedEntries: number;
  onEvict?: EvictionListener<K, V>;
}

// Slots 0 and 1 are the sentinels of the two circular lists.
const SMALL_HEAD = 0;
const MAIN_HEAD = 1;
const FIRST_SLOT = 2;
// Arrays double up to this many slots; the weight bound stops growth long before in practice.
const MAX_SLOTS = 1 << 26;
const MIN_INDEX_POSITIONS = 64;

export class S3Lfu<K extends PolicyKey, V> {
  readonly maximumWeight: number;
  private readonly smallMax: number;
  // Key -> slot: linear probing over (slot, hash) pairs, slot 0 = empty (slots 0 and 1 are
  // the list sentinels, never entries), deletion by backward shift (no tombstones, so a
  // churning cache never degrades). At most half full: it doubles with the entry count (not
  // with the slot arrays, which are sized for the expected entries), so a hit's probe
  // touches as small a table as the entries allow.
  private index: Int32Array;
  private indexMask: number;
  private count = 0;
  private readonly sketch: FrequencySketch;
  // False only in the LRU shadow: a fixed LRU never puts an entry in small, so nothing ever
  // reads its sketch or fills its ghost; counting and probing would only cost its sampled
  // misses a sketch increment and a ghost probe.
  private readonly countsFrequency: boolean;
  private readonly ghost: GhostList;
  private readonly onEvict: EvictionListener<K, V> | undefined;
  private keyList: (K | undefined)[] = [];
  private valList: (V | undefined)[] = [];
  private weights: Float64Array;
  private hashes: Uint32Array;
  private freqs: Uint8Array;
  private queues: Uint8Array;
  private nexts: Uint32Array;
  private prevs: Uint32Array;
  private free: number[] = [];
  private usedSlots = FIRST_SLOT;
  private smallWeight = 0;
  private mainWeight = 0;
  private lastMissKey: K | undefined = undefined;
  private lastMissHash = 0;
  private mode: number;
  // Shadows exist only on the real cache (a shadow has none). Keyed by the real keys, so the
  // key comparisons in find() see one key type.
  private readonly shadowLfu: S3Lfu<K, true> | undefined;
  private readonly shadowLru: S3Lfu<K, true> | undefined;
  private readonly shadowLfuAlt: S3Lfu<K, true> | undefined;
  // Hits in small that promote an entry to main: PROMOTE_HITS or ALT_PROMOTE_HITS.
  private promoteHits: number;
  private readonly sampleMask: number;
  private readonly scoreDecay: number;
  private readonly burstDecay: number;
  // Decayed (shadow LRU hits - shadow S3-LFU hits) over sampled lookups: slow and fast.
  private score = 0;
  private burstScore = 0;
  // Decayed (shadow ALT_PROMOTE_HITS hits - shadow PROMOTE_HITS hits) over sampled lookups.
  private promoteScore = 0;
  evictionCount = 0;
  modeSwitches = 0;
  promoteSwitches = 0;

  /**
   * `shadowMode` and `shadowPromoteHits` are internal: they make a fixed-mode shadow (no
   * shadows of its own).
   */
  constructor(options: S3LfuOptions<K, V>, shadowMode?: number, shadowPromoteHits = PROMOTE_HITS) {
    if (!(options.maximumWeight > 0)) throw new RangeError('maximumWeight must be > 0');
    this.maximumWeight = options.maximumWeight;
    this.mode = shadowMode ?? MODE_LFU;
    this.promoteHits = shadowPromoteHits;
    let sampleRate = 1;
    while (sampleRate < MAX_SAMPLE_RATE && options.expectedEntries / (2 * sampleRate) >= MIN_SHADOW_ENTRIES) sampleRate *= 2;
    this.sampleMask = sampleRate - 1;
    this.scoreDecay = 1 - sampleRate / SWITCH_WINDOW_ACCESSES;
    // At least BURST_MIN_SAMPLES samples per window: at a high sample rate 10,000 accesses hold
    // too few samples to ever lead by BURST_LEAD_HITS (at R = 4096, 2.4).
    this.burstDecay = 1 - sampleRate / Math.max(BURST_WINDOW_ACCESSES, BURST_MIN_SAMPLES * sampleRate);
    if (shadowMode === undefined) {
      const shadowOptions = {
        maximumWeight: options.maximumWeight / sampleRate,
        expectedEntries: Math.max(1, Math.ceil(options.expectedEntries / sampleRate)),
      };
      this.shadowLfu = new S3Lfu<K, true>(shadowOptions, MODE_LFU);
      this.shadowLru = new S3Lfu<K, true>(shadowOptions, MODE_LRU);
      this.shadowLfuAlt = new S3Lfu<K, true>(shadowOptions, MODE_LFU, ALT_PROMOTE_HITS);
    }
    this.smallMax = Math.max(1, Math.floor(options.maximumWeight * SMALL_FRACTION));
    this.countsFrequency = shadowMode !== MODE_LRU;
    this.sketch = new FrequencySketch(this.countsFrequency ? options.expectedEntries : 0);
    this.ghost = new GhostList(Math.max(64, Math.min(options.expectedEntries, 1 << 20)));
    this.onEvict = options.onEvict;
    const slots = Math.max(64, Math.min(options.expectedEntries + FIRST_SLOT, 1 << 20));
    this.weights = new Float64Array(slots);
    this.hashes = new Uint32Array(slots);
    this.freqs = new Uint8Array(slots);
    this.queues = new Uint8Array(slots);
    this.nexts = new Uint32Array(slots);
    this.prevs = new Uint32Array(slots);
    this.indexMask = MIN_INDEX_POSITIONS - 1;
    this.index = new Int32Array(2 * MIN_INDEX_POSITIONS);
    this.resetLists();
  }

  /** True while the policy runs as plain LRU (the shadows show LRU ahead). */
  get lruMode(): boolean {
    return this.mode === MODE_LRU;
  }

  /** Hits an entry needs in the small queue to be promoted to main (1, or 2 while that wins). */
  get promotionHits(): number {
    return this.promoteHits;
  }

  get size(): number {
    return this.count;
  }
  get weightedSize(): number {
    return this.smallWeight + this.mainWeight;
  }
  has(key: K): boolean {
    return this.find(key, hashKey(key)) !== 0;
  }
  peek(key: K): V | undefined {
    const i = this.find(key, hashKey(key));
    return i === 0 ? undefined : this.valList[i];
  }
  /** The cached keys, in slot order (a snapshot is safe to take while deleting). */
  *keys(): IterableIterator<K> {
    for (let i = FIRST_SLOT; i < this.usedSlots; i++) {
      const key = this.keyList[i];
      if (key !== undefined) yield key;
    }
  }

  get(key: K): V | undefined {
    const hash = hashKey(key);
    const i = this.find(key, hash);
    if (i === 0) {
      this.recordMiss(key, hash);
      return undefined;
    }
    this.touch(i, hash);
    return this.valList[i];
  }

  /** get() for the real cache feeding its shadows: it already has the key's hash. */
  private getHashed(key: K, hash: number): V | undefined {
    const i = this.find(key, hash);
    if (i === 0) {
      this.recordMiss(key, hash);
      return undefined;
    }
    this.touch(i, hash);
    return this.valList[i];
  }

  /** The slot holding key, or 0. */
  private find(key: K, hash: number): number {
    const index = this.index;
    const mask = this.indexMask;
    const h = hash | 0;
    let p = hash & mask;
    for (;;) {
      const slot = index[2 * p]!;
      if (slot === 0) return 0;
      if (index[2 * p + 1] === h && this.keyList[slot] === key) return slot;
      p = (p + 1) & mask;
    }
  }

  private indexInsert(slot: number, hash: number): void {
    const index = this.index;
    const mask = this.indexMask;
    let p = hash & mask;
    while (index[2 * p] !== 0) p = (p + 1) & mask;
    index[2 * p] = slot;
    index[2 * p + 1] = hash;
  }

  private indexRemove(slot: number, hash: number): void {
    const index = this.index;
    const mask = this.indexMask;
    let hole = hash & mask;
    while (index[2 * hole] !== slot) hole = (hole + 1) & mask;
    // Backward shift: every later entry of the probe run whose home is not cyclically in
    // (hole, q] would become unreachable across the hole, so it moves into it.
    for (let q = (hole + 1) & mask; ; q = (q + 1) & mask) {
      const s = index[2 * q]!;
      if (s === 0) break;
      const h = index[2 * q + 1]!;
      if (((q - (h & mask)) & mask) >= ((q - hole) & mask)) {
        index[2 * hole] = s;
        index[2 * hole + 1] = h;
        hole = q;
      }
    }
    index[2 * hole] = 0;
  }

  /** A miss: the sketch counts it, the shadows see it if sampled, and set() may reuse the hash. */
  private recordMiss(key: K, hash: number): void {
    this.lastMissKey = key;
    this.lastMissHash = hash;
    if (this.countsFrequency) this.sketch.increment(hash);
    if ((hash >>> 20 & this.sampleMask) === 0 && this.shadowLfu !== undefined) this.shadowLookup(key, -1, hash);
  }

  /** A hit: CLOCK counter, recency order in main, the sketch for small's first hits, shadows. */
  private touch(i: number, hash: number): void {
    // hash is the entry's (every caller has just looked it up by it): no load of hashes[i].
    const f = this.freqs[i]!;
    if (this.queues[i] === SMALL) {
      // The sketch only needs what the duel compares: misses, and the first hit of an entry
      // still in small (which decides its promotion). Keeping main's hits out of it spares
      // the hit path a cache miss in a table of C x 16 bytes.
      if (f === 0) this.sketch.increment(hash);
    } else if (this.nexts[i] !== MAIN_HEAD) {
      // Move to the MRU end of main (typed-array relink, no allocation).
      const p = this.prevs[i]!;
      const n = this.nexts[i]!;
      this.nexts[p] = n;
      this.prevs[n] = p;
      const last = this.prevs[MAIN_HEAD]!;
      this.prevs[i] = last;
      this.nexts[i] = MAIN_HEAD;
      this.nexts[last] = i;
      this.prevs[MAIN_HEAD] = i;
    }
    if (f < FREQ_MAX) this.freqs[i] = f + 1;
    if ((hash >>> 20 & this.sampleMask) === 0 && this.shadowLfu !== undefined) this.shadowLookup(this.keyList[i]!, this.weights[i]!, hash);
  }

  /**
   * A sampled lookup: the three shadows see it, the scores move, the mode and the promotion
   * threshold may switch. On a real
   * hit (weight >= 0) a shadow that misses admits the key at once; after a real miss the
   * shadows admit it when the real cache does (set()). The shadows are handed the real
   * cache's hash of the key (the same function of the same key), so they never rehash it.
   */
  private shadowLookup(key: K, weight: number, hash: number): void {
    let d = 0;
    if (this.shadowLru!.getHashed(key, hash) !== undefined) d++;
    else if (weight >= 0) this.shadowLru!.set(key, true, weight, false);
    let lfuHit = 0;
    if (this.shadowLfu!.getHashed(key, hash) !== undefined) lfuHit = 1;
    else if (weight >= 0) this.shadowLfu!.set(key, true, weight, false);
    d -= lfuHit;
    let altHit = 0;
    if (this.shadowLfuAlt!.getHashed(key, hash) !== undefined) altHit = 1;
    else if (weight >= 0) this.shadowLfuAlt!.set(key, true, weight, false);
    const promoteScore = this.promoteScore * this.scoreDecay + altHit - lfuHit;
    this.promoteScore = promoteScore;
    const promoteHits =
      promoteScore > SWITCH_HYSTERESIS_HITS ? ALT_PROMOTE_HITS : promoteScore < -SWITCH_HYSTERESIS_HITS ? PROMOTE_HITS : this.promoteHits;
    if (promoteHits !== this.promoteHits) {
      this.promoteHits = promoteHits;
      this.promoteSwitches++;
    }
    const score = this.score * this.scoreDecay + d;
    this.score = score;
    const burst = this.burstScore * this.burstDecay + d;
    this.burstScore = burst;
    let wantLru: boolean;
    if (burst >= BURST_LEAD_HITS) wantLru = true;
    else if (burst <= -BURST_LEAD_HITS) wantLru = false;
    // Leaving LRU mode also waits for the burst score to turn, so a burst switch is not
    // undone by the slow score's older lead on the very next sample.
    else if (this.mode === MODE_LRU) wantLru = score > -SWITCH_HYSTERESIS_HITS || burst > 0;
    else wantLru = score > SWITCH_HYSTERESIS_HITS;
    const mode = wantLru ? MODE_LRU : MODE_LFU;
    if (mode !== this.mode) {
      this.mode = mode;
      this.modeSwitches++;
      if (mode === MODE_LRU) this.spliceSmallIntoMain();
    }
  }

  /**
   * On a switch to LRU mode: small's entries (the most recently inserted) move to main's MRU
   * end in their insertion order. Left in small, LRU mode would drain them first, evicting the
   * newest entries before main's least recently used ones (measured: -0.2% on sprite 5%).
   * O(entries in small), once per switch (switches are rare: at most a few hundred in 5M
   * accesses on the traces).
   */
  private spliceSmallIntoMain(): void {
    const first = this.nexts[SMALL_HEAD]!;
    if (first === SMALL_HEAD) return;
    const last = this.prevs[SMALL_HEAD]!;
    for (let i = first; i !== SMALL_HEAD; i = this.nexts[i]!) this.queues[i] = MAIN;
    const mainLast = this.prevs[MAIN_HEAD]!;
    this.nexts[mainLast] = first;
    this.prevs[first] = mainLast;
    this.nexts[last] = MAIN_HEAD;
    this.prevs[MAIN_HEAD] = last;
    this.nexts[SMALL_HEAD] = this.prevs[SMALL_HEAD] = SMALL_HEAD;
    this.mainWeight += this.smallWeight;
    this.smallWeight = 0;
  }

  /** A sampled insertion: a shadow that missed the key caches it, as the real cache does. */
  private shadowInsert(key: K, weight: number): void {
    // Right after the shadows' own miss on this key: set() skips its lookup (lastMissKey).
    this.shadowLru!.set(key, true, weight, false);
    this.shadowLfu!.set(key, true, weight, false);
    this.shadowLfuAlt!.set(key, true, weight, false);
  }

  set(key: K, value: V, weight: number, countAccess = true): boolean {
    // The key of the last get() miss is not cached (only set() inserts, and it clears
    // lastMissKey): the read-through insert after a miss skips the lookup and the hash.
    const afterMiss = key === this.lastMissKey;
    const hash = afterMiss ? this.lastMissHash : hashKey(key);
    const existing = afterMiss ? 0 : this.find(key, hash);
    if (weight > this.maximumWeight) {
      if (existing !== 0) {
        this.unlink(existing);
        this.release(existing);
      }
      return false;
    }
    if (existing !== 0) {
      this.valList[existing] = value;
      const delta = weight - this.weights[existing]!;
      if (this.queues[existing] === SMALL) this.smallWeight += delta;
      else this.mainWeight += delta;
      this.weights[existing] = weight;
      if (countAccess) this.touch(existing, hash);
    } else {
      // After a get() miss of this key (the usual read-through), that get() already counted
      // the access in the sketch and the shadows: a second count would double every miss.
      if (afterMiss) this.lastMissKey = undefined;
      else if (countAccess && this.countsFrequency) this.sketch.increment(hash);
      if (2 * (this.count + 1) > this.indexMask + 1) this.growIndex();
      const i = this.allocate();
      this.keyList[i] = key;
      this.valList[i] = value;
      this.weights[i] = weight;
      this.hashes[i] = hash;
      this.freqs[i] = 0;
      this.count++;
      this.indexInsert(i, hash);
      // The LRU shadow's ghost is always empty (it never evicts from small): no probe.
      this.append(i, (this.countsFrequency && this.ghost.take(hash)) || this.mode === MODE_LRU ? MAIN : SMALL);
      if ((hash >>> 20 & this.sampleMask) === 0 && this.shadowLfu !== undefined) this.shadowInsert(key, weight);
      if ((this.count & 1023) === 0) {
        if (this.countsFrequency) this.sketch.ensureCapacity(this.count);
        this.ghost.ensureCapacity(this.count);
      }
    }
    this.evict();
    return true;
  }

  delete(key: K): V | undefined {
    const i = this.find(key, hashKey(key));
    if (i === 0) return undefined;
    const value = this.valList[i];
    const hash = this.hashes[i]!;
    // Invalidation is not a policy decision: the shadows forget the key too.
    if ((hash >>> 20 & this.sampleMask) === 0 && this.shadowLfu !== undefined) {
      this.shadowLfu.delete(key);
      this.shadowLru!.delete(key);
      this.shadowLfuAlt!.delete(key);
    }
    this.unlink(i);
    this.release(i);
    return value;
  }

  clear(): void {
    this.shadowLfu?.clear();
    this.shadowLru?.clear();
    this.shadowLfuAlt?.clear();
    this.score = 0;
    this.burstScore = 0;
    this.promoteScore = 0;
    if (this.shadowLfu !== undefined) {
      this.mode = MODE_LFU;
      this.promoteHits = PROMOTE_HITS;
    }
    this.lastMissKey = undefined;
    this.index.fill(0);
    this.count = 0;
    this.keyList = [];
    this.valList = [];
    this.free = [];
    this.usedSlots = FIRST_SLOT;
    this.resetLists();
  }

  private resetLists(): void {
    this.nexts[SMALL_HEAD] = this.prevs[SMALL_HEAD] = SMALL_HEAD;
    this.nexts[MAIN_HEAD] = this.prevs[MAIN_HEAD] = MAIN_HEAD;
    this.smallWeight = this.mainWeight = 0;
  }

  private allocate(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    if (this.usedSlots === this.weights.length) this.grow();
    return this.usedSlots++;
  }

  private grow(): void {
    const slots = this.weights.length * 2;
    if (slots > MAX_SLOTS) throw new RangeError(`L1 policy exceeds ${MAX_SLOTS} entries`);
    this.weights = grown(this.weights, new Float64Array(slots));
    this.hashes = grown(this.hashes, new Uint32Array(slots));
    this.freqs = grown(this.freqs, new Uint8Array(slots));
    this.queues = grown(this.queues, new Uint8Array(slots));
    this.nexts = grown(this.nexts, new Uint32Array(slots));
    this.prevs = grown(this.prevs, new Uint32Array(slots));
  }

  /** Doubles the index and re-inserts every entry from its stored hash (no key is hashed again). */
  private growIndex(): void {
    const positions = 2 * (this.indexMask + 1);
    this.indexMask = positions - 1;
    this.index = new Int32Array(2 * positions);
    for (let i = FIRST_SLOT; i < this.usedSlots; i++) if (this.keyList[i] !== undefined) this.indexInsert(i, this.hashes[i]!);
  }

  /** Frees an unlinked slot and forgets its key. */
  private release(i: number): void {
    this.indexRemove(i, this.hashes[i]!);
    this.count--;
    this.keyList[i] = undefined;
    this.valList[i] = undefined;
    this.free.push(i);
  }

  private append(i: number, queue: number): void {
    const head = queue === SMALL ? SMALL_HEAD : MAIN_HEAD;
    const last = this.prevs[head]!;
    this.queues[i] = queue;
    this.prevs[i] = last;
    this.nexts[i] = head;
    this.nexts[last] = i;
    this.prevs[head] = i;
    if (queue === SMALL) this.smallWeight += this.weights[i]!;
    else this.mainWeight += this.weights[i]!;
  }

  private unlink(i: number): void {
    const p = this.prevs[i]!;
    const n = this.nexts[i]!;
    this.nexts[p] = n;
    this.prevs[n] = p;
    if (this.queues[i] === SMALL) this.smallWeight -= this.weights[i]!;
    else this.mainWeight -= this.weights[i]!;
  }

  /** Evicts an unlinked slot: the listener sees its key, value and weight. */
  private evictSlot(i: number): void {
    const key = this.keyList[i]!;
    const value = this.valList[i]!;
    const weight = this.weights[i]!;
    this.release(i);
    this.evictionCount++;
    if (this.onEvict !== undefined) this.onEvict(key, value, weight);
  }

  private evict(): void {
    while (this.smallWeight + this.mainWeight > this.maximumWeight) {
      // LRU mode drains what small still holds, then evicts main's LRU end.
      if (
        this.nexts[SMALL_HEAD] !== SMALL_HEAD &&
        (this.smallWeight > this.smallMax || this.mode === MODE_LRU || this.nexts[MAIN_HEAD] === MAIN_HEAD)
      ) {
        this.evictSmall();
      } else {
        this.evictMain();
      }
    }
  }

  /**
   * Main's LRU end, after CLOCK: entries with a frequency get it decremented and another lap
   * (in LFU mode only). Linked, or -1.
   */
  private mainVictim(): number {
    for (;;) {
      const n = this.nexts[MAIN_HEAD]!;
      if (n === MAIN_HEAD) return -1;
      const f = this.freqs[n]!;
      if (f === 0 || this.mode === MODE_LRU) return n;
      this.freqs[n] = f - 1;
      // Head to tail of the same list: no weight or queue change.
      const next = this.nexts[n]!;
      this.nexts[MAIN_HEAD] = next;
      this.prevs[next] = MAIN_HEAD;
      const last = this.prevs[MAIN_HEAD]!;
      this.nexts[last] = n;
      this.prevs[n] = last;
      this.nexts[n] = MAIN_HEAD;
      this.prevs[MAIN_HEAD] = n;
    }
  }

  private evictMain(): void {
    const v = this.mainVictim();
    if (v < 0) return;
    this.unlink(v);
    this.evictSlot(v);
  }

  private evictSmall(): void {
    const t = this.nexts[SMALL_HEAD]!;
    if (t === SMALL_HEAD) {
      this.evictMain();
      return;
    }
    this.unlink(t);
    if (this.freqs[t]! >= this.promoteHits) {
      this.freqs[t] = 0;
      this.append(t, MAIN);
      return;
    }
    // One-hit wonder by S3-FIFO's rule; the sketch may still know it as popular.
    // A candidate rated <= DUEL_MARGIN cannot win (counts are >= 0): skip the CLOCK scan and
    // the victim's sketch read, which most one-hit evictees would otherwise pay.
    const candidateFrequency = this.sketch.frequency(this.hashes[t]!);
    if (candidateFrequency > DUEL_MARGIN && this.mainWeight + this.weights[t]! > this.maximumWeight - this.smallMax) {
      const victim = this.mainVictim();
      if (victim >= 0 && candidateFrequency > this.sketch.frequency(this.hashes[victim]!) + DUEL_MARGIN) {
        this.unlink(victim);
        this.evictSlot(victim);
        this.append(t, MAIN);
        return;
      }
    }
    this.ghost.add(this.hashes[t]!);
    this.evictSlot(t);
  }
}

/** `into` (a larger array of the same kind) with `from` copied to its start. */
function grown<T extends Float64Array | Uint32Array | Uint8Array>(from: T, into: T): T {
  into.set(from);
  return into;
}
