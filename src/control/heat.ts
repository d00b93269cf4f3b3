// Heat: per-volume read/write IOPS over a sliding window, sampled from the
// dataplane's own counters (nothing is added to the I/O path). A tick reads
// only the volumes whose counters can have moved, and a sample is taken only
// when they did: an idle volume costs nothing a tick (tick(), view()). The samples
// are also kept in the index, coarser (heat.ts persist()), so a restart reads
// the window from before it instead of starting every window again.
import type { Database, Key, RangeOptions } from 'lmdb';
import type { VolumeManager } from '../dataplane/volumes/manager.js';
import type { VolumeCounters } from '../dataplane/volumes/volume.js';
import { log } from '../log.js';
import type { HeatReading, HeatSource } from './loop.js';
import { SampleSeries, thinIndices, type Sample, type SampleList, type SampleStore } from './heat-samples.js';

/**
 * Bound on samples kept per volume. Past it the list is thinned (thin()) so
 * that samples are spaced in proportion to their age: a reading over any
 * window starts within a small fraction of the window before its start, for
 * a 1 min and a 7 d window alike, and the oldest sample (the retention's
 * start) is kept. 512 (thinned to 384): the last ~64 s stay 1 s apart (the
 * metrics' 1 min IOPS exact), a reading starts at most ~1/64 of a 1 h window
 * early, ~1/32 of a 24 h one (3600 before: 1 h unthinned). A sample is 12
 * bytes (heat-samples.ts; 24 past its compact range), so ~6 KiB a busy
 * volume with the array's slack, ~0.6 GiB for 100,000 busy volumes (as
 * objects, ~74 bytes a sample: ~3.7 GiB); an idle volume holds 1 or 2 (visit()).
 */
export const MAX_SAMPLES_PER_VOLUME = 512;

/**
 * Bound on samples kept in the index per volume (HEAT_SAMPLES_DB), thinned
 * by age past it like the memory's (to 3/4 of it): at most 128 entries of
 * 44-54 bytes each in the index's pages (key [volumeId, atMs], value
 * [readOps, writeOps], LMDB's node header and page fill: bench/heat-refresh),
 * so <= ~7 KiB a volume and <= ~660 MiB for 100,000 volumes busy over their
 * whole window; an idle volume holds 1 or 2 (~10 MiB for 100,000).
 */
export const MAX_PERSISTED_SAMPLES_PER_VOLUME = 128;

/**
 * How often the sampler's tick walks every volume in the index (sample())
 * at least. A tick that sees another count of volumes than the last walk
 * (one made or deleted: LMDB's entry count, ~10 us) walks at once, so a new
 * volume's window starts and a deleted one's samples go as before; this
 * bound is for a make and a delete within one tick (the count unchanged).
 * The ticks between read only the volumes whose counters can have moved
 * (open ones, and closed ones whose counters at their close are not the
 * ones last read): an idle volume costs nothing there. A walk of 10,000
 * volumes holds the event loop ~20-50 ms (their records decoded). A
 * control-loop pass (refresh) and stop() walk every volume too.
 */
export const FULL_SAMPLE_INTERVAL_MS = 300_000;

/** Samples are written to the index at every pass (refresh) and at least this often by the sampler (a Prometheus heat source, long pass intervals), and at stop. */
export const PERSIST_INTERVAL_MS = 30_000;

/**
 * How far ahead of the clock a kept sample may be (the clock set back: NTP
 * stepping it at a boot, a VM restored) and still have the samples before it
 * read: the ops after the last sample at or before now are then counted from
 * it to now (at most this much too early in the window). Further ahead, the
 * volume's kept samples are dropped and its window starts again (no-data
 * until covered, no move): read with the clock's new times, the ops of the
 * whole step would land in the time after the last sample before the step,
 * a cold volume read up to twice as busy over a window as long as the step.
 */
export const CLOCK_BACK_TOLERANCE_MS = PERSIST_INTERVAL_MS;

/**
 * Bound on the kept samples of gone volumes (deleted, also while the daemon
 * was down) one write removes; the rest go at the next writes. The write runs
 * on the event loop inside the index's write transaction: removing 10,000
 * deleted busy volumes' 1.28 M samples at once held NBD and S3 for 2.6 s
 * (~2 us an entry); 16,384 are ~30 ms, and the ids are never reused, so
 * what is left meanwhile is never read.
 */
