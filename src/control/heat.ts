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
 * Bound on samples kept per volume. Past it the list is thinned (thin()) so
 * that samples are spaced in proportion to their age: a reading over any
 * window starts within a small fraction of the window before its start, for
 * a 1 min and a 7 d window alike, and the oldest sample (the retention's
 * start) is kept.
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
   * samples cover the window, so a volume is not judged cold just because
   * the daemon has only been up for a minute (samples are kept in memory: a
   * restart starts every window again).
   */
  read(volume: string, windowMs: number, nowMs = Date.now()): HeatReading {
    const list = this.samples.get(volume);
    if (!list || list.length < 2) return { iops: null, why: 'no samples yet' };
    const from = nowMs - windowMs;
    const b = list[list.length - 1]!;
    // The samples reach back to the window's start (within one sample interval;
    // thinning keeps the oldest sample, so the count never cuts the window short).
    if (list[0]!.atMs > from + this.sampleIntervalMs) {
      return { iops: null, why: `heat measured over ${Math.round((b.atMs - list[0]!.atMs) / 1000)}s of a ${Math.round(windowMs / 1000)}s window` };
    }
    // From the first sample inside the window when it is close to the window's
    // start (within one sample interval, or 1/256 of the window: thinned samples
    // are spaced in proportion to their age, thin()); otherwise from the last
    // one at or before the start. Not from a far earlier one, which would count
    // the ops of that span too, and not from a far later one: with samples
    // sparser than the window (a long sample interval, or one sample taken just
    // before the window and the next ones now) the first sample inside is at
    // the window's end, and a reading from it covers almost nothing.
    let i = 0;
    while (i < list.length - 2 && list[i + 1]!.atMs <= from) i++;
    if (list[i]!.atMs < from && i + 1 < list.length - 1 && list[i + 1]!.atMs - from <= Math.max(this.sampleIntervalMs, windowMs / 256)) i++;
    const a = list[i]!;
    const coveredMs = b.atMs - a.atMs;
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
      if (list.length > MAX_SAMPLES_PER_VOLUME) this.samples.set(rec.name, thin(list, nowMs));
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
 * Thins `list` to at most 3/4 of MAX_SAMPLES_PER_VOLUME samples, spaced by
 * age: walking from the newest, a sample is dropped only when the next older
 * one is within `relGap` x (its age) of the last kept one, so kept neighbours
 * at age A are at most relGap x A apart (or as far as they already were).
 * A window of length W then starts at most about relGap x W early: its
 * reading (a rate between two kept samples, exact since counters only grow)
 * is diluted by that fraction at most. The newest and oldest samples stay;
 * samples younger than sampleInterval / relGap all stay. relGap starts at
 * 1/1024 and doubles until the result fits (1/256 for 7 d of 1 s samples).
 *
 * (Halving the older half at each thinning, as 5c57729 did, decayed the old
 * end geometrically: after a day of 1 s samples one sample was left hours
 * before the next, and a 6 h window read from it, about a day back.)
 */
function thin(list: Sample[], nowMs: number): Sample[] {
  const target = Math.floor((MAX_SAMPLES_PER_VOLUME * 3) / 4);
  for (let relGap = 1 / 1024; ; relGap *= 2) {
    let kept = list[list.length - 1]!;
    const out: Sample[] = [kept];
    for (let i = list.length - 2; i > 0; i--) {
      if (kept.atMs - list[i - 1]!.atMs <= relGap * (nowMs - kept.atMs)) continue;
      kept = list[i]!;
      out.push(kept);
    }
    out.push(list[0]!);
    if (out.length <= target || relGap >= 1) return out.reverse();
  }
}
