// Background repair of cold stripes: stripes found bad by degraded reads or
// by the scrubber are rebuilt onto cold pools holding no other shard of the
// stripe, then the index flips to the new shard places.
import { InsufficientShards, NoSuitablePool } from '../errors.js';
import { log } from '../../log.js';
import type { Volume } from '../volumes/volume.js';
import { StripeStore, type InspectedStripe, type PreparedRebuild, type StripeContext, type StripeRef } from './stripe-store.js';

export type StripeState = 'Healthy' | 'Degraded' | 'Reconstructing' | 'Failed';

/** Bound on stripes remembered as needing work; beyond it the scrubber finds them again. */
export const MAX_QUEUED_STRIPES = 100_000;
/** Stripes rebuilt at once. */
export const REBUILD_CONCURRENCY = 4;
/**
 * An unthrottled (operator) scrub reads stripes in groups of this many (each
 * pool's records of a group in one read where they sit back to back, see
 * StripeStore.inspectMany), SCRUB_GROUPS_AT_ONCE groups at once. Bound: 2 x
 * 16 x 6 shards = 48 MiB of scratch for 1 MiB 4+2 stripes. Measured on the
 * 2-core VM (bench/ec-rebuild): see the commit message for the figures.
 */
export const SCRUB_GROUP_STRIPES = 16;
export const SCRUB_GROUPS_AT_ONCE = 2;

/**
 * Bytes of rebuilt shard records a scrub holds while they are being written
 * and flipped in the index (at least one stripe's, whatever its size). The
 * scan reads on while earlier stripes land, so their appends and index flips
 * share fdatasyncs instead of each worker waiting for its own.
 */
export const MAX_LANDING_BYTES = 64 * 1024 * 1024;

interface QueuedStripe {
  ctx: StripeContext;
  state: StripeState;
  reason: string;
}

export interface ReconstructionOptions {
  /** How often queued stripes are retried (e.g. after "no suitable pool"). */
  retryIntervalMs: number;
  /** Scrub every stripe this often (0 = never on a timer). */
  scrubIntervalMs: number;
  /** Scrub rate limit. */
  scrubStripesPerSecond: number;
}

export class Reconstructor {
  /** Non-healthy stripes by "volumeId:chunk". */
  private readonly states = new Map<string, QueuedStripe>();
  private running: Promise<void> | null = null;
  private timers: NodeJS.Timeout[] = [];
  private scrubbing: Promise<ScrubReport> | null = null;
  private stopped = false;
  rebuiltStripes = 0;
  lastScrub: ScrubReport | null = null;

  constructor(
    private readonly stripes: StripeStore,
    private readonly volumeById: (id: number) => Volume | null,
    private readonly allVolumes: () => Volume[],
    private readonly opts: ReconstructionOptions,
  ) {
    stripes.onDegraded = (_ref, _health, ctx) => {
      if (ctx) this.enqueue(ctx, 'degraded read');
    };
  }

  start(): void {
    this.timers.push(setInterval(() => void this.process(), this.opts.retryIntervalMs));
    if (this.opts.scrubIntervalMs > 0) this.timers.push(setInterval(() => void this.scrub({ rateLimited: true }), this.opts.scrubIntervalMs));
    for (const t of this.timers) t.unref();
  }

  enqueue(ctx: StripeContext, reason: string): void {
    const key = `${ctx.volumeId}:${ctx.chunkIndex}`;
    const cur = this.states.get(key);
    if (cur && cur.state !== 'Failed') return;
    if (!cur && this.states.size >= MAX_QUEUED_STRIPES) return;
    this.states.set(key, { ctx, state: 'Degraded', reason });
    void this.process();
  }

  /** Stripe counts by state over every cold chunk of open volumes. */
  counts(): Record<StripeState, number> {
    const out: Record<StripeState, number> = { Healthy: 0, Degraded: 0, Reconstructing: 0, Failed: 0 };
    let cold = 0;
    for (const v of this.allVolumes()) cold += v.stripes.size;
    for (const s of this.states.values()) out[s.state]++;
    out.Healthy = Math.max(0, cold - out.Degraded - out.Reconstructing - out.Failed);
    return out;
  }

  unhealthy(): { volumeId: number; chunkIndex: number; state: StripeState; reason: string }[] {
    return [...this.states.values()].map((s) => ({ ...s.ctx, state: s.state, reason: s.reason }));
  }

