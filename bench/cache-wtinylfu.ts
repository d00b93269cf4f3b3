// The L1 replacement policy: size-aware W-TinyLFU (window LRU + segmented-LRU main
// guarded by a count-min frequency sketch) whose window size adapts by hill climbing.
//
// Chosen by measurement over the traces in /work/shared/traces (bench/cache-hit-ratio):
// the frequency filter wins on scan/loop traces where LRU and S3-FIFO thrash, and the
// adaptive window recovers LRU's behaviour on recency-skewed traces. Weights are bytes
// for L1 and 1 for the entry-count simulations in the benchmark.

export type PolicyKey = string | number;

export type EvictionListener<K, V> = (key: K, value: V, weight: number) => void;

const WINDOW = 0;
const PROBATION = 1;
const PROTECTED = 2;

// Caffeine's published tuning: 1% initial window, 80% of main protected, 6.25% hill
// climbing step decaying by 2% a sample, restarted when the hit ratio moves by 5%.
const TUNE = (name: string, d: number) => Number(process.env['TUNE_' + name] ?? d);
const INITIAL_WINDOW_FRACTION = TUNE('IW', 0.01);
const PROTECTED_FRACTION = TUNE('PF', 0.8);
const STEP_FRACTION = TUNE('STEP', 0.0625);
const STEP_DECAY = TUNE('DECAY', 0.98);
const RESTART_THRESHOLD = TUNE('RT', 0.05);
const MAX_WINDOW_FRACTION = TUNE('MW', 0.8);
const SAMPLE_MULT = TUNE('SM', 10);
const TIE_ADMIT = TUNE("TIE", 0) === 1;
// A warm candidate (frequency > 5) that loses to an equally hot victim is still
// admitted 1 time in 128, so an attacker cannot pin the victim set (Caffeine's defence).
const WARM_CANDIDATE_FREQUENCY = 5;

class PolicyNode<K, V> {
  key: K;
  value: V;
  weight: number;
  hash: number;
  queue: number;
  prev: PolicyNode<K, V>;
  next: PolicyNode<K, V>;
  constructor(key: K, value: V, weight: number, hash: number) {
    this.key = key;
    this.value = value;
    this.weight = weight;
    this.hash = hash;
    this.queue = WINDOW;
    this.prev = this;
    this.next = this;
  }
}

