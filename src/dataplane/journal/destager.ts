// Moves journaled writes of cold volumes into new stripe generations: on an
// interval (lazily, see tick()), and early when the journal passes its threshold.
import { log } from '../../log.js';
import { DestageStalled } from '../errors.js';
import type { Journal } from './journal.js';
import type { Volume } from '../volumes/volume.js';

export interface DestagerOptions {
  intervalMs: number;
  /** Start destaging early once live journal bytes pass this share of its capacity. */
  thresholdPercent: number;
  /** Chunks destaged at once (each one encodes a stripe and writes k+m shards). */
  concurrency: number;
}

/**
 * Every this many intervals a timer pass destages every dirty chunk even
 * while writes keep coming and none is ripe: journaled data reaches its
 * stripe within a bounded time (60 s at the default 5 s interval) whatever
 * the load, and tests with short intervals still see destages under writes.
 */
export const FULL_PASS_EVERY_INTERVALS = 12;

/**
 * While the same volumes stay unopenable, the line naming them is logged at
 * most this often (a pass runs every interval, 5 s by default); a change in
 * which volumes are skipped is logged at once.
 */
export const SKIPPED_LOG_INTERVAL_MS = 60_000;

/** Which chunks a pass destages. */
type PassScope = 'all' | 'ripe';

export class Destager {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  /** The scope of the pass scheduled after the running one ('all' wins). */
  private againScope: PassScope = 'ripe';
  /** Highest journal seq seen by the last timer tick: none newer means the journal was idle since. */
  private lastTickSeq = 0;
  private ticksSinceFullPass = 0;
  /** Timer ticks that found nothing worth destaging yet (deferred), for tests and metrics. */
  ticksDeferred = 0;
  private stopped = false;
  stripesDestaged = 0;
  errors = 0;
  /** Volumes passes skipped because they could not be opened (one per volume per pass; also in errors). */
  volumesSkipped = 0;
  private lastError: string | null = null;
  /**
   * Dirty volumes the last collect() could not open, id -> why (rebuilt by
   * each collect: at most one entry per dirty volume). Their records stay in
   * the journal; tick() leaves the files only they pin out of its count.
   */
  private skipped = new Map<number, string>();
  /** What the last "skipped" line named, and when (SKIPPED_LOG_INTERVAL_MS). */
  private skippedLogged = { ids: '', atMs: 0 };