export const GONE_REMOVALS_PER_WRITE = 16_384;

/** [volumeId, atMs] -> [readOps, writeOps]: the persisted samples (keyed by id: a new volume under a deleted one's name starts cold). */
export const HEAT_SAMPLES_DB = 'control-heat-samples';
/** 'retainMs' -> the longest window a pass asked for, so a restart does not cut a 7 d window's samples to the default hour. */
export const HEAT_STATE_DB = 'control-heat-state';

/** What the tracker knows of one volume besides its samples. */
interface Tracked {
  volumeId: number;
  /**
   * The volume's counters as last read (this process's ops: 0 at a start).
   * They only grow while the process runs, also across a close and reopen
   * (the manager keeps a closed volume's counters, closedVolumeCounters, and
   * hands them to its next open); a drop is read as counters that started
   * again from 0.
   */
  rawReadOps: number;
  rawWriteOps: number;
  /** Cumulative ops (Sample's), continued from the index after a restart. */
  readOps: number;
  writeOps: number;
  /** The newest sample in the index, and how many the index holds for this volume. */
  persisted: Sample | null;
  persistedCount: number;
}

export class HeatTracker implements HeatSource {
  /** Volume name -> its samples (time order, cumulative ops: Sample), packed (heat-samples.ts). */
  private readonly samples = new Map<string, SampleStore>();
  private readonly tracked = new Map<string, Tracked>();
  /** Volume id -> name of each tracked volume (the closed volumes' counters are by id). */
  private readonly names = new Map<number, string>();
  /**
   * The time of the last sample (a tick or sample()): every tracked volume's
   * counters were read then, and a volume whose last sample is older served
   * no I/O since it (an idle run): its samples stop at its last change, and
   * the readings take one more at this time with the same counts (view()).
   * So an idle volume holds 1 or 2 samples, not one a second.
   */
  private lastTickMs: number | null = null;
  private lastFullMs = -Infinity;
  /** Volumes in the index at the last walk: another count at a tick (one made or deleted) walks again. */
  private walkedVolumes = -1;
  /** Ids whose samples the index still holds though the volume is gone (deleted, or its name taken by a new volume). */
  private readonly gone = new Set<number>();
  /** Volume id -> the time from which its kept samples go (ahead of a clock set back, CLOCK_BACK_TOLERANCE_MS; 0: all). */
  private readonly dropFrom = new Map<number, number>();
  /** Volumes whose samples a clock set back dropped in this sample (logged once at its end). */
  private setBack = { volumes: 0, aheadMs: 0 };
  /** Keys of entries that are not samples of this build (another layout, a damaged value): removed at the next write. */
  private unreadable: Key[] = [];
  private readonly samplesDb: Database<[number, number], [number, number]>;
  private readonly stateDb: Database<number, string>;
  private storedRetainMs: number | undefined;
  private lastPersistMs = -Infinity;
  private persisting: Promise<void> | null = null;
  /** Whether the first sample read the kept samples (loadKept). */
  private loaded = false;
  private timer: NodeJS.Timeout | null = null;

  /** Longest window kept; older samples are dropped. Grows to the longest window a pass asks for (and is kept in the index). */
  retainMs: number;

  constructor(
    private readonly manager: VolumeManager,
    retainMs: number,
    readonly sampleIntervalMs: number,
  ) {
    this.samplesDb = manager.meta.openDB<[number, number], [number, number]>(HEAT_SAMPLES_DB);
    this.stateDb = manager.meta.openDB<number, string>(HEAT_STATE_DB);
    this.storedRetainMs = keptRetainMs(this.stateDb);
    this.retainMs = Math.max(retainMs, this.storedRetainMs ?? 0);
  }

  /**
   * Every kept sample, by volume id, read in one pass over the index at the
   * first sample (one cursor: a cursor per volume cost ~70 us each, 0.7 s for
   * 10,000 volumes); ids of no volume (deleted while the daemon was down) go.
   */
  private loadKept(): Map<number, Sample[]> {
    const ids = new Set(this.manager.listVolumes().map((v) => v.id));
    return this.readKept(undefined, ids);
  }