  /** Rebuilds every queued stripe; resolves once a pass that started after the call is done. */
  process(): Promise<void> {
    if (this.running) {
      if (!this.followUp) this.followUp = this.running.then(() => {
        this.followUp = null;
        return this.process();
      });
      return this.followUp;
    }
    this.running = this.pass().finally(() => (this.running = null));
    return this.running;
  }
  private followUp: Promise<void> | null = null;

  private async pass(): Promise<void> {
    // A Reconstructing entry here is being rebuilt by a scrub (passes never overlap).
    const work = [...this.states].filter(([, e]) => e.state !== 'Reconstructing' && !(e.state === 'Failed' && e.reason.startsWith('unrecoverable')));
    let next = 0;
    const worker = async () => {
      while (next < work.length && !this.stopped) {
        const [key, entry] = work[next++]!;
        await this.rebuildOne(key, entry);
      }
    };
    // Stripes are independent; a few at once keep every pool busy.
    await Promise.all(Array.from({ length: REBUILD_CONCURRENCY }, worker));
  }

  /** `inspected`: shards a scrub just read from `inspected.ref`, used only if that is still the chunk's stripe. */
  private async rebuildOne(
    key: string,
    entry: QueuedStripe,
    inspected?: { ref: StripeRef; stripe: InspectedStripe },
  ): Promise<void> {
    const started = await this.startRebuild(key, entry, inspected);
    if (started) await started.landed;
  }

  /**
   * Decodes a stripe's bad shards (the part that reads `inspected`); resolves
   * with `landed`, which settles (never rejects) once the rebuilt shards are
   * durable and the index points at them, or null when there is nothing to
   * land. Wrapped in an object so the caller can go on before it settles.
   */
  private async startRebuild(
    key: string,
    entry: QueuedStripe,
    inspected?: { ref: StripeRef; stripe: InspectedStripe },
  ): Promise<{ landed: Promise<void>; lengthBytes: number } | null> {
    const vol = this.volumeById(entry.ctx.volumeId);
    const ref = vol?.stripes.get(entry.ctx.chunkIndex);
    if (!vol || !ref) {
      this.states.delete(key); // rewritten or deleted meanwhile
      return null;
    }
    if (entry.state === 'Reconstructing') return null; // a scrub or pass is on it already
    entry.state = 'Reconstructing';
    let prepared: PreparedRebuild | null;
    try {
      prepared = await this.stripes.prepareRebuild(ref, inspected?.ref === ref ? inspected.stripe : undefined);
    } catch (err) {
      this.rebuildFailed(vol, entry, err);
      return null;
    }
    if (!prepared) {
      this.states.delete(key);
      return null;
    }
    return { landed: this.land(vol, key, entry, ref, prepared), lengthBytes: prepared.lengthBytes };
  }

  private async land(vol: Volume, key: string, entry: QueuedStripe, ref: StripeRef, prepared: PreparedRebuild): Promise<void> {
    try {
      const next = await this.stripes.landRebuild(ref, prepared);
      if (!(await vol.replaceStripe(entry.ctx.chunkIndex, ref, next))) {
        // The chunk moved on while this landed (rewritten, or its records
        // relocated): its current stripe may still miss the shard, so the
        // next pass looks at that one (and drops the entry if it is healthy).
        entry.state = 'Degraded';
        entry.reason = 'stripe superseded while its rebuild landed; retried';
        return;
      }
      this.rebuiltStripes++;
      log.debug('stripe reconstructed', { volume: vol.name, chunk: entry.ctx.chunkIndex });
      this.states.delete(key);
    } catch (err) {
      this.rebuildFailed(vol, entry, err);
    }
  }

  private rebuildFailed(vol: Volume, entry: QueuedStripe, err: unknown): void {
    if (err instanceof InsufficientShards) {
      entry.state = 'Failed';
      entry.reason = `unrecoverable: ${err.message}`;
      log.error('stripe cannot be reconstructed', { volume: vol.name, chunk: entry.ctx.chunkIndex, err: (err as Error).message });
    } else {
      // No pool to rebuild onto (or a pool went away): stays Degraded, retried later.
      entry.state = 'Degraded';
      entry.reason = err instanceof NoSuitablePool ? `waiting for a pool: ${err.message}` : (err as Error).message;
    }
  }

