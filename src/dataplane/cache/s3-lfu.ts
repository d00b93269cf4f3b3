// The L1 replacement policy, "S3-LFU": S3-FIFO (small FIFO, CLOCK main, ghost of small's
// evictees) whose one-hit small-queue evictees duel main's CLOCK victim on TinyLFU frequency.
//
// Chosen by measurement (bench/cache-hit-ratio, 7 traces x 4 sizes) over LRU, plain S3-FIFO
// and Caffeine-style W-TinyLFU (bench/cache-wtinylfu.ts). S3-FIFO's quick demotion wins on
// the web traces; the sketch duel recovers what it loses on loops and mixed workloads. A hit
// only bumps a counter (no list relinking), which also keeps the hit path cheap.
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

class Node<K, V> {
  key: K;
  value: V;
  weight: number;
  hash: number;
  queue = SMALL;
  freq = 0;
  prev: Node<K, V>;
  next: Node<K, V>;
  constructor(key: K, value: V, weight: number, hash: number) {
    this.key = key;
    this.value = value;
    this.weight = weight;
    this.hash = hash;
    this.prev = this;
    this.next = this;
  }
}

export interface S3LfuOptions<K, V> {
  maximumWeight: number;
  expectedEntries: number;
  onEvict?: EvictionListener<K, V>;
}

export class S3Lfu<K extends PolicyKey, V> {
  readonly maximumWeight: number;
  private readonly smallMax: number;
  private readonly map = new Map<K, Node<K, V>>();
  private readonly sketch: FrequencySketch;
  private readonly ghost: GhostList;
  private readonly onEvict: EvictionListener<K, V> | undefined;
  private readonly smallHead: Node<K, V>;
  private readonly mainHead: Node<K, V>;
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
    this.smallHead = new Node<K, V>(undefined as unknown as K, undefined as unknown as V, 0, 0);
    this.mainHead = new Node<K, V>(undefined as unknown as K, undefined as unknown as V, 0, 0);
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
    return this.map.get(key)?.value;
  }
  keys(): IterableIterator<K> {
    return this.map.keys();
  }

  get(key: K): V | undefined {
    const node = this.map.get(key);
    if (node === undefined) {
      const hash = hashKey(key);
      this.lastMissKey = key;
      this.lastMissHash = hash;
      this.sketch.increment(hash);
      return undefined;
    }
    // The sketch only needs what the duel compares: misses, and the first hit of an entry
    // still in small (which decides its promotion). Hits in main are CLOCK's business; keeping
    // them out of the sketch spares the hit path a cache miss in a table of C x 16 bytes.
    if (node.freq === 0 && node.queue === SMALL) this.sketch.increment(node.hash);
    if (node.freq < FREQ_MAX) node.freq++;
    return node.value;
  }

  set(key: K, value: V, weight: number, countAccess = true): boolean {
    const existing = this.map.get(key);
    if (weight > this.maximumWeight) {
      if (existing !== undefined) this.removeNode(existing);
      return false;
    }
    if (existing !== undefined) {
      existing.value = value;
      if (existing.queue === SMALL) this.smallWeight += weight - existing.weight;
      else this.mainWeight += weight - existing.weight;
      existing.weight = weight;
      if (countAccess) {
        // Same rule as get(): only a first access in small reaches the sketch.
        if (existing.freq === 0 && existing.queue === SMALL) this.sketch.increment(existing.hash);
        if (existing.freq < FREQ_MAX) existing.freq++;
      }
    } else {
      const hash = key === this.lastMissKey ? this.lastMissHash : hashKey(key);
      const node = new Node(key, value, weight, hash);
      this.map.set(key, node);
      if (countAccess) this.sketch.increment(hash);
      if (this.ghost.take(hash)) this.append(node, MAIN);
      else this.append(node, SMALL);
      if ((this.map.size & 1023) === 0) {
        this.sketch.ensureCapacity(this.map.size);
        this.ghost.ensureCapacity(this.map.size);
      }
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
    this.smallHead.next = this.smallHead.prev = this.smallHead;
    this.mainHead.next = this.mainHead.prev = this.mainHead;
    this.smallWeight = this.mainWeight = 0;
  }

  private append(node: Node<K, V>, queue: number): void {
    const head = queue === SMALL ? this.smallHead : this.mainHead;
    node.queue = queue;
    node.prev = head.prev;
    node.next = head;
    head.prev.next = node;
    head.prev = node;
    if (queue === SMALL) this.smallWeight += node.weight;
    else this.mainWeight += node.weight;
  }

  private unlink(node: Node<K, V>): void {
    node.prev.next = node.next;
    node.next.prev = node.prev;
    node.next = node.prev = node;
    if (node.queue === SMALL) this.smallWeight -= node.weight;
    else this.mainWeight -= node.weight;
  }

  private removeNode(node: Node<K, V>): void {
    this.map.delete(node.key);
    this.unlink(node);
  }

  private drop(node: Node<K, V>): void {
    this.removeNode(node);
    this.evictionCount++;
    if (this.onEvict !== undefined) this.onEvict(node.key, node.value, node.weight);
  }

  private evict(): void {
    while (this.smallWeight + this.mainWeight > this.maximumWeight) {
      if (this.smallWeight > this.smallMax || this.mainHead.next === this.mainHead) this.evictSmall();
      else this.evictMain();
    }
  }

  /** CLOCK over main: entries with a frequency get it decremented and another lap. */
  private mainVictim(): Node<K, V> | undefined {
    const head = this.mainHead;
    for (;;) {
      const n = head.next;
      if (n === head) return undefined;
      if (n.freq === 0) return n;
      n.freq--;
      this.unlink(n);
      this.append(n, MAIN);
    }
  }

  private evictMain(): void {
    const v = this.mainVictim();
    if (v !== undefined) this.drop(v);
  }

  private evictSmall(): void {
    const head = this.smallHead;
    const t = head.next;
    if (t === head) {
      this.evictMain();
      return;
    }
    this.unlink(t);
    if (t.freq >= PROMOTE_HITS) {
      t.freq = 0;
      this.append(t, MAIN);
      return;
    }
    // One-hit wonder by S3-FIFO's rule; the sketch may still know it as popular.
    if (this.mainWeight + t.weight > this.maximumWeight - this.smallMax) {
      const victim = this.mainVictim();
      if (victim !== undefined && this.sketch.frequency(t.hash) > this.sketch.frequency(victim.hash) + DUEL_MARGIN) {
        this.drop(victim);
        this.append(t, MAIN);
        return;
      }
    }
    this.map.delete(t.key);
    this.ghost.add(t.hash);
    this.evictionCount++;
    if (this.onEvict !== undefined) this.onEvict(t.key, t.value, t.weight);
  }
}