  /**
   * The kept samples in `range` (all: undefined), by volume id, in time order.
   * An entry that is not a sample of this build (another build's layout, a
   * value that does not decode) is left out, logged and removed at the next
   * write; none of them stops a start. A volume whose counters fall from one
   * sample to the next (a damaged value: which one is not known) keeps none
   * (its window starts again): read, they would give it negative IOPS
   * ("cold") or a damaged count's ("hot"), and a wrong move is a whole copy.
   */
  private readKept(range?: RangeOptions, live?: Set<number>): Map<number, Sample[]> {
    const kept = new Map<number, Sample[]>();
    const unreadable: Key[] = [];
    const falling = new Set<number>();
    const add = (key: Key, value: unknown): void => {
      const s = asSample(key, value);
      if (s === null) return void unreadable.push(key);
      if (live !== undefined && !live.has(s.volumeId)) return void this.gone.add(s.volumeId);
      let list = kept.get(s.volumeId);
      if (list === undefined) kept.set(s.volumeId, (list = []));
      const prev = list[list.length - 1];
      if (prev !== undefined && (s.readOps < prev.readOps || s.writeOps < prev.writeOps)) falling.add(s.volumeId);
      list.push({ atMs: s.atMs, readOps: s.readOps, writeOps: s.writeOps });
    };
    try {
      for (const { key, value } of this.samplesDb.getRange(range)) add(key, value);
    } catch {
      // A value that does not decode ends the cursor: read entry by entry.
      kept.clear();
      unreadable.length = 0;
      try {
        for (const key of this.samplesDb.getKeys(range)) {
          let value: unknown;
          try {
            value = this.samplesDb.get(key as [number, number]);
          } catch {
            unreadable.push(key);
            continue;
          }
          add(key, value);
        }
      } catch (err) {
        log.warn('heat samples in the index unreadable; every window starts again', { err: (err as Error).message });
        return new Map();
      }
    }
    if (unreadable.length > 0) {
      log.warn('heat samples in the index not of this build dropped (another layout or damaged)', { entries: unreadable.length, first: JSON.stringify(unreadable[0]) });
      this.unreadable.push(...unreadable);
    }
    if (falling.size > 0) {
      log.warn('heat samples in the index with falling counters (damaged) dropped: those volumes\' windows start again', { volumes: falling.size, first: [...falling][0] });
      for (const id of falling) {
        kept.delete(id);
        this.dropFrom.set(id, 0);
      }
    }
    return kept;
  }

  async refresh(windowMs?: number, _volumes?: string[], nowMs = Date.now()): Promise<void> {
    // A policy's samplingWindow longer than what is kept would never be
    // covered: keep that much from now on (the reading is unknown until then).
    if (windowMs !== undefined && windowMs > this.retainMs) this.retainMs = windowMs;
    this.sample(nowMs);
    // Once per pass: the other policies' refreshes of the same pass add nothing.
    if (this.persistDue(nowMs, this.sampleIntervalMs)) await this.persist(nowMs);
  }

