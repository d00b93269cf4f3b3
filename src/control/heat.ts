// Heat: per-volume read/write IOPS over a sliding window, sampled from the
// dataplane's own counters (nothing is added to the I/O path).
import type { VolumeManager } from '../dataplane/volumes/manager.js';

interface Sample {
  atMs: number;
  readOps: number;
  writeOps: number;
}

/** Bound on samples kept per volume: the window is divided into this many steps at most. */
export const MAX_SAMPLES_PER_VOLUME = 3600;

export class HeatTracker {
  private readonly samples = new Map<string, Sample[]>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly manager: VolumeManager,
    readonly windowMs: number,
    readonly sampleIntervalMs: number,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.sampleIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  sample(nowMs = Date.now()): void {
    const live = new Set<string>();
    for (const v of this.manager.openVolumes()) {
      live.add(v.name);
      let list = this.samples.get(v.name);
      if (!list) this.samples.set(v.name, (list = []));
      list.push({ atMs: nowMs, readOps: v.counters.readOps, writeOps: v.counters.writeOps });
      while (list.length > 2 && (nowMs - list[1]!.atMs > this.windowMs || list.length > MAX_SAMPLES_PER_VOLUME)) list.shift();
    }
    for (const name of this.samples.keys()) if (!live.has(name)) this.samples.delete(name);
  }

  /** Average read and write IOPS over the window (0 until two samples exist). */
  iops(volume: string): { readIops: number; writeIops: number } {
    const list = this.samples.get(volume);
    if (!list || list.length < 2) return { readIops: 0, writeIops: 0 };
    const a = list[0]!;
    const b = list[list.length - 1]!;
    const secs = (b.atMs - a.atMs) / 1000;
    if (secs <= 0) return { readIops: 0, writeIops: 0 };
    return { readIops: (b.readOps - a.readOps) / secs, writeIops: (b.writeOps - a.writeOps) / secs };
  }
}