  constructor(
    private readonly journal: Journal,
    /**
     * The volume of an id, lent until given back (VolumeManager.borrowById,
     * giveBack): a pass holds each volume it destages until its workers are
     * done, then gives it back, and the last record destaged lets it close
     * (pinned for good before: every volume with records after a restart).
     * borrow returns null for an id no volume has (deleted); the daemon's
     * opens a closed volume a slice at a time (a promise), so a pass that
     * opens a big volume holds the event loop no longer than a slice.
     */
    private readonly volumes: { borrow: (id: number) => Volume | null | Promise<Volume | null>; giveBack: (vol: Volume) => void },
    private readonly opts: DestagerOptions,
  ) {
    journal.onPressure = () => {
      if (this.overThreshold()) this.kickForPressure();
    };
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  /**
   * The interval's pass, lazy: rewriting a whole 1 MiB stripe (k+m shards,
   * an encode, an index flip) for a few 4 KiB records is most of the cost of
   * a small cold write, and it competes with the client for the CPUs and
   * the disk. So while writes keep coming, a tick destages only ripe chunks
   * (journaled bytes >= one chunk: the rewrite costs no more than the data);
   * the rest wait, merging more records per rewrite, until the journal is
   * idle for a whole interval, or passes its threshold (kick() from
   * onPressure, unchanged: the journal stays bounded and a full journal
   * still fails writes with ENOSPC after JOURNAL_FULL_TIMEOUT_MS), or the
   * journal files its live records span pass that threshold, or
   * FULL_PASS_EVERY_INTERVALS ticks have gone by. Chunks of volumes no
   * longer cold (records left by a cold -> hot/warm move) are always taken.
   * Called by the interval timer (and by tests, to step it); resolves when
   * the pass it started (if any) ends.
   */
  tick(): Promise<void> {
    // A look still opening volumes (a big closed one, a slice at a time) answers for this tick too: looks never pile up.
    if (this.looking !== null) return this.looking.then(() => undefined);
    let maxSeq = 0;
    // Journal files spanned by live records (extents are in seq order, files
    // numbered in write order): a file is removed only once every record in
    // it is destaged.
    let minFileNo = Infinity;
    let maxFileNo = 0;
    for (const id of this.journal.dirtyVolumes()) {
      // Files only a volume the last pass could not open pins are left out
      // of the pinned count: no pass can free them until it opens, and a
      // full pass every tick would only take the other volumes' small
      // records early (test offline-volume-destager-pinned). The ripe pass
      // below still tries to open it, every tick.
      const unopenable = this.skipped.has(id);
      for (const c of this.journal.dirtyChunks(id)) {
        const ext = this.journal.extents(id, c);
        if (!ext || !ext.length) continue;
        maxSeq = Math.max(maxSeq, ext[ext.length - 1]!.seq);
        if (unopenable) continue;
        minFileNo = Math.min(minFileNo, ext[0]!.fileNo);
        maxFileNo = Math.max(maxFileNo, ext[ext.length - 1]!.fileNo);
      }
    }
    // Released chunks only lower the maximum: a higher one is a new record.
    const idle = maxSeq <= this.lastTickSeq;
    this.lastTickSeq = maxSeq;
    if (maxSeq === 0) return Promise.resolve();
    // The threshold counts live record bytes; ripe chunks destaged every
    // tick keep those low while a few deferred small records keep every
    // file they landed in on disk (a file system's metadata beside its
    // data): the full files behind the newest are judged by the same
    // threshold, or 12 intervals of writes could stay on the hot pool
    // (test review-destager-pinned-files).
    const pinnedBytes = minFileNo === Infinity ? 0 : (maxFileNo - minFileNo) * this.journal.fileBytes;
    const pinned = pinnedBytes >= (this.journal.capacityBytes * this.opts.thresholdPercent) / 100;
    const full = idle || pinned || ++this.ticksSinceFullPass >= FULL_PASS_EVERY_INTERVALS;
    if (full) return this.kick('all');
    const look = this.lookRipe().finally(() => (this.looking = null));
    this.looking = look;
    return look.then((due) => (due ? this.kick('ripe') : undefined));
  }

  /** Dirty volumes the last pass's collect() found deleted (no volume has the id): drain() waits for none of them. */
  private lastPassGone = new Set<number>();

  /** A tick's look at ripe chunks in progress (lookRipe). */
  private looking: Promise<boolean> | null = null;

  /** Whether a ripe pass has work (tick()); counts the tick deferred when not. */
  private async lookRipe(): Promise<boolean> {
    const { work, lent } = await this.collect('ripe');
    for (const vol of lent) this.volumes.giveBack(vol); // a look only: the pass below takes them again
    if (work.length > 0) return true;
    this.ticksDeferred++;
    return false;
  }

  /**
   * Live journal bytes at or past the threshold (thresholdPercent of capacity),
   * or an append waiting for room: the threshold alone missed a journal full
   * under it (a record larger than capacity less the threshold: 1 MiB records
   * in a 4 MiB journal at 90%, any record at 100%; a full disk), and such a
   * writer waited for the interval timer (an hour in tests) or failed with
   * ENOSPC after JOURNAL_FULL_TIMEOUT_MS (test destager-writers-wait-for-room).
   */
  private overThreshold(): boolean {
    return this.journal.writersWaitingForRoom > 0 || this.journal.bytesLive >= (this.journal.capacityBytes * this.opts.thresholdPercent) / 100;
  }

  /**
   * A pass the threshold asked for while one was running (every append past
   * it asks): run after it only if the journal is still past the threshold
   * then. The running pass took every dirty chunk, so what it leaves is the
   * records written during it, a few KiB per chunk; a full pass over those
   * rewrote a 1 MiB stripe per chunk for little data (measured: 492 of 1,210
   * stripes of a 30 s qd32 run carried < 256 KiB, from such passes), and that
   * work is what sustained cold writes pay for in disk and CPU. Appends past
   * the threshold later ask again.
   */
  private pressureAgain = false;

  private kickForPressure(): void {
    if (this.stopped) return;
    if (this.running) {
      this.pressureAgain = true;
      return;
    }
    void this.kick('all');
  }

  /**
   * Starts a pass (or schedules one more after the current pass). Without a
   * scope (the threshold, drain(), `couchestor destage`): every dirty chunk.
   */
  kick(scope: PassScope = 'all'): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      if (!this.again || scope === 'all') this.againScope = scope;
      this.again = true;
      return this.running;
    }
    if (scope === 'all') this.ticksSinceFullPass = 0;
    this.running = this.pass(scope).finally(() => {
      this.running = null;
      if (this.stopped) return;
      // Judged now, not when asked: see pressureAgain.
      const pressure = this.pressureAgain && this.overThreshold();
      this.pressureAgain = false;
      if (this.again || pressure) {
        const scope = pressure ? 'all' : this.againScope;
        this.again = false;
        void this.kick(scope);
      }
    });
    return this.running;
  }

  /**
   * Chunks to destage: every dirty one, or only ripe ones (see tick()).
   * Rebuilds `skipped`; counting and logging them is the pass's (tick()
   * also calls this to look, and a tick must log once). Every volume in
   * `lent` is borrowed once: the caller gives each back. A closed volume is
   * opened a slice at a time (the daemon's borrow), one volume after another.
   */
  private async collect(scope: PassScope): Promise<{ work: [Volume, number][]; lent: Volume[]; gone: Set<number> }> {
    const work: [Volume, number][] = [];
    const lent: Volume[] = [];
    const skipped = new Map<number, string>();
    const gone = new Set<number>();
    for (const id of this.journal.dirtyVolumes()) {
      if (this.stopped) break;
      let vol: Volume | null;
      try {
        vol = await this.volumes.borrow(id);
      } catch (err) {
        // The daemon stopping: the manager gives up the opens in progress (stop() is called
        // first, so this pass sees it). Not a volume that cannot be opened: logged as one,
        // counted in errors and left as the journal's stalled reason at every stop that
        // found a closed volume opening (test review-rsopen-destage-stop).
        if (this.stopped) break;
        // A volume that cannot be opened (its pool offline, a file unreadable)
        // keeps its records in the journal for a later pass; the other
        // volumes' chunks still go. Thrown from here it ended the pass, and
        // from the interval timer the daemon (an uncaught exception).
        skipped.set(id, `volume id ${id} cannot be opened: ${(err as Error).message}`);
        continue;
      }
      if (!vol) {
        gone.add(id);
        continue;
      }
      lent.push(vol);
      const every = scope === 'all' || vol.rec.tier !== 'cold';
      for (const c of this.journal.dirtyChunks(id)) {
        if (!every) {
          // Journal bytes, headers too: every extent is held in memory and
          // overlaid on each read of the chunk, so one-byte writes (NBD
          // allows them) ripen after ~26k records, not a million (test
          // review-destager-tiny-records).
          let bytes = 0;
          for (const e of this.journal.extents(id, c) ?? []) bytes += e.recordBytes;
          if (bytes < vol.rec.chunkSizeBytes) continue;
        }
        work.push([vol, c]);
      }
    }
    this.skipped = skipped;
    return { work, lent, gone };
  }

  /** A pass's account of the volumes its collect() could not open: counted, the reason kept, one log line (rate limited). */
  private noteSkipped(): void {
    if (this.skipped.size === 0) {
      // Every volume opened: the next outage is logged at once, even within the minute.
      this.skippedLogged = { ids: '', atMs: 0 };
      return;
    }
    this.errors += this.skipped.size;
    this.volumesSkipped += this.skipped.size;
    const reasons = [...this.skipped.values()];
    this.lastError = reasons.join('; ');
    this.journal.stalledReason = this.lastError;
    const ids = [...this.skipped.keys()].join(',');
    const nowMs = Date.now();
    if (ids === this.skippedLogged.ids && nowMs - this.skippedLogged.atMs < SKIPPED_LOG_INTERVAL_MS) return;
    this.skippedLogged = { ids, atMs: nowMs };
    log.warn('destage skipped volumes that cannot be opened; their records stay in the journal, later passes retry', { volumeIds: ids, err: this.lastError });
  }

  /**
   * Destages until the journal holds nothing (used by `couchestor destage`
   * and tests). Throws DestageStalled when a whole pass makes no progress.
   */
  async drain(): Promise<void> {
    while (this.journal.dirtyVolumes().length > 0) {
      if (this.running) await this.running;
      const before = this.stripesDestaged;
      this.lastError = null;
      await this.kick();
      // Records of a volume the pass found deleted go with its delete (journal.dropVolume, once
      // the delete's index write is durable), not with a destage: not a stall (a drain during a
      // delete failed "destage made no progress: nothing destageable"; test review-rsopen-destage-stop).
      const left = this.journal.dirtyVolumes().filter((id) => !this.lastPassGone.has(id));
      if (left.length === 0) return;
      if (this.stripesDestaged === before) {
        throw new DestageStalled(`destage made no progress: ${this.lastError ?? 'nothing destageable'}`);
      }
    }
  }

  /**
   * A pass that throws past its per-chunk catches (a bug in collecting the
   * work) is counted and logged like a failed destage, and the journal keeps
   * its records for the next pass. Its promise was dropped by kick()'s
   * follow-up and the interval timer (`void`): rejected, it would have ended
   * the daemon (an unhandled rejection).
   */
  private async pass(scope: PassScope): Promise<void> {
    try {
      await this.passOnce(scope);
    } catch (err) {
      this.errors++;
      this.lastError = (err as Error).message;
      this.journal.stalledReason = this.lastError;
      log.error('destage pass failed; the journal keeps the data, the next pass retries', { scope, err: (err as Error).stack ?? String(err) });
    }
  }

  private async passOnce(scope: PassScope): Promise<void> {
    const errorsBefore = this.errors;
    const { work, lent, gone } = await this.collect(scope);
    this.lastPassGone = gone;
    this.noteSkipped();
    let next = 0;
    const worker = async () => {
      while (next < work.length && !this.stopped) {
        const [vol, c] = work[next++]!;
        try {
          if (await vol.drainJournalChunk(c)) this.stripesDestaged++;
        } catch (err) {
          this.errors++;
          this.lastError = (err as Error).message;
          this.journal.stalledReason = this.lastError;
          // The journal keeps the data; the next pass retries.
          log.warn('destage failed; will retry', { volume: vol.name, chunk: c, err: (err as Error).message });
        }
      }
    };
    const workers = Array.from({ length: this.opts.concurrency }, worker);
    try {
      await Promise.all(workers);
    } finally {
      // After every worker: one that threw ended Promise.all with the others still destaging
      // (workers catch their errors, but a loan must never end under a destage in flight).
      await Promise.allSettled(workers);
      for (const vol of lent) this.volumes.giveBack(vol);
    }
    // A full pass took every dirty chunk of every volume: none skipped or
    // failed means nothing is stalled now, and a full journal's ENOSPC must
    // not name an old cause (a pool that is back). A ripe pass leaves chunks
    // out, so it says nothing of those (review-destager-stale-reason).
    if (scope === 'all' && !this.stopped && this.errors === errorsBefore) this.journal.stalledReason = null;
  }

  /** Resolves once no pass is running and none is scheduled after it (tests). */
  async settled(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.running) await this.running;
  }
}