  /**
   * Time-weighted average IOPS over the window. Unknown (null) until the
   * samples cover the window, so a volume is not judged cold just because
   * the daemon has only been up for a minute. After a restart the samples
   * from the index cover the time before it; the time the daemon was down
   * reads as no I/O (none was served here).
   */
  read(volume: string, windowMs: number, nowMs = Date.now()): HeatReading {
    const list = this.view(volume);
    if (!list || list.length < 2) return { iops: null, why: 'no samples yet' };
    const from = nowMs - windowMs;
    const b = list.length - 1;
    const bOps = list.readOps(b) + list.writeOps(b);
    // The samples reach back to the window's start (within one sample interval;
    // thinning keeps the oldest sample, so the count never cuts the window short).
    if (list.atMs(0) > from + this.sampleIntervalMs) {
      return { iops: null, why: `heat measured over ${Math.round((list.atMs(b) - list.atMs(0)) / 1000)}s of a ${Math.round(windowMs / 1000)}s window` };
    }
    // From the first sample inside the window when it is close to the window's
    // start (within one sample interval, or 1/256 of the window: thinned samples
    // are spaced in proportion to their age, thin()); otherwise from the last
    // one at or before the start. Not from a far earlier one, which would count
    // the ops of that span too, and not from a far later one: with samples
    // sparser than the window (a long sample interval, or one sample taken just
    // before the window and the next ones now) the first sample inside is at
    // the window's end, and a reading from it covers almost nothing.
    // Not when the two are the ends of an idle run (equal counts: an idle volume's samples stop
    // at its last change, view()): between them the interpolation below is exact, and starts
    // at the window's start as the samples a second of that run did.
    let i = lastAtOrBefore(list, from);
    const moved = (x: number, y: number): boolean => list.readOps(x) !== list.readOps(y) || list.writeOps(x) !== list.writeOps(y);
    if (list.atMs(i) < from && i + 1 < list.length - 1 && list.atMs(i + 1) - from <= Math.max(this.sampleIntervalMs, windowMs / 256) && moved(i, i + 1)) i++;
    const aMs = list.atMs(i);
    // `a` before the window's start and the next sample after it: the ops
    // between the two are taken as spread evenly over that span, so the
    // reading starts at the window's start. Exact for an idle run (equal
    // counters: the index keeps only its ends) and for the time the daemon
    // was down (no op); for the index's coarser samples (one per pass) it
    // counts the share of the span inside the window, not all of it.
    const nextMs = list.atMs(i + 1);
    let startMs = aMs;
    let startOps = list.readOps(i) + list.writeOps(i);
    if (aMs < from && nextMs > from) {
      startOps += ((from - aMs) / (nextMs - aMs)) * (list.readOps(i + 1) + list.writeOps(i + 1) - startOps);
      startMs = from;
    }
    const coveredMs = list.atMs(b) - startMs;
    if (coveredMs <= 0) return { iops: null, why: 'no samples yet' };
    return { iops: (bOps - startOps) / (coveredMs / 1000) };
  }

  /**
   * A volume's samples as the readings see them: those kept, and when it has
   * been idle since the last of them, one more at the last tick with the
   * same counts (the end of its idle run). Not copied.
   */
  private view(volume: string): SampleList | undefined {
    const list = this.samples.get(volume);
    if (list === undefined) return undefined;
    const n = list.length;
    if (n === 0 || this.lastTickMs === null || this.lastTickMs <= list.atMs(n - 1)) return list;
    const tailMs = this.lastTickMs;
    return {
      length: n + 1,
      atMs: (i) => (i < n ? list.atMs(i) : tailMs),
      readOps: (i) => list.readOps(i < n ? i : n - 1),
      writeOps: (i) => list.writeOps(i < n ? i : n - 1),
    };
  }

  start(): void {
    this.sample();
    this.timer = setInterval(() => {
      const nowMs = Date.now();
      this.tick(nowMs);
      if (this.persistDue(nowMs, PERSIST_INTERVAL_MS)) void this.persist(nowMs);
    }, this.sampleIntervalMs);
    this.timer.unref();
  }

  /** Whether `intervalMs` passed since the last write to the index, or the clock went back behind it (else nothing is kept until it is past it again). */
  private persistDue(nowMs: number, intervalMs: number): boolean {
    return nowMs - this.lastPersistMs >= intervalMs || nowMs < this.lastPersistMs;
  }

  /** Stops sampling; a last sample goes to the index (synchronously: the daemon closes the index next), so a restart continues from the stop. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    try {
      const nowMs = Date.now();
      this.sample(nowMs);
      const batch = this.batch();
      if (batch) this.samplesDb.transactionSync(() => this.write(batch, nowMs));
    } catch (err) {
      log.warn('heat samples not kept in the index at stop; the next start reads the window from the last pass', { err: (err as Error).message });
    }
  }

  /**
   * The sampler's tick: every volume (sample()) once per FULL_SAMPLE_INTERVAL_MS
   * (and at the first tick, and when the clock went back), else only the
   * volumes whose counters can have moved since the last tick: the open ones
   * and the closed ones whose counters (as at their close) are not the ones
   * last read. An idle volume, open or not, gets no sample (view()).
   */
  tick(nowMs = Date.now()): void {
    // A volume made (or deleted) since the walk: walk now, so a new volume's window starts at once as before.
    const volumes = volumeCount(this.manager);
    if (!this.loaded || nowMs - this.lastFullMs >= FULL_SAMPLE_INTERVAL_MS || this.lastTickMs === null || nowMs < this.lastTickMs || volumes !== this.walkedVolumes) return this.sample(nowMs);
    for (const v of this.manager.openVolumes()) this.visit(v.name, v.rec.id, v.counters, nowMs, null);
    for (const [id, c] of this.manager.closedVolumeCounters()) {
      const name = this.names.get(id);
      const t = name === undefined ? undefined : this.tracked.get(name);
      // Not tracked: made since the last walk, opened and closed since; the next walk starts its window.
      if (t === undefined || t.volumeId !== id || (c.readOps === t.rawReadOps && c.writeOps === t.rawWriteOps)) continue;
      this.visit(name!, id, c, nowMs, null);
    }
    this.logSetBack();
    this.lastTickMs = nowMs;
  }

