// W-TinyLFU as Caffeine does it (window LRU 1%, segmented-LRU main, TinyLFU admission,
// hill-climbing window): a candidate L1 policy measured in bench/cache-hit-ratio, where it
// lost to S3-LFU (src/dataplane/cache/s3-lfu.ts) on most traces; kept to show the comparison.

import {
  FrequencySketch,
  hashKey,
  type EvictionListener,
  type PolicyKey,
} from '../src/dataplane/cache/frequency-sketch.js';

const WINDOW = 0;
const PROBATION = 1;
const PROTECTED = 2;

// Caffeine's published tuning: 1% initial window, 80% of main protected, 6.25% hill
// climbing step decaying by 2% a sample, restarted when the hit ratio moves by 5%.
const INITIAL_WINDOW_FRACTION = 0.01;
const PROTECTED_FRACTION = 0.8;
const STEP_FRACTION = 0.0625;
const STEP_DECAY = 0.98;
const RESTART_THRESHOLD = 0.05;
const MAX_WINDOW_FRACTION = 0.8;
const SAMPLE_MULT = 10;
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
  private sampleCountdown = 640;
  private lastMissKey: K | undefined = undefined;
  private lastMissHash = 0;
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
      // A fill of this key usually follows a miss: keep its hash for set().
      const hash = hashKey(key);
      this.lastMissKey = key;
      this.lastMissHash = hash;
      this.sketch.increment(hash);
      this.sampleMisses++;
      if (--this.sampleCountdown <= 0) this.climb();
      return undefined;
    }
    this.sketch.increment(node.hash);
    this.onHit(node);
    this.sampleHits++;
    if (--this.sampleCountdown <= 0) this.climb();
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
      const hash = key === this.lastMissKey ? this.lastMissHash : hashKey(key);
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
      // Same queue: relink at the MRU end, weights unchanged.
      const head = this.heads[node.queue]!;
      if (head.prev === node) return;
      node.prev.next = node.next;
      node.next.prev = node.prev;
      node.prev = head.prev;
      node.next = head;
      head.prev.next = node;
      head.prev = node;
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
    if (candidateFreq > victimFreq) return true;
    if (candidateFreq <= WARM_CANDIDATE_FREQUENCY) return false;
    let x = this.random;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.random = x;
    return (x & 127) === 0;
  }

  /** Hill climbing: every 10 x entries accesses, move the window the way that raised the hit ratio. */
  private climb(): void {
    const sampleCount = this.sampleHits + this.sampleMisses;
    this.sampleCountdown = SAMPLE_MULT * Math.max(this.map.size, 64);
    if (sampleCount < this.sampleCountdown) return;
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
