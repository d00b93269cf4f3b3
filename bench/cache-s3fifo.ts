// A plain S3-FIFO (Yang et al., SOSP 2023) counted in entries: the peer policy the
// hit-ratio benchmark measures ours against. Small FIFO 10%, main FIFO 90%, ghost FIFO
// of main's size, 2-bit frequency; no tuning beyond the paper.

class Fifo<K> {
  // Grows by doubling; the policy never holds more than its capacity, so it is bounded.
  private items: K[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(k: K): void {
    this.items.push(k);
  }
  shift(): K | undefined {
    if (this.head >= this.items.length) return undefined;
    const k = this.items[this.head++]!;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return k;
  }
}

interface Entry {
  freq: number;
  inMain: boolean;
}

export class S3Fifo<K> {
  private readonly capacity: number;
  private readonly smallCapacity: number;
  private readonly map = new Map<K, Entry>();
  private readonly small = new Fifo<K>();
  private readonly main = new Fifo<K>();
  private readonly ghost = new Fifo<[K, number]>();
  // key -> insertion sequence, so a stale FIFO slot never evicts a newer ghost of the same key.
  private readonly ghostSet = new Map<K, number>();
  private ghostSeq = 0;

  constructor(capacityEntries: number) {
    this.capacity = Math.max(1, capacityEntries);
    this.smallCapacity = Math.max(1, Math.floor(this.capacity * 0.1));
  }

  /** Returns true on a hit; on a miss the key is inserted. */
  access(key: K): boolean {
    const e = this.map.get(key);
    if (e !== undefined) {
      if (e.freq < 3) e.freq++;
      return true;
    }
    while (this.map.size >= this.capacity) this.evict();
    if (this.ghostSet.has(key)) {
      this.ghostSet.delete(key);
      this.map.set(key, { freq: 0, inMain: true });
      this.main.push(key);
    } else {
      this.map.set(key, { freq: 0, inMain: false });
      this.small.push(key);
    }
    return false;
  }

  private evict(): void {
    if (this.small.length >= this.smallCapacity) this.evictSmall();
    else this.evictMain();
  }

  private evictSmall(): void {
    for (;;) {
      const k = this.small.shift();
      if (k === undefined) return;
      const e = this.map.get(k)!;
      if (e.freq > 1) {
        e.inMain = true;
        e.freq = 0;
        this.main.push(k);
        if (this.main.length > this.capacity - this.smallCapacity) this.evictMain();
      } else {
        this.map.delete(k);
        const seq = ++this.ghostSeq;
        this.ghost.push([k, seq]);
        this.ghostSet.set(k, seq);
        // The ghost FIFO holds as many keys as main; stale FIFO slots are skipped.
        while (this.ghostSet.size > this.capacity - this.smallCapacity) {
          const g = this.ghost.shift();
          if (g === undefined) break;
          if (this.ghostSet.get(g[0]) === g[1]) this.ghostSet.delete(g[0]);
        }
        return;
      }
    }
  }

  private evictMain(): void {
    for (;;) {
      const k = this.main.shift();
      if (k === undefined) return;
      const e = this.map.get(k)!;
      if (e.freq > 0) {
        e.freq--;
        this.main.push(k);
      } else {
        this.map.delete(k);
        return;
      }
    }
  }
}