  /**
   * Re-reads and verifies every shard of every cold stripe. The timer's
   * scrub is rate limited; one an operator asks for (`couchestor scrub`)
   * runs at full speed.
   */
  scrub(opts: { rateLimited: boolean } = { rateLimited: false }): Promise<ScrubReport> {
    if (this.scrubbing) return this.scrubbing;
    this.scrubbing = this.scrubPass(opts.rateLimited).finally(() => (this.scrubbing = null));
    return this.scrubbing;
  }

  private async scrubPass(rateLimited: boolean): Promise<ScrubReport> {
    const started = Date.now();
    const report: ScrubReport = { stripesChecked: 0, badStripes: 0, durationMs: 0 };
    const minGapMs = rateLimited ? 1000 / Math.max(1, this.opts.scrubStripesPerSecond) : 0;
    let next = Date.now();
    const landing = new Landing(MAX_LANDING_BYTES);
    for (const vol of this.allVolumes()) {
      const todo = [...vol.stripes];
      let i = 0;
      const groupStripes = rateLimited ? 1 : SCRUB_GROUP_STRIPES;
      const worker = async () => {
        // Reused for every group this worker checks: nothing keeps a shard past scrubOne.
        let scratch: Buffer | undefined;
        while (i < todo.length && !this.stopped) {
          const group = todo.slice(i, i + groupStripes);
          i += group.length;
          const wait = next - Date.now();
          next = Math.max(Date.now(), next) + minGapMs * group.length;
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          const scratchBytes = StripeStore.scanScratchBytes(group[0]![1], group.length);
          if (scratch === undefined || scratch.length < scratchBytes) scratch = Buffer.allocUnsafe(scratchBytes);
          const inspected = await this.stripes.inspectMany(group.map(([, ref]) => ref), scratch);
          for (const [g, [c, ref]] of group.entries()) await this.scrubOne(vol, c, ref, inspected[g]!, report, landing);
        }
      };
      // The timer's scrub keeps one stripe at a time (it paces itself anyway).
      await Promise.all(Array.from({ length: rateLimited ? 1 : SCRUB_GROUPS_AT_ONCE }, worker));
      if (this.stopped) break;
    }
    await landing.drain();
    if (this.stopped) return report;
    await this.process();
    report.durationMs = Date.now() - started;
    this.lastScrub = report;
    log.info('scrub finished', { ...report });
    return report;
  }

  /**
   * Counts one inspected stripe; a bad one is rebuilt at once from the
   * shards just read (not read again). The shards are views of the worker's
   * scratch: decoding copies what it needs before this returns, and the
   * rebuilt records land in the background (bounded by `landing`).
   */
  private async scrubOne(vol: Volume, c: number, ref: StripeRef, inspected: InspectedStripe, report: ScrubReport, landing: Landing): Promise<void> {
    report.stripesChecked++;
    if (inspected.bad.length === 0) return;
    report.badStripes++;
    const ctx = { volumeId: vol.rec.id, chunkIndex: c };
    const reason = `scrub: shards ${inspected.bad.join(',')} bad`;
    const key = `${ctx.volumeId}:${ctx.chunkIndex}`;
    const cur = this.states.get(key);
    if (!cur && this.states.size >= MAX_QUEUED_STRIPES) return; // the next scrub finds it again
    // Sharing a queued entry object means a pass holding it sees the rebuild under way.
    const entry = cur ?? { ctx, state: 'Degraded' as StripeState, reason };
    if (entry.state !== 'Reconstructing') entry.reason = reason;
    this.states.set(key, entry);
    // Decoding copies what it needs out of scratch; the writes land while the scan reads on.
    const started = await this.startRebuild(key, entry, { ref, stripe: inspected });
    if (started) await landing.add(started.landed, started.lengthBytes);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.running;
    await this.scrubbing;
  }
}

export interface ScrubReport {
  stripesChecked: number;
  badStripes: number;
  durationMs: number;
}

/**
 * Rebuilt stripes being written and flipped, bounded by bytes held: add()
 * waits while admitting another would exceed the bound (one is always
 * admitted), drain() waits for all. The promises never reject.
 */
class Landing {
  private readonly inFlight = new Set<Promise<void>>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  async add(landed: Promise<void>, lengthBytes: number): Promise<void> {
    while (this.inFlight.size > 0 && this.bytes + lengthBytes > this.maxBytes) await Promise.race(this.inFlight);
    this.bytes += lengthBytes;
    const tracked: Promise<void> = landed.finally(() => {
      this.bytes -= lengthBytes;
      this.inFlight.delete(tracked);
    });
    this.inFlight.add(tracked);
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }
}
