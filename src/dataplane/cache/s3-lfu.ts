// The L1 replacement policy, "S3-LFU": S3-FIFO (small FIFO, CLOCK main, ghost of small's
// evictees) whose one-hit small-queue evictees duel main's CLOCK victim on TinyLFU frequency.
//
// Chosen by measurement (bench/cache-hit-ratio, 7 traces x 4 sizes) over LRU, plain S3-FIFO
// and Caffeine-style W-TinyLFU (bench/cache-wtinylfu.ts). S3-FIFO's quick demotion wins on
// the web traces; the sketch duel recovers what it loses on loops and mixed workloads. A hit
// only bumps a counter (no list relinking), which also keeps the hit path cheap.
//
// Entries live in parallel arrays indexed by slot (as lru-cache does), not in node objects:
// a hit is Map.get -> slot -> counter and value, one pointer chase fewer, and an insert
// allocates nothing once the arrays have grown to the working set.
import { FrequencySketch, GhostList, hashKey, type EvictionListener, type PolicyKey } from './frequency-sketch.js';

const SMALL = 0;
const MAIN = 1;
// Tuned on the traces: small queue 10% (S3-FIFO's), CLOCK counters up to 7 (S3-FIFO: 3),
// promotion to main after 1 hit in small (S3-FIFO: 2), and a one-hit evictee displaces
// main's victim only when the sketch rates it more than 2 accesses hotter.
const SMALL_FRACTION = 0.1;
const FREQ_MAX = 7;
const PROMOTE_HITS = 1;
const DUEL_MARGIN = 2;

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

export class S3Lfu<K extends PolicyKey, V> {
  readonly maximumWeight: number;
  private readonly smallMax: number;
  private readonly map = new Map<K, number>();
  private readonly sketch: FrequencySketch;
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
  evictionCount = 0;

  constructor(options: S3LfuOptions<K, V>) {
    if (!(options.maximumWeight > 0)) throw new RangeError('maximumWeight must be > 0');
    this.maximumWeight = options.maximumWeight;
    this.smallMax = Math.max(1, Math.floor(options.maximumWeight * SMALL_FRACTION));
    this.sketch = new FrequencySketch(options.expectedEntries);
    this.ghost = new GhostList(Math.max(64, Math.min(options.expectedEntries, 1 << 20)));
    this.onEvict = options.onEvict;
    const slots = Math.max(64, Math.min(options.expectedEntries + FIRST_SLOT, 1 << 20));
    this.weights = new Float64Array(slots);
    this.hashes = new Uint32Array(slots);
    this.freqs = new Uint8Array(slots);
    this.queues = new Uint8Array(slots);
    this.nexts = new Uint32Array(slots);
    this.prevs = new Uint32Array(slots);
    this.resetLists();
  }

  get size(): number {
    return this.map.size;
  }
  get weightedSize(): number {
    return this.smallWeight + this.mainWeight;
  }
  has(key: K): boolean {
    return this.map.has(key);
  }
  peek(key: K): V | undefined {
    const i = this.map.get(key);
    return i === undefined ? undefined : this.valList[i];
  }
  keys(): IterableIterator<K> {
    return this.map.keys();
  }

  get(key: K): V | undefined {
    const i = this.map.get(key);
    if (i === undefined) {
      const hash = hashKey(key);
      this.lastMissKey = key;
      this.lastMissHash = hash;
      this.sketch.increment(hash);
      return undefined;
    }
    const f = this.freqs[i]!;
    // The sketch only needs what the duel compares: misses, and the first hit of an entry
    // still in small (which decides its promotion). Hits in main are CLOCK's business; keeping
    // them out of the sketch spares the hit path a cache miss in a table of C x 16 bytes.
    if (f === 0 && this.queues[i] === SMALL) this.sketch.increment(this.hashes[i]!);
    if (f < FREQ_MAX) this.freqs[i] = f + 1;
    return this.valList[i];
  }

  set(key: K, value: V, weight: number, countAccess = true): boolean {
    const existing = this.map.get(key);
    if (weight > this.maximumWeight) {
      if (existing !== undefined) {
        this.unlink(existing);
        this.release(existing);
      }
      return false;
    }
    if (existing !== undefined) {
      this.valList[existing] = value;
      const delta = weight - this.weights[existing]!;
      if (this.queues[existing] === SMALL) this.smallWeight += delta;
      else this.mainWeight += delta;
      this.weights[existing] = weight;
      if (countAccess) {
        // Same rule as get(): only a first access in small reaches the sketch.
        const f = this.freqs[existing]!;
        if (f === 0 && this.queues[existing] === SMALL) this.sketch.increment(this.hashes[existing]!);
        if (f < FREQ_MAX) this.freqs[existing] = f + 1;
      }
    } else {
      const hash = key === this.lastMissKey ? this.lastMissHash : hashKey(key);
      const i = this.allocate();
      this.keyList[i] = key;
      this.valList[i] = value;
      this.weights[i] = weight;
      this.hashes[i] = hash;
      this.freqs[i] = 0;
      this.map.set(key, i);
      if (countAccess) this.sketch.increment(hash);
      this.append(i, this.ghost.take(hash) ? MAIN : SMALL);
      if ((this.map.size & 1023) === 0) {
        this.sketch.ensureCapacity(this.map.size);
        this.ghost.ensureCapacity(this.map.size);
      }
    }
    this.evict();
    return true;
  }

  delete(key: K): V | undefined {
    const i = this.map.get(key);
    if (i === undefined) return undefined;
    const value = this.valList[i];
    this.unlink(i);
    this.release(i);
    return value;
  }

  clear(): void {
    this.map.clear();
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
    const weights = new Float64Array(slots);
    weights.set(this.weights);
    this.weights = weights;
    const hashes = new Uint32Array(slots);
    hashes.set(this.hashes);
    this.hashes = hashes;
    const freqs = new Uint8Array(slots);
    freqs.set(this.freqs);
    this.freqs = freqs;
    const queues = new Uint8Array(slots);
    queues.set(this.queues);
    this.queues = queues;
    const nexts = new Uint32Array(slots);
    nexts.set(this.nexts);
    this.nexts = nexts;
    const prevs = new Uint32Array(slots);
    prevs.set(this.prevs);
    this.prevs = prevs;
  }

  /** Frees an unlinked slot and forgets its key. */
  private release(i: number): void {
    this.map.delete(this.keyList[i]!);
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
      if (this.smallWeight > this.smallMax || this.nexts[MAIN_HEAD] === MAIN_HEAD) this.evictSmall();
      else this.evictMain();
    }
  }

  /** CLOCK over main: entries with a frequency get it decremented and another lap. Linked, or -1. */
  private mainVictim(): number {
    for (;;) {
      const n = this.nexts[MAIN_HEAD]!;
      if (n === MAIN_HEAD) return -1;
      const f = this.freqs[n]!;
      if (f === 0) return n;
      this.freqs[n] = f - 1;
      this.unlink(n);
      this.append(n, MAIN);
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
    if (this.freqs[t]! >= PROMOTE_HITS) {
      this.freqs[t] = 0;
      this.append(t, MAIN);
      return;
    }
    // One-hit wonder by S3-FIFO's rule; the sketch may still know it as popular.
    if (this.mainWeight + this.weights[t]! > this.maximumWeight - this.smallMax) {
      const victim = this.mainVictim();
      if (victim >= 0 && this.sketch.frequency(this.hashes[t]!) > this.sketch.frequency(this.hashes[victim]!) + DUEL_MARGIN) {
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