  /** A sample of every volume in the index (a tick, a control-loop pass's refresh, stop()). */
  sample(nowMs = Date.now()): void {
    const live = new Set<string>();
    const open = new Map(this.manager.openVolumes().map((v) => [v.name, v]));
    // A volume closed once nothing held it (a background pass's loan): its counters as at the close.
    const closed = this.manager.closedVolumeCounters();
    // The first sample reads the whole index; later ones see only volumes made since (nothing kept) or a tracker made again.
    const kept = this.loaded ? null : this.loadKept();
    this.loaded = true;
    // Every volume, not only the open ones: a volume no client has opened
    // since the daemon started has served 0 ops since, and must not stay
    // "no data" forever, or an idle volume is never moved to cold after a
    // restart.
    const volumes = this.manager.listVolumes();
    this.walkedVolumes = volumes.length;
    for (const rec of volumes) {
      live.add(rec.name);
      const v = open.get(rec.name);
      this.visit(rec.name, rec.id, v !== undefined && v.rec.id === rec.id ? v.counters : (closed.get(rec.id) ?? null), nowMs, kept);
    }
    this.logSetBack();
    for (const [name, t] of this.tracked) {
      if (live.has(name)) continue;
      this.gone.add(t.volumeId);
      this.tracked.delete(name);
      this.names.delete(t.volumeId);
      this.samples.delete(name);
    }
    this.lastTickMs = nowMs;
    this.lastFullMs = nowMs;
  }

  /**
   * Reads volume `name`'s counters (null: not opened since the start) into
   * its samples: a sample at `nowMs` when they moved since its last one,
   * after one at the last tick (the end of the idle run before, where the
   * I/O started: the index keeps it, batch()); none when they did not.
   */
  private visit(name: string, volumeId: number, counters: VolumeCounters | null, nowMs: number, kept: Map<number, Sample[]> | null): void {
    let t = this.tracked.get(name);
    let list = this.samples.get(name);
    if (t && t.volumeId !== volumeId) {
      // A new volume under a deleted one's name: none of its heat.
      this.gone.add(t.volumeId);
      this.names.delete(t.volumeId);
      t = undefined;
    }
    if (!t || !list) {
      ({ t, list } = this.restore(volumeId, kept));
      this.tracked.set(name, t);
      this.names.set(volumeId, name);
      this.samples.set(name, list);
    }
    if (list.length > 0 && list.atMs(list.length - 1) > nowMs) this.clockSetBack(t, list, nowMs, list.atMs(list.length - 1) - nowMs);
    count(t, counters);
    const n = list.length;
    if (n > 0) {
      const lastMs = list.atMs(n - 1);
      const lastRead = list.readOps(n - 1);
      const lastWrite = list.writeOps(n - 1);
      if (lastRead === t.readOps && lastWrite === t.writeOps) return;
      if (this.lastTickMs !== null && lastMs < this.lastTickMs && this.lastTickMs < nowMs) list.push(this.lastTickMs, lastRead, lastWrite);
    }
    list.push(nowMs, t.readOps, t.writeOps);
    while (list.length > 2 && nowMs - list.atMs(1) > this.retainMs) list.shift();
    if (list.length > MAX_SAMPLES_PER_VOLUME) list.thin(nowMs, Math.floor((MAX_SAMPLES_PER_VOLUME * 3) / 4));
  }

  private logSetBack(): void {
    if (this.setBack.volumes > 0) {
      // One line a sample, not one a volume.
      log.warn('heat samples ahead of the clock (set back?): these volumes\' windows start again', this.setBack);
      this.setBack = { volumes: 0, aheadMs: 0 };
    }
  }

