// Heat: per-volume read/write IOPS over a sliding window, sampled from the
// dataplane's own counters (nothing is added to the I/O path).
import type { VolumeManager } from '../dataplane/volumes/manager.js';
import type { HeatReading, HeatSource } from './loop.js';

interface Sample {
  atMs: number;
  readOps: number;
  writeOps: number;
}

/**
 * Bound on samples kept per volume: the window is divided into about this
 * many steps at most. Past it the older samples are thinned (every other one
 * dropped), never the oldest: a reading always covers the whole window asked
 * for, more coarsely, not the last MAX samples of it (with 1 s samples that
 * read a 24 h samplingWindow over the last hour).
 */
export const MAX_SAMPLES_PER_VOLUME = 3600;

export class HeatTracker implements HeatSource {
  private readonly samples = new Map<string, Sample[]>();
  private timer: NodeJS.Timeout | null = null;

  /** Longest window kept; older samples are dropped. Grows to the longest window a pass asks for. */
  retainMs: number;

  constructor(
    private readonly manager: VolumeManager,
    retainMs: number,
    readonly sampleIntervalMs: number,
  ) {
    this.retainMs = retainMs;
  }

  async refresh(windowMs?: number, _volumes?: string[], nowMs = Date.now()): Promise<void> {
    // A policy's samplingWindow longer than what is kept would never be
    // covered: keep that much from now on (the reading is unknown until then).
    if (windowMs !== undefined && windowMs > this.retainMs) this.retainMs = windowMs;
    this.sample(nowMs);
  }

  /**
   * Time-weighted average IOPS over the window. Unknown (null) until the
   * samples cover the window (or everything retained), so a volume is not
   * judged cold just because the daemon has only been up for a minute.
   */
  read(volume: string, windowMs: number, nowMs = Date.now()): HeatReading {
    const list = this.samples.get(volume);
    if (!list || list.length < 2) return { iops: null, why: 'no samples yet' };
    const from = nowMs - windowMs;
    let i = 0;
    while (i < list.length - 2 && list[i + 1]!.atMs <= from) i++;
    const a = list[i]!;
    const b = list[list.length - 1]!;
    const coveredMs = b.atMs - a.atMs;
    // The samples reach back to the window's start (within one sample interval;
    // thinned samples keep the oldest, so the count never cuts the window short).
    const full = a.atMs <= from + this.sampleIntervalMs;
    if (!full) return { iops: null, why: `heat measured over ${Math.round(coveredMs / 1000)}s of a ${Math.round(windowMs / 1000)}s window` };
    if (coveredMs <= 0) return { iops: null, why: 'no samples yet' };
    return { iops: (b.readOps - a.readOps + b.writeOps - a.writeOps) / (coveredMs / 1000) };
  }

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
    const open = new Map(this.manager.openVolumes().map((v) => [v.name, v.counters]));
    // Every volume, not only the open ones: a volume no client has opened
    // since the daemon started has served 0 ops (its counters start at 0 when
    // it opens), and must not stay "no data" forever, or an idle volume is
    // never moved to cold after a restart.
    for (const rec of this.manager.listVolumes()) {
      const c = open.get(rec.name) ?? { readOps: 0, writeOps: 0 };
      live.add(rec.name);
      let list = this.samples.get(rec.name);
      // Counters going backwards: a new volume under a deleted one's name.
      const last = list?.[list.length - 1];
      if (!list || (last && (c.readOps < last.readOps || c.writeOps < last.writeOps))) this.samples.set(rec.name, (list = []));
      list.push({ atMs: nowMs, readOps: c.readOps, writeOps: c.writeOps });
      while (list.length > 2 && nowMs - list[1]!.atMs > this.retainMs) list.shift();
      if (list.length > MAX_SAMPLES_PER_VOLUME) this.samples.set(rec.name, thin(list));
    }
    for (const name of this.samples.keys()) if (!live.has(name)) this.samples.delete(name);
  }

  /** Read and write IOPS over the last minute, for metrics (0 until two samples exist). */
  iops(volume: string, windowMs = 60_000): { readIops: number; writeIops: number } {
    const list = this.samples.get(volume);
    if (!list || list.length < 2) return { readIops: 0, writeIops: 0 };
    const from = Date.now() - windowMs;
    let i = 0;
    while (i < list.length - 2 && list[i + 1]!.atMs <= from) i++;
    const a = list[i]!;
    const b = list[list.length - 1]!;
    const secs = (b.atMs - a.atMs) / 1000;
    if (secs <= 0) return { readIops: 0, writeIops: 0 };
    return { readIops: (b.readOps - a.readOps) / secs, writeIops: (b.writeOps - a.writeOps) / secs };
  }
}

/**
 * Halves the older half of `list` (every other sample dropped), keeping the
 * first (the window's start) and the newer half whole: short windows keep
 * their resolution, long ones lose it gradually. Counters only grow, so a
 * rate between any two kept samples stays exact.
 */
function thin(list: Sample[]): Sample[] {
  const half = Math.floor(list.length / 2);
  const out: Sample[] = [];
  for (let i = 0; i < half; i += 2) out.push(list[i]!);
  for (let i = half; i < list.length; i++) out.push(list[i]!);
  return out;
}