/** FNV-1a over UTF-16 code units, finished with a murmur3 avalanche. */
export function hashKey(key: PolicyKey): number {
  let h: number;
  if (typeof key === 'number') {
    h = (key | 0) ^ Math.floor(key / 4294967296);
  } else {
    h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const SKETCH_DEPTH = 4;
const SKETCH_SEEDS = [0x97cb3127, 0xb1a3b6b5, 0x4f5e9a1d, 0xd6e8feb3];
const COUNTER_MAX = 15;
// Bound on the sketch: 4 rows x 2^22 one-byte counters = 16 MiB at most.
const SKETCH_MAX_WIDTH = 1 << 22;

/** Count-min sketch of 4-bit saturating counters, halved every 10 x width additions (aging). */
class FrequencySketch {
  private counters: Uint8Array;
  private mask: number;
  private additions = 0;
  private sampleSize: number;

  constructor(expectedEntries: number) {
    const width = FrequencySketch.widthFor(expectedEntries);
    this.counters = new Uint8Array(width * SKETCH_DEPTH);
    this.mask = width - 1;
    this.sampleSize = FrequencySketch.sampleSizeFor(expectedEntries);
  }

  /** Ages after 10 additions per cached entry (TinyLFU's reset interval W = 10 x C). */
  static sampleSizeFor(entries: number): number {
    return 10 * Math.max(16, Math.min(entries, SKETCH_MAX_WIDTH));
  }

  /** 4 counters per expected entry per row (16 in all), as in Caffeine's 4-bit table. */
  static widthFor(entries: number): number {
    let width = 64;
    while (width < 4 * entries && width < SKETCH_MAX_WIDTH) width <<= 1;
    return width;
  }

  get width(): number {
    return this.mask + 1;
  }

  /** Grows (and clears) the sketch when the cache holds more entries than it was sized for. */
  ensureCapacity(entries: number): void {
    const width = FrequencySketch.widthFor(entries);
    if (width <= this.width) {
      this.sampleSize = Math.max(this.sampleSize, FrequencySketch.sampleSizeFor(entries));
      return;
    }
    this.counters = new Uint8Array(width * SKETCH_DEPTH);
    this.mask = width - 1;
    this.sampleSize = FrequencySketch.sampleSizeFor(entries);
    this.additions = 0;
  }

  frequency(hash: number): number {
    let min = COUNTER_MAX;
    const width = this.mask + 1;
    for (let i = 0; i < SKETCH_DEPTH; i++) {
      const idx = i * width + ((Math.imul(hash, SKETCH_SEEDS[i]!) >>> 8) & this.mask);
      const c = this.counters[idx]!;
      if (c < min) min = c;
    }
    return min;
  }

  /** Conservative update: only the counters at the current minimum are raised. */
  increment(hash: number): void {
    const width = this.mask + 1;
    const c = this.counters;
    const i0 = (Math.imul(hash, SKETCH_SEEDS[0]!) >>> 8) & this.mask;
    const i1 = width + ((Math.imul(hash, SKETCH_SEEDS[1]!) >>> 8) & this.mask);
    const i2 = 2 * width + ((Math.imul(hash, SKETCH_SEEDS[2]!) >>> 8) & this.mask);
    const i3 = 3 * width + ((Math.imul(hash, SKETCH_SEEDS[3]!) >>> 8) & this.mask);
    const min = Math.min(c[i0]!, c[i1]!, c[i2]!, c[i3]!);
    if (min >= COUNTER_MAX) return;
    if (c[i0] === min) c[i0] = min + 1;
    if (c[i1] === min) c[i1] = min + 1;
    if (c[i2] === min) c[i2] = min + 1;
    if (c[i3] === min) c[i3] = min + 1;
    if (++this.additions >= this.sampleSize) this.age();
  }

  private age(): void {
    const c = this.counters;
    for (let i = 0; i < c.length; i++) c[i] = c[i]! >>> 1;
    this.additions = this.additions >>> 1;
  }
}

export interface WTinyLfuOptions<K, V> {
  /** Total weight the policy may hold (bytes for L1, entries in the simulations). */
  maximumWeight: number;
  /** Expected entry count, sizes the frequency sketch (it grows if exceeded). */
  expectedEntries: number;
  /** Called for every entry the policy drops to make room (not for delete()). */
  onEvict?: EvictionListener<K, V>;
}

export class WTinyLfu<K extends PolicyKey, V> {
  readonly maximumWeight: number;
  private readonly map = new Map<K, PolicyNode<K, V>>();
  private readonly sketch: FrequencySketch;
  private readonly onEvict: EvictionListener<K, V> | undefined;
  // Circular lists with a sentinel each; sentinel.next is the LRU end, sentinel.prev the MRU end.
  private readonly heads: PolicyNode<K, V>[];
  private readonly weights = [0, 0, 0];
  private windowMax: number;
  private protectedMax: number;
  // Hill climber state.
  private sampleHits = 0;
  private sampleMisses = 0;
  private previousHitRatio = 0;
  private stepWeight: number;
  private random = 0x2545f491;
  evictionCount = 0;

  constructor(options: WTinyLfuOptions<K, V>) {
    if (!(options.maximumWeight > 0)) throw new RangeError('maximumWeight must be > 0');
    this.maximumWeight = options.maximumWeight;
    this.sketch = new FrequencySketch(options.expectedEntries);
    this.onEvict = options.onEvict;
    const sentinel = () => new PolicyNode<K, V>(undefined as unknown as K, undefined as unknown as V, 0, 0);
    this.heads = [sentinel(), sentinel(), sentinel()];
    this.windowMax = Math.max(1, Math.floor(this.maximumWeight * INITIAL_WINDOW_FRACTION));
    this.protectedMax = Math.floor((this.maximumWeight - this.windowMax) * PROTECTED_FRACTION);
    this.stepWeight = -STEP_FRACTION * this.maximumWeight;
  }

  get size(): number {
    return this.map.size;
  }

  get weightedSize(): number {
    return this.weights[WINDOW]! + this.weights[PROBATION]! + this.weights[PROTECTED]!;
  }

  /** Current window share of the capacity, exposed so the benchmark can report the adaptation. */
  get windowWeightLimit(): number {
    return this.windowMax;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  peek(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  keys(): IterableIterator<K> {
    return this.map.keys();
  }

  /** Looks a key up and records the access (frequency, recency, hill-climber sample). */
  get(key: K): V | undefined {
    const node = this.map.get(key);
    if (node === undefined) {
      this.sketch.increment(hashKey(key));
      this.recordSample(false);
      return undefined;
    }
    this.sketch.increment(node.hash);
    this.onHit(node);
    this.recordSample(true);
    return node.value;
  }

  /**
   * Inserts or replaces. Returns false (and stores nothing) when the weight exceeds the
   * whole capacity; an existing entry under the key is then removed, never left stale.
   * countAccess=false is for a fill right after a get() miss, which already counted it.
   */
  set(key: K, value: V, weight: number, countAccess = true): boolean {
    const existing = this.map.get(key);
    if (weight > this.maximumWeight) {
      if (existing !== undefined) this.removeNode(existing);
      return false;
    }
    if (existing !== undefined) {
      existing.value = value;
      this.weights[existing.queue]! += weight - existing.weight;
      existing.weight = weight;
      if (countAccess) this.sketch.increment(existing.hash);
      this.onHit(existing);
    } else {
      const hash = hashKey(key);
      const node = new PolicyNode(key, value, weight, hash);
      this.map.set(key, node);
      if (countAccess) this.sketch.increment(hash);
      this.append(node, WINDOW);
      if ((this.map.size & 1023) === 0) this.sketch.ensureCapacity(this.map.size);
    }
    this.evict();
    return true;
  }

  delete(key: K): V | undefined {
    const node = this.map.get(key);
    if (node === undefined) return undefined;
    this.removeNode(node);
    return node.value;
  }

  clear(): void {
    this.map.clear();
    for (const head of this.heads) head.next = head.prev = head;
    this.weights[0] = this.weights[1] = this.weights[2] = 0;
  }

  private removeNode(node: PolicyNode<K, V>): void {
    this.map.delete(node.key);
    this.unlink(node);
  }

  private onHit(node: PolicyNode<K, V>): void {
    if (node.queue === PROBATION) {
      this.unlink(node);
      this.append(node, PROTECTED);
      // Protected overflow goes back to probation, where it competes again.
      const head = this.heads[PROTECTED]!;
      while (this.weights[PROTECTED]! > this.protectedMax && head.next !== node) {
        const demoted = head.next;
        this.unlink(demoted);
        this.append(demoted, PROBATION);
      }
    } else {
      this.unlink(node);
      this.append(node, node.queue);
    }
  }

  private append(node: PolicyNode<K, V>, queue: number): void {
    const head = this.heads[queue]!;
    node.queue = queue;
    node.prev = head.prev;
    node.next = head;
    head.prev.next = node;
    head.prev = node;
    this.weights[queue]! += node.weight;
  }

  private unlink(node: PolicyNode<K, V>): void {
    node.prev.next = node.next;
    node.next.prev = node.prev;
    node.next = node.prev = node;
    this.weights[node.queue]! -= node.weight;
  }

  private evictNode(node: PolicyNode<K, V>): void {
    this.removeNode(node);
    this.evictionCount++;
    if (this.onEvict !== undefined) this.onEvict(node.key, node.value, node.weight);
  }

  private evict(): void {
    const windowHead = this.heads[WINDOW]!;
    while (this.weights[WINDOW]! > this.windowMax && windowHead.next !== windowHead) {
      const candidate = windowHead.next;
      this.unlink(candidate);
      this.admit(candidate);
    }
    // Main may exceed its share after the window grew; shrink it from the cold end.
    while (this.weightedSize > this.maximumWeight) {
      const victim = this.coldestMain() ?? windowHead.next;
      if (victim === windowHead) break;
      this.evictNode(victim);
    }
  }

  private coldestMain(): PolicyNode<K, V> | undefined {
    const probation = this.heads[PROBATION]!;
    if (probation.next !== probation) return probation.next;
    const prot = this.heads[PROTECTED]!;
    if (prot.next !== prot) return prot.next;
    return undefined;
  }

  /** A window overflow competes with main's coldest entries on estimated frequency. */
  private admit(candidate: PolicyNode<K, V>): void {
    const mainMax = this.maximumWeight - this.windowMax;
    let candidateFreq = -1;
    while (this.weights[PROBATION]! + this.weights[PROTECTED]! + candidate.weight > mainMax) {
      const victim = this.coldestMain();
      if (victim === undefined) break;
      if (candidateFreq < 0) candidateFreq = this.sketch.frequency(candidate.hash);
      const victimFreq = this.sketch.frequency(victim.hash);
      if (this.admitOver(candidateFreq, victimFreq)) {
        this.evictNode(victim);
      } else {
        // Rejected: the candidate is already unlinked; drop it from the map.
        this.map.delete(candidate.key);
        this.evictionCount++;
        if (this.onEvict !== undefined) this.onEvict(candidate.key, candidate.value, candidate.weight);
        return;
      }
    }
    this.append(candidate, PROBATION);
  }

  private admitOver(candidateFreq: number, victimFreq: number): boolean {
    if (candidateFreq > victimFreq || (TIE_ADMIT && candidateFreq === victimFreq)) return true;
    if (candidateFreq <= WARM_CANDIDATE_FREQUENCY) return false;
    let x = this.random;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.random = x;
    return (x & 127) === 0;
  }

  private recordSample(hit: boolean): void {
    if (hit) this.sampleHits++;
    else this.sampleMisses++;
    const sampleCount = this.sampleHits + this.sampleMisses;
    if (sampleCount < SAMPLE_MULT * Math.max(this.map.size, 64)) return;
    const hitRatio = this.sampleHits / sampleCount;
    const change = hitRatio - this.previousHitRatio;
    const amount = change >= 0 ? this.stepWeight : -this.stepWeight;
    this.stepWeight =
      Math.abs(change) >= RESTART_THRESHOLD
        ? STEP_FRACTION * this.maximumWeight * (amount >= 0 ? 1 : -1)
        : STEP_DECAY * amount;
    this.previousHitRatio = hitRatio;
    this.sampleHits = this.sampleMisses = 0;
    this.resizeWindow(amount);
  }

  private resizeWindow(deltaWeight: number): void {
    const upper = Math.floor(this.maximumWeight * MAX_WINDOW_FRACTION);
    const next = Math.min(upper, Math.max(1, Math.round(this.windowMax + deltaWeight)));
    this.windowMax = next;
    this.protectedMax = Math.floor((this.maximumWeight - next) * PROTECTED_FRACTION);
  }
}