  /** Volume `volumeId`'s samples from the index (none for a volume it never saw), its cumulative ops continued from the newest. */
  private restore(volumeId: number, kept: Map<number, Sample[]> | null): { t: Tracked; list: SampleStore } {
    const stored = kept !== null ? (kept.get(volumeId) ?? []) : (this.readKept({ start: [volumeId, 0], end: [volumeId + 1, 0] }).get(volumeId) ?? []);
    const persisted = stored[stored.length - 1] ?? null;
    const t: Tracked = { volumeId, rawReadOps: 0, rawWriteOps: 0, readOps: persisted?.readOps ?? 0, writeOps: persisted?.writeOps ?? 0, persisted, persistedCount: stored.length };
    return { t, list: this.newSamples(stored) };
  }

  /** A volume's in-memory samples, holding `stored` (time order). A seam for test/heat-compact-samples (a reference store of plain objects). */
  protected newSamples(stored: readonly Sample[]): SampleStore {
    return SampleSeries.of(stored, MAX_SAMPLES_PER_VOLUME + 2);
  }

  /**
   * The clock is behind `list`'s newest sample by `aheadMs` (set back, or the
   * index's samples are from a clock that was ahead): the samples after
   * `nowMs` go, in memory and in the index, and past CLOCK_BACK_TOLERANCE_MS
   * all of them (the window starts again). The cumulative counts go on from
   * the newest, so the series never falls.
   */
  private clockSetBack(t: Tracked, list: SampleStore, nowMs: number, aheadMs: number): void {
    const all = aheadMs > CLOCK_BACK_TOLERANCE_MS;
    if (all) this.setBack = { volumes: this.setBack.volumes + 1, aheadMs: Math.max(this.setBack.aheadMs, aheadMs) };
    const fromMs = all ? 0 : nowMs + 1;
    this.dropFrom.set(t.volumeId, Math.min(fromMs, this.dropFrom.get(t.volumeId) ?? Infinity));
    if (all) list.clear();
    else list.keepAtOrBefore(nowMs);
    // What the index holds after the drop is not known here: the next write puts this list's ends again.
    t.persisted = null;
    t.persistedCount = list.length;
  }

  /**
   * Writes what the index lacks in one transaction: per volume whose counters
   * moved since its newest sample there, that sample's idle run's last sample
   * (where the I/O started) and the newest one; an idle volume costs nothing.
   * So at most 2 entries per busy volume per call, one call per pass (and per
   * PERSIST_INTERVAL_MS, and at stop). A failed write loses only that
   * batch's resolution (logged); the next one carries on.
   */
  persist(nowMs = Date.now()): Promise<void> {
    if (this.persisting) return this.persisting;
    const batch = this.batch();
    this.lastPersistMs = nowMs;
    if (!batch) return Promise.resolve();
    this.persisting = this.samplesDb
      .transaction(() => this.write(batch, nowMs))
      .catch((err: unknown) => {
        commitErrorSeen(err);
        this.unwritten(batch);
        log.warn('heat samples not kept in the index this pass', { err: (err as Error).message });
      })
      .finally(() => (this.persisting = null));
    return this.persisting;
  }

  /**
   * `batch` was not written (its transaction failed): what it held is still
   * to be written. Each volume's newest kept sample goes back to the one
   * before the batch, so the next write puts the start of the I/O again (the
   * end of the idle run before it). Otherwise the index would hold the
   * sample before the idle run and the next one only: after a restart the
   * ops of the last minutes read as spread over the whole idle run (a volume
   * busy for the last 10 min before a restart read 0.15 of its IOPS: cold).
   */
  private unwritten(batch: NonNullable<ReturnType<HeatTracker['batch']>>): void {
    for (const { t, out, before } of batch.writes) {
      if (t.persisted !== out[out.length - 1]) continue; // a later batch (a clock step) set it since
      t.persisted = before;
      t.persistedCount -= out.length;
    }
    for (const id of batch.gone) this.gone.add(id);
    for (const [id, fromMs] of batch.dropFrom) this.dropFrom.set(id, Math.min(fromMs, this.dropFrom.get(id) ?? Infinity));
    this.unreadable.push(...batch.unreadable);
    if (batch.retainMs !== null) this.storedRetainMs = undefined;
  }

  /** What persist() writes: taken synchronously, so the samples the batch names are the ones counted. */
  private batch(): { writes: { t: Tracked; out: Sample[]; before: Sample | null }[]; gone: number[]; dropFrom: [number, number][]; unreadable: Key[]; retainMs: number | null } | null {
    const writes: { t: Tracked; out: Sample[]; before: Sample | null }[] = [];
    for (const [name, t] of this.tracked) {
      // With the idle run's end (view()): the index gets the time up to which a new volume was idle, as before.
      const list = this.view(name)!;
      const n = list.length;
      const p = t.persisted;
      if (n === 0 || (p !== null && (list.atMs(n - 1) <= p.atMs || (list.readOps(n - 1) === p.readOps && list.writeOps(n - 1) === p.writeOps)))) continue;
      const last = sampleAt(list, n - 1);
      const out: Sample[] = [];
      if (p === null) {
        if (n > 1) out.push(sampleAt(list, 0));
      } else {
        // Counters never fall: the samples equal to `p` after it are its idle run.
        let k = n - 2;
        while (k >= 0 && list.atMs(k) > p.atMs && (list.readOps(k) !== p.readOps || list.writeOps(k) !== p.writeOps)) k--;
        if (k >= 0 && list.atMs(k) > p.atMs) out.push(sampleAt(list, k));
      }
      out.push(last);
      t.persisted = last;
      t.persistedCount += out.length;
      writes.push({ t, out, before: p });
    }
    const gone = [...this.gone];
    this.gone.clear();
    const dropFrom = [...this.dropFrom];
    this.dropFrom.clear();
    const unreadable = this.unreadable;
    this.unreadable = [];
    const retainMs = this.retainMs !== this.storedRetainMs ? this.retainMs : null;
    this.storedRetainMs = this.retainMs;
    return writes.length === 0 && gone.length === 0 && dropFrom.length === 0 && unreadable.length === 0 && retainMs === null ? null : { writes, gone, dropFrom, unreadable, retainMs };
  }

  /** Inside a write transaction. */
  private write(batch: NonNullable<ReturnType<HeatTracker['batch']>>, nowMs: number): void {
    const db = this.samplesDb;
    for (const key of batch.unreadable) db.remove(key as [number, number]);
    let budget = GONE_REMOVALS_PER_WRITE;
    for (const id of batch.gone) {
      if (budget === 0) {
        this.gone.add(id);
        continue;
      }
      const keys = [...db.getKeys({ start: [id, 0], end: [id + 1, 0], limit: budget })];
      for (const key of keys) db.remove(key);
      budget -= keys.length;
      if (budget === 0) this.gone.add(id); // maybe more of it: the next write looks again
    }
    for (const [id, fromMs] of batch.dropFrom) for (const key of db.getKeys({ start: [id, fromMs], end: [id + 1, 0] })) db.remove(key);
    for (const { t, out } of batch.writes) {
      for (const s of out) db.put([t.volumeId, s.atMs], [s.readOps, s.writeOps]);
      if (t.persistedCount <= MAX_PERSISTED_SAMPLES_PER_VOLUME) continue;
      // Past the bound: older than the retention goes (but the newest of those,
      // the window's start), the rest is thinned by age, as in memory.
      const range = { start: [t.volumeId, 0] as [number, number], end: [t.volumeId + 1, 0] as [number, number] };
      let list: Sample[] = this.readKept(range).get(t.volumeId) ?? [];
      if (list.length === 0) continue; // unreadable: dropped at the next write
      const all = list;
      while (list.length > 2 && nowMs - list[1]!.atMs > this.retainMs) list = list.slice(1);
      list = thin(list, nowMs, Math.floor((MAX_PERSISTED_SAMPLES_PER_VOLUME * 3) / 4));
      const keep = new Set(list.map((s) => s.atMs));
      for (const s of all) if (!keep.has(s.atMs)) db.remove([t.volumeId, s.atMs]);
      t.persistedCount = list.length;
    }
    if (batch.retainMs !== null) this.stateDb.put('retainMs', batch.retainMs);
  }

  /** Samples held in memory: of `volume`, or of every volume (bench/metrics-scale's memory figure). */
  samplesHeld(volume?: string): number {
    if (volume !== undefined) return this.samples.get(volume)?.length ?? 0;
    let n = 0;
    for (const list of this.samples.values()) n += list.length;
    return n;
  }

  /**
   * Read and write IOPS over the last minute, for metrics (0 until two samples exist). With
   * `volumeId` (the index's record), 0 when the samples under that name are another volume's: one
   * deleted and made again under its name since the last walk (the tick walks when the count of
   * volumes changes, and a delete with a make leaves it), whose samples stay until the next walk.
   */
  iops(volume: string, volumeId?: number, windowMs = 60_000): { readIops: number; writeIops: number } {
    if (volumeId !== undefined && this.tracked.get(volume)?.volumeId !== volumeId) return { readIops: 0, writeIops: 0 };
    const list = this.view(volume);
    if (!list || list.length < 2) return { readIops: 0, writeIops: 0 };
    const a = lastAtOrBefore(list, Date.now() - windowMs);
    const b = list.length - 1;
    const secs = (list.atMs(b) - list.atMs(a)) / 1000;
    if (secs <= 0) return { readIops: 0, writeIops: 0 };
    return { readIops: (list.readOps(b) - list.readOps(a)) / secs, writeIops: (list.writeOps(b) - list.writeOps(a)) / secs };
  }
}

/** Volumes in the index now: LMDB's count of the db's entries (mdb_stat, ~10 us, no read of them). */
function volumeCount(manager: VolumeManager): number {
  return (manager.meta.volumes.getStats() as { entryCount: number }).entryCount;
}

/** The last index up to length - 2 whose sample is at or before `fromMs` (0 if none is): samples are in time order. */
function lastAtOrBefore(list: SampleList, fromMs: number): number {
  let lo = 0;
  let hi = list.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (list.atMs(mid) <= fromMs) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function sampleAt(list: SampleList, i: number): Sample {
  return { atMs: list.atMs(i), readOps: list.readOps(i), writeOps: list.writeOps(i) };
}

/**
 * lmdb-js rejects a failed commit's writers with an error whose commitError
 * is a second promise, rejected with the cause and awaited by no one: an
 * unhandled rejection, which ends the process (Node 20). Handled here: a heat
 * write failing (the index's disk full) is logged, the daemon carries on.
 */
function commitErrorSeen(err: unknown): void {
  const commitError = (err as { commitError?: unknown } | null)?.commitError;
  if (commitError instanceof Promise) commitError.catch(() => undefined);
}

/** A kept entry as a sample, or null when it is not one of this build's (key [volumeId, atMs], value [readOps, writeOps], whole numbers). */
function asSample(key: Key, value: unknown): (Sample & { volumeId: number }) | null {
  if (!Array.isArray(key) || key.length !== 2 || !Array.isArray(value) || value.length !== 2) return null;
  const [volumeId, atMs] = key as unknown[];
  const [readOps, writeOps] = value as unknown[];
  const whole = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!whole(volumeId) || !whole(atMs) || !whole(readOps) || !whole(writeOps)) return null;
  return { volumeId, atMs, readOps, writeOps };
}

/** The kept retention (HEAT_STATE_DB), if it is one (a whole number of ms); anything else is ignored, logged. */
function keptRetainMs(db: Database<number, string>): number | undefined {
  let v: unknown;
  try {
    v = db.get('retainMs');
  } catch (err) {
    v = (err as Error).message;
  }
  if (v === undefined || (Number.isSafeInteger(v) && (v as number) > 0)) return v as number | undefined;
  log.warn('heat retention in the index not of this build, ignored (rewritten at the next write)', { value: JSON.stringify(v) });
  return undefined;
}

/**
 * Adds the ops `counters` (the open volume's, or a closed one's as at its
 * close; null: not opened since the start, it served none) show since the
 * last call to `t`'s cumulative counts.
 * Counters below the last reading started again from 0 (a reopen in a build
 * that does not carry them over): all they show is new.
 */
function count(t: Tracked, counters: VolumeCounters | null): void {
  if (counters === null) return;
  t.readOps += counters.readOps >= t.rawReadOps ? counters.readOps - t.rawReadOps : counters.readOps;
  t.writeOps += counters.writeOps >= t.rawWriteOps ? counters.writeOps - t.rawWriteOps : counters.writeOps;
  t.rawReadOps = counters.readOps;
  t.rawWriteOps = counters.writeOps;
}

/** `list` thinned to at most `target` samples, spaced by age (thinIndices). */
function thin(list: Sample[], nowMs: number, target: number): Sample[] {
  return thinIndices(list.length, (i) => list[i]!.atMs, nowMs, target).map((i) => list[i]!);
}
