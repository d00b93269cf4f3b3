// Background repair of cold stripes: stripes found bad by degraded reads or
// by the scrubber are rebuilt onto cold pools holding no other shard of the
// stripe, then the index flips to the new shard places.
import { InsufficientShards, NoSuitablePool } from '../errors.js';
import { log } from '../../log.js';
import type { Volume } from '../volumes/volume.js';
import type { UnavailableVolume } from '../volumes/manager.js';
import { ChunkState, type IncompleteRebuildRecord, type MetaStore, type VolumeRecord } from '../meta/store.js';
import type { SegmentStore } from './segment-store.js';
import { StripeStore, type InspectedStripe, type LostShardJob, type PreparedRebuild, type StripeContext, type StripeRef } from './stripe-store.js';

export type StripeState = 'Healthy' | 'Degraded' | 'Reconstructing' | 'Failed';

/** Bound on stripes remembered as needing work; beyond it the scrubber finds them again. */
export const MAX_QUEUED_STRIPES = 100_000;
/** Stripes rebuilt at once. */
export const REBUILD_CONCURRENCY = 4;
/** Distinct errors of one pool's retries logged (Reconstructor.logRetryFailure); later ones are only counted. */
const MAX_RETRY_ERRORS_LOGGED = 8;
/** indexStripes reads a closed volume's chunk map this many entries at a time, for up to INDEX_SLICE_MS of the event loop between two yields. */
const INDEX_SLICE_ENTRIES = 1024;
const INDEX_SLICE_MS = 4;
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
/**
 * A pool rebuild keeps this many groups of SCRUB_GROUP_STRIPES stripes in
 * the native kernel at once (one libuv threadpool thread each: the default
 * pool has 4) while earlier groups' records are written. bench/ec-rebuild,
 * interleaved on the 2-core VM: 2 -> 0.28/0.51x, 3 -> 0.59/0.51x,
 * 4 -> 0.70/0.81/0.83/0.55x, 6 -> 0.79/0.52x of a raw copy.
 */
export const POOL_REBUILD_GROUPS_AT_ONCE = 4;

/** Scan scratch buffers kept between scans (the most workers any scan runs) and for how long. */
export const MAX_SPARE_SCRATCH = Math.max(SCRUB_GROUPS_AT_ONCE, POOL_REBUILD_GROUPS_AT_ONCE);
export const SCRATCH_KEEP_MS = 60_000;

export const MAX_LANDING_BYTES = 64 * 1024 * 1024;

/**
 * Queued stripes of one holder source a queue pass lands before flipping
 * them in one transaction (rebuildBatch). Bounds the flips held and how
 * long compaction waits on the batch's write session.
 */
export const QUEUE_FLIP_BATCH_STRIPES = 64;

/**
 * Test hook (test/review-rebuild-stop-while-queued): with
 * COUCHESTOR_TEST_PAUSE_POOL_REBUILD=1 in the daemon's environment, a
 * whole-pool rebuild that has written its first group of shards prints
 * `couchestor paused pool-rebuild {"pool":...}` on stdout and holds its
 * workers until the reconstructor is stopped, which then cuts the run as it
 * cuts any (a run of a few hundred ms could end between two polls of
 * GET /v1/cold under load). Read once at start; unset, it costs one boolean
 * test per group.
 */
const PAUSE_POOL_REBUILD = process.env.COUCHESTOR_TEST_PAUSE_POOL_REBUILD === '1';

/**
 * Stripes held by something other than a volume's chunk map (cold S3 objects
 * and multipart parts: objects/cold-holders.ts), registered with
 * Reconstructor.addSource. Pool rebuild, scrub and the queue treat their
 * stripes like volume stripes; the source flips a rebuilt reference. Its
 * readers pass a HolderStripeContext { source: prefix, key } with each
 * stripe read, so a degraded read is queued under that key.
 */
/** A holder source's record whose stripes cannot be read: its database, its index key, what is wrong. */
export interface DamagedHolderRecord {
  db: string;
  key: Buffer;
  problem: string;
}

export interface StripeHolderSource {
  /** Prefixes this source's queue keys (unique among sources). */
  readonly prefix: string;
  /**
   * Every stripe the source's index holds now: [holder key, reference]. A
   * record whose stripes cannot be read (damaged) throws, unless `onDamaged`
   * is given: then it is skipped and reported to it (the scrub; the pool
   * rebuild lists strictly, so it never answers complete past one).
   */
  list(onDamaged?: (d: DamagedHolderRecord) => void): Iterable<[string, StripeRef]>;
  /** A damaged record's name for a report or a log line ("bucket/key"). */
  describe?(d: DamagedHolderRecord): string;
  /** How many stripes list() would yield (for counts()). */
  count(): number;
  /** The reference the index holds at `key` now; undefined once it is gone. */
  current(key: string): StripeRef | undefined;
  /**
   * Compare-and-swap, in one LMDB transaction, durable when it resolves:
   * `expected` becomes `next` only if the holder still holds `expected` at
   * the same places. Calls StripeStore.releaseReplaced either way.
   */
  replace(key: string, expected: StripeRef, next: StripeRef): Promise<boolean>;
  /**
   * Several replace()s in one LMDB transaction, each flip compared on its
   * own (same answers as one replace() per flip, in order), each record
   * written once; durable when it resolves, releaseReplaced called for
   * each. A pool rebuild flips a window's stripes through it, and a queue
   * pass each batch of the source's queued stripes (rebuildBatch): per-stripe
   * flips rewrote a large object's whole record once per stripe.
   */
  replaceMany?(flips: readonly HolderFlip[]): Promise<boolean[]>;
  /** A whole-pool rebuild of `pool` lands on `store` (told before it lists anything). */
  poolRebuildStarting?(pool: string, store: object): void;
  /**
   * The rebuild of `pool` that landed on `store` completed, and `store` is
   * still the pool's: every stripe with a shard there holds it there, the
   * flips and the pool's incomplete-list entry durable. Awaited; a throw is
   * logged (the rebuild's answer stands).
   */
  poolRebuilt?(pool: string, store: object): Promise<void>;
}

/** One compare-and-swap of a holder's stripe: `expected` becomes `next` at `key`. */
export interface HolderFlip {
  key: string;
  expected: StripeRef;
  next: StripeRef;
}

/** Same stripe at the same places (a stripe moved by compaction is not the one expected). */
export function sameStripeAt(a: StripeRef | undefined, b: StripeRef): boolean {
  if (a === undefined || a.ownerId !== b.ownerId || a.chunkIndex !== b.chunkIndex || a.generation !== b.generation || a.shards.length !== b.shards.length) return false;
  return a.shards.every((s, i) => {
    const t = b.shards[i]!;
    return s.pool === t.pool && s.segment === t.segment && s.offsetBytes === t.offsetBytes && s.lengthBytes === t.lengthBytes;
  });
}

interface QueuedStripe {
  /** A volume's chunk; unused (volumeId -1) when `holder` is set. */
  ctx: StripeContext;
  /** A stripe of a registered holder source instead of a volume chunk. */
  holder?: { source: StripeHolderSource; key: string };
  state: StripeState;
  reason: string;
  /**
   * Set while a pool rebuild that took this stripe runs: whichever path lands
   * it (the rebuild's per-stripe path, or a queue pass it left the stripe to)
   * counts it in that rebuild's report (land()). Cleared when the rebuild ends.
   */
  poolRebuild?: PoolRebuildReport;
  /**
   * Set when the last attempt found no pool to land on: passes that new
   * enqueues start skip the stripe until then, the retry timer's pass tries
   * it (retryWaiting). Without it every degraded read of a lost pool's
   * stripes started a pass that read and decoded every waiting stripe again:
   * a 48 MiB GET (768 stripes) with two pools lost and none free took 100 s.
   */
  retryAfterMs?: number;
}

/** The pool-rebuild tag of an entry being replaced, carried to the new one. */
function tagOf(cur: QueuedStripe | undefined): Pick<QueuedStripe, 'poolRebuild'> {
  return cur?.poolRebuild !== undefined ? { poolRebuild: cur.poolRebuild } : {};
}

/** Where a queued stripe lives now and how its rebuilt reference is flipped. */
interface RebuildTarget {
  label: string;
  ref: StripeRef | undefined;
  replace(expected: StripeRef, next: StripeRef): Promise<boolean>;
}

export interface ReconstructionOptions {
  /** How often queued stripes are retried (e.g. after "no suitable pool"). */
  retryIntervalMs: number;
  /** Scrub every stripe this often (0 = never on a timer). */
  scrubIntervalMs: number;
  /** Scrub rate limit. */
  scrubStripesPerSecond: number;
  /** Bound on the queue (default MAX_QUEUED_STRIPES; tests set a small one rather than fill 100,000 entries). */
  maxQueuedStripes?: number;
}

/**
 * The store of an incompleteRebuilds entry loaded from the index: unknown, so
 * unequal to every store and to null (a pool offline at the retry), and the
 * retry rebuilds the whole pool.
 */
const STORE_UNKNOWN = Symbol('store unknown');

/** A pool's entry in incompleteRebuilds (Reconstructor.skippedByRebuild). */
interface IncompleteEntry {
  volumes: Set<string>;
  notRebuilt: number;
  store: SegmentStore | null | typeof STORE_UNKNOWN;
  /**
   * A whole-pool rebuild of the pool was cut (a stop, a crash seen at start
   * through its 'running' record, a failure): which stripes it left is not
   * known, so the retry timer rebuilds the whole pool once it is online.
   */
  interrupted?: boolean;
}

/** A pool as GET /v1/cold incompleteRebuilds and the rebuild gauges list it. */
export interface ListedIncompleteRebuild {
  pool: string;
  volumesSkipped: string[];
  notRebuilt: number;
  /** Present (true) only when a whole-pool rebuild was cut: notRebuilt is then a lower bound. */
  interrupted?: true;
}

/**
 * An index record as listed. One still 'running' was written by a whole-pool
 * rebuild that never finished: the daemon that wrote it died during it (a
 * running daemon lists its own rebuild from memory, not from this record), so
 * it reads as interrupted, at least one stripe not rebuilt.
 */
export function listedIncomplete(pool: string, rec: IncompleteRebuildRecord): ListedIncompleteRebuild {
  const volumesSkipped = [...rec.volumesSkipped].sort();
  if (rec.state === undefined) return { pool, volumesSkipped, notRebuilt: rec.notRebuilt };
  return { pool, volumesSkipped, notRebuilt: Math.max(1, rec.notRebuilt), interrupted: true };
}

/**
 * Drops the index's incomplete-rebuild records of pools that are no longer
 * cold pools (made another tier, or with no pool record): nothing will
 * rebuild them, and they would be listed, with a gauge series, forever. The
 * daemon calls it at start, before the cold tier loads the list. A cold pool
 * only taken out of the configuration keeps its record: its pool record stays
 * in the index, a cold pool to reads, placement, rebuilds and the retry timer,
 * and its stripes still name it (an offline or renamed disk): its last rebuild
 * is still not complete until a rebuild of it completes. Returns the pools
 * dropped (logged).
 */
export async function forgetRemovedPoolRebuilds(meta: MetaStore, configuredColdPools: Iterable<string>): Promise<string[]> {
  const keep = new Set(configuredColdPools);
  for (const p of meta.listPools()) if (p.tier === 'cold') keep.add(p.name);
  const gone = [...meta.incompleteRebuilds.getKeys()].filter((pool) => !keep.has(pool));
  for (const pool of gone) {
    await meta.incompleteRebuilds.remove(pool);
    log.warn('dropped the incomplete-rebuild record of a pool no longer configured as a cold pool', { pool });
  }
  return gone;
}

export class Reconstructor {
  /** Non-healthy stripes by "volumeId:chunk". */
  private readonly states = new Map<string, QueuedStripe>();
  private running: Promise<void> | null = null;
  private timers: NodeJS.Timeout[] = [];
  private scrubbing: Promise<ScrubReport> | null = null;
  private stopped = false;
  /** Resolved by stop(): what PAUSE_POOL_REBUILD holds a run until (made on first use). */
  private stopSignal: { stopped: Promise<void>; resolve: () => void } | null = null;
  rebuiltStripes = 0;
  lastScrub: ScrubReport | null = null;
  /** Holder sources besides the volumes (bounded: one per front end). */
  private readonly sources = new Set<StripeHolderSource>();
  private readonly maxQueued: number;

  constructor(
    private readonly stripes: StripeStore,
    /**
     * The volume of an id, lent until given back (the daemon's:
     * VolumeManager.borrowById; given back through `volumes.giveBack`): the
     * queue holds the volumes of its entries (queueVolume) and gives each
     * back once no entry of it is queued (giveBackQueueLoans). Null: no
     * volume has that id (deleted). The daemon's opens a closed volume a
     * slice at a time (a promise): a queued stripe of a big closed volume
     * holds the event loop no longer than a slice.
     */
    private readonly borrowById: (id: number) => Volume | null | Promise<Volume | null>,
    private readonly allVolumes: () => Volume[],
    private readonly opts: ReconstructionOptions,
    /**
     * The volumes as the scrub and the pool rebuilds take them (the daemon's:
     * VolumeManager.volumesForPass, borrowVolume, giveBack): a closed volume
     * is read from the index or borrowed for the time its stripes are worked
     * on, so a pass leaves open only what clients and work in flight hold.
     * Default: every volume of allVolumes, open.
     */
    private readonly volumes: PassVolumeSource = {
      list: () => ({ open: allVolumes(), closed: [], unavailable: [] }),
      borrow: (name) => {
        const vol = allVolumes().find((v) => v.name === name);
        if (vol === undefined) throw new Error(`no volume named ${name}`);
        return vol;
      },
      giveBack: () => undefined,
      openFailure: () => undefined,
    },
    /**
     * The index: the scrub reads the chunk map of a volume that cannot be
     * opened from it, to verify that volume's stripes (read-only). Null:
     * such a volume's stripes are not looked at.
     */
    private readonly index: MetaStore | null = null,
    /**
     * The cold stripes of the volumes counts() covers. The daemon's
     * (VolumeManager.coldStripeCount) opens no volume: this default, over
     * allVolumes(), is for tests whose volumes are all open.
     */
    private readonly volumeStripeCount: () => number = () => allVolumes().reduce((n, v) => n + v.stripes.size, 0),
  ) {
    this.maxQueued = opts.maxQueuedStripes ?? MAX_QUEUED_STRIPES;
    this.loadIncompleteRebuilds();
    stripes.onDegraded = (_ref, _health, ctx) => {
      // A read without a context (none in the daemon today) leaves the stripe to the scrub.
      if (ctx === undefined) return;
      if ('volumeId' in ctx) return this.enqueue(ctx, 'degraded read');
      // The reader named the holder (its index key travels with the read): no lookup, nothing to keep.
      for (const source of this.sources) if (source.prefix === ctx.source) return this.enqueueHolder(source, ctx.key, 'degraded read');
    };
  }

  /** Adds a holder source (the S3 front end's cold objects); returns its removal. */
  addSource(source: StripeHolderSource): () => void {
    this.sources.add(source);
    return () => void this.sources.delete(source);
  }

  enqueueHolder(source: StripeHolderSource, holderKey: string, reason: string): void {
    const key = `${source.prefix}:${holderKey}`;
    const cur = this.states.get(key);
    if (cur && cur.state !== 'Failed') return;
    if (!cur && this.states.size >= this.maxQueued) return;
    // A Failed entry a pool rebuild took keeps its tag: that rebuild counts the stripe once.
    this.states.set(key, { ctx: { volumeId: -1, chunkIndex: -1 }, holder: { source, key: holderKey }, state: 'Degraded', reason, ...tagOf(cur) });
    void this.process();
  }

  private async targetOf(entry: QueuedStripe): Promise<RebuildTarget | null> {
    if (entry.holder) {
      const { source, key } = entry.holder;
      return { label: `${source.prefix}:${key}`, ref: source.current(key), replace: (expected, next) => source.replace(key, expected, next) };
    }
    const vol = await this.queueVolume(entry.ctx.volumeId);
    if (!vol) return null;
    const c = entry.ctx.chunkIndex;
    return { label: `${vol.name}:${c}`, ref: vol.stripes.get(c), replace: (expected, next) => vol.replaceStripe(c, expected, next) };
  }

  /**
   * The volumes the queue's entries are worked through, by id, each lent
   * once (borrowById) until no entry of it is queued (giveBackQueueLoans):
   * a stripe's rebuild holds its volume from its target to its flip (a
   * volume closed under it would have the flip refused, or made behind a
   * copy opened since). At most one per volume with queued entries.
   */
  private readonly queueLoans = new Map<number, Volume>();

  /** The volume of id `id` for a queued stripe, lent to the queue (queueLoans); null: deleted. */
  private async queueVolume(id: number): Promise<Volume | null> {
    const vol = await this.borrowById(id);
    const held = this.queueLoans.get(id);
    if (vol === null) {
      if (held !== undefined) this.volumes.giveBack(held);
      this.queueLoans.delete(id);
      return null;
    }
    // One loan per id: this one given back when the volume is held already (or the held one, closed since by a delete).
    if (held === vol) this.volumes.giveBack(vol);
    else {
      if (held !== undefined) this.volumes.giveBack(held);
      this.queueLoans.set(id, vol);
    }
    return vol;
  }

  /**
   * Ends the queue's loan of every volume none of whose stripes is queued
   * any more (rebuilt, dropped): its rebuilds and flips are done (an entry
   * leaves the queue only after its flip). One with entries waiting (for a
   * pool, Failed) stays lent. After each queue pass, scrub and pool rebuild.
   */
  private giveBackQueueLoans(): void {
    if (this.queueLoans.size === 0) return;
    const queued = new Set<number>();
    for (const e of this.states.values()) if (e.holder === undefined) queued.add(e.ctx.volumeId);
    for (const [id, vol] of [...this.queueLoans]) {
      if (queued.has(id)) continue;
      this.queueLoans.delete(id);
      this.volumes.giveBack(vol);
    }
  }

  start(): void {
    this.timers.push(setInterval(() => void this.retryOnTimer(), this.opts.retryIntervalMs));
    if (this.opts.scrubIntervalMs > 0) this.timers.push(setInterval(() => void this.scrubOnTimer(), this.opts.scrubIntervalMs));
    for (const t of this.timers) t.unref();
  }

  /** Scheduled passes that failed (logged; the next interval tries again). */
  timerFailures = 0;
  /** Volumes scrub passes skipped because they could not be opened (one per volume per pass). */
  scrubVolumesSkipped = 0;

  /**
   * The scrub timer's pass. A failure is logged and retried at the next
   * interval: from the timer a rejection was unhandled, and that ends the
   * daemon. (A volume that cannot be opened, its pool offline, no longer
   * fails the pass: it is skipped and named in the report.)
   */
  scrubOnTimer(): Promise<void> {
    return this.onTimer('scrub', () => this.scrub({ rateLimited: true }));
  }

  /**
   * The retry timer's pass: the stripes waiting for a pool (or for their
   * volume to open), then, for each pool whose last rebuild skipped volumes
   * that could not be opened, a rebuild of those of them that open now
   * (retryPools). Failures are logged and retried next interval; neither step
   * holds back the other, nor one pool's failure the other pools.
   */
  retryOnTimer(): Promise<void> {
    return this.onTimer('retry', async () => {
      // Each step on its own: a failed queue pass must not hold back the pools' retries.
      const waiting = await this.retryWaiting().then(
        () => null,
        (err: unknown) => err,
      );
      // A pool whose retry throws is logged (once per distinct error) and counted in
      // retryPools, and the other pools are still retried: not a failure of the pass.
      const { failures } = await this.retryPools();
      this.timerFailures += failures.length;
      if (waiting !== null) throw waiting;
    });
  }

  private onTimer(what: 'scrub' | 'retry', run: () => Promise<unknown>): Promise<void> {
    return run().then(
      () => undefined,
      (err: unknown) => {
        this.timerFailures++;
        log.warn(`scheduled ${what} pass failed; will retry next interval`, { err: (err as Error).message });
      },
    );
  }

  enqueue(ctx: StripeContext, reason: string): void {
    const key = `${ctx.volumeId}:${ctx.chunkIndex}`;
    const cur = this.states.get(key);
    if (cur && cur.state !== 'Failed') return;
    if (!cur && this.states.size >= this.maxQueued) return;
    this.states.set(key, { ctx, state: 'Degraded', reason, ...tagOf(cur) });
    void this.process();
  }

  /**
   * Stripe counts by state over every cold chunk of the volumes (and holder
   * sources). A volume known not to open (its pool offline) is left out, not
   * fatal: the metrics scrape and the API call read the others' figures, and
   * name it from VolumeManager.unavailableVolumes(). Runs at every scrape,
   * API status call and control-loop pass: it opens no volume
   * (volumeStripeCount).
   */
  counts(): Record<StripeState, number> {
    const out: Record<StripeState, number> = { Healthy: 0, Degraded: 0, Reconstructing: 0, Failed: 0 };
    let cold = this.volumeStripeCount();
    for (const source of this.sources) cold += source.count();
    for (const s of this.states.values()) out[s.state]++;
    out.Healthy = Math.max(0, cold - out.Degraded - out.Reconstructing - out.Failed);
    return out;
  }

  unhealthy(): ({ volumeId: number; chunkIndex: number } | { holder: string })[] {
    return [...this.states.values()].map((s) => ({ ...(s.holder ? { holder: `${s.holder.source.prefix}:${s.holder.key}` } : s.ctx), state: s.state, reason: s.reason }));
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
    this.running = this.pass().finally(() => {
      this.running = null;
      this.giveBackQueueLoans();
    });
    return this.running;
  }
  private followUp: Promise<void> | null = null;

  /**
   * A pass that also retries the stripes waiting for a pool (the retry
   * timer's, and a pool rebuild's last); resolves like process().
   */
  retryWaiting(): Promise<void> {
    this.retryWaitingNext = true;
    return this.process();
  }
  private retryWaitingNext = false;

  private async pass(): Promise<void> {
    const retryWaiting = this.retryWaitingNext;
    this.retryWaitingNext = false;
    const nowMs = Date.now();
    // A Reconstructing entry here is being rebuilt by a scrub (passes never overlap).
    const work = [...this.states].filter(
      ([, e]) => e.state !== 'Reconstructing' && !(e.state === 'Failed' && e.reason.startsWith('unrecoverable')) && (retryWaiting || e.retryAfterMs === undefined || e.retryAfterMs <= nowMs),
    );
    // A holder source with a batched flip gets its stripes landed a batch at a time and
    // flipped in one transaction per batch (a degraded GET of a large object queues all its
    // stripes, and one flip each rewrote the object's whole record each time).
    const single: [string, QueuedStripe][] = [];
    const batched = new Map<StripeHolderSource, [string, QueuedStripe][]>();
    for (const w of work) {
      const source = w[1].holder?.source;
      if (source?.replaceMany === undefined) {
        single.push(w);
        continue;
      }
      const list = batched.get(source);
      if (list) list.push(w);
      else batched.set(source, [w]);
    }
    let next = 0;
    const worker = async () => {
      while (next < single.length && !this.stopped) {
        const [key, entry] = single[next++]!;
        try {
          await this.rebuildOne(key, entry);
        } catch (err) {
          // One stripe's throw must not end the pass for every stripe after it (nor the batches).
          this.stripeFailed(key, [entry], err);
        }
      }
    };
    // Stripes are independent; a few at once keep every pool busy.
    await Promise.all(Array.from({ length: REBUILD_CONCURRENCY }, worker));
    for (const [source, list] of batched) {
      for (let i = 0; i < list.length && !this.stopped; i += QUEUE_FLIP_BATCH_STRIPES) {
        const batch = list.slice(i, i + QUEUE_FLIP_BATCH_STRIPES);
        try {
          await this.rebuildBatch(source, batch);
        } catch (err) {
          this.stripeFailed(`${source.prefix}:${batch[0]![0]}`, batch.map(([, e]) => e), err);
        }
      }
    }
  }

  /**
   * A queue pass's rebuild of `entries` (one stripe, or a batch of one holder
   * source) threw where no path of its own catches: they go back to Degraded,
   * retried by the next pass, and the pass goes on. Logged when the error is
   * new for the stripe (its reason), not at every retry interval.
   */
  private stripeFailed(label: string, entries: QueuedStripe[], err: unknown): void {
    let fresh = false;
    for (const entry of entries) {
      if (entry.state === 'Failed' && entry.reason.startsWith('unrecoverable')) continue;
      const before = entry.reason;
      this.rebuildFailed(label, entry, err);
      if (entry.reason !== before) fresh = true;
    }
    this.stripeFailures++;
    if (fresh) log.warn('stripe rebuild failed; left Degraded and retried by the next pass (the other queued stripes go on)', { stripe: label, stripes: entries.length, err: err instanceof Error ? err.message : String(err) });
  }
  /** Queue rebuilds (a stripe, or a batch) that threw outside their own error paths (stripeFailed). */
  stripeFailures = 0;

  /**
   * Rebuilds queued stripes of one holder source: each landed (durable) as
   * rebuildOne does, REBUILD_CONCURRENCY at once, then all flipped in one
   * transaction (replaceMany: each compared on its own, each record written
   * once). One write session spans the landings until the flips are issued,
   * as a pool rebuild's window does, so compaction keeps their segments.
   */
  private async rebuildBatch(source: StripeHolderSource, batch: [string, QueuedStripe][]): Promise<void> {
    const token = this.stripes.beginWrite();
    try {
      const landed: { key: string; entry: QueuedStripe; ref: StripeRef; next: StripeRef; lengthBytes: number; forRebuild: PoolRebuildReport | undefined }[] = [];
      let i = 0;
      const worker = async () => {
        while (i < batch.length && !this.stopped) {
          const [key, entry] = batch[i++]!;
          const started = await this.prepareOne(key, entry);
          if (started === null) continue;
          // Read before any await: the pool rebuild that tagged the entry may end meanwhile.
          const forRebuild = entry.poolRebuild;
          try {
            const next = await this.stripes.landRebuild(started.ref, started.prepared);
            landed.push({ key, entry, ref: started.ref, next, lengthBytes: started.prepared.lengthBytes, forRebuild });
          } catch (err) {
            this.rebuildFailed(started.target.label, entry, err);
          }
        }
      };
      await Promise.all(Array.from({ length: REBUILD_CONCURRENCY }, worker));
      if (landed.length === 0) return;
      // Issued before the write session ends; a synchronous throw counts as a failed flip (below).
      let flipping: Promise<boolean[]>;
      try {
        flipping = source.replaceMany!(landed.map((l) => ({ key: l.entry.holder!.key, expected: l.ref, next: l.next })));
      } catch (err) {
        flipping = Promise.reject(err);
      }
      this.stripes.endWrite(token); // the flips are issued
      let flipped: boolean[];
      try {
        flipped = await flipping;
      } catch (err) {
        for (const l of landed) this.rebuildFailed(`${source.prefix}:${l.entry.holder!.key}`, l.entry, err);
        return;
      }
      landed.forEach((l, t) => {
        if (!flipped[t]) {
          l.entry.state = 'Degraded';
          l.entry.reason = 'stripe superseded while its rebuild landed; retried';
          return;
        }
        this.rebuiltStripes++;
        // As land(): a pool rebuild may have tagged the stripe while the batch landed.
        const counted = l.entry.poolRebuild ?? l.forRebuild;
        if (counted !== undefined) {
          counted.stripesRebuilt++;
          counted.bytesLanded += l.lengthBytes;
        }
        log.debug('stripe reconstructed', { stripe: `${source.prefix}:${l.entry.holder!.key}` });
        this.states.delete(l.key);
      });
    } finally {
      this.stripes.endWrite(token);
    }
  }

  /**
   * `inspected`: shards a scrub just read from `inspected.ref`, used only if
   * that is still the chunk's stripe. Resolves with the bytes of shard
   * records landed (0 when nothing was rebuilt).
   */
  private async rebuildOne(
    key: string,
    entry: QueuedStripe,
    inspected?: { ref: StripeRef; stripe: InspectedStripe },
  ): Promise<number> {
    const started = await this.startRebuild(key, entry, inspected);
    if (!started) return 0;
    return (await started.landed) ? started.lengthBytes : 0;
  }

  /**
   * Decodes a stripe's bad shards (the part that reads `inspected`); resolves
   * with `landed`, which settles (never rejects; true if the index flipped)
   * once the rebuilt shards are durable and the index points at them, or
   * null when there is nothing to land. Wrapped in an object so the caller can go on before it settles.
   */
  private async startRebuild(
    key: string,
    entry: QueuedStripe,
    inspected?: { ref: StripeRef; stripe: InspectedStripe },
  ): Promise<{ landed: Promise<boolean>; lengthBytes: number } | null> {
    const started = await this.prepareOne(key, entry, inspected);
    if (started === null) return null;
    const { target, ref, prepared } = started;
    return { landed: this.land(target, key, entry, ref, prepared), lengthBytes: prepared.lengthBytes };
  }

  /** startRebuild's first half: the stripe's bad shards decoded (entry Reconstructing), or null when there is nothing to land. */
  private async prepareOne(
    key: string,
    entry: QueuedStripe,
    inspected?: { ref: StripeRef; stripe: InspectedStripe },
  ): Promise<{ target: RebuildTarget; ref: StripeRef; prepared: PreparedRebuild } | null> {
    let target: RebuildTarget | null;
    try {
      target = await this.targetOf(entry);
    } catch (err) {
      // Its volume cannot be opened now (its hot pool offline): the stripe waits for it as one
      // waits for a pool, retried by the timer. Thrown from here it failed the whole pass, and
      // with it a pool rebuild's final pass (503) and every later pass.
      if (entry.state !== 'Reconstructing') {
        entry.state = 'Degraded';
        entry.reason = `waiting for its volume to open: ${(err as Error).message}`;
        entry.retryAfterMs = Date.now() + this.opts.retryIntervalMs;
      }
      return null;
    }
    const ref = target?.ref;
    if (!target || !ref) {
      this.states.delete(key); // rewritten or deleted meanwhile
      return null;
    }
    if (entry.state === 'Reconstructing') return null; // a scrub or pass is on it already
    entry.state = 'Reconstructing';
    let prepared: PreparedRebuild | null;
    // A holder source reads its reference afresh from LMDB (a new object each time): compared by value.
    const same = inspected !== undefined && (inspected.ref === ref || (entry.holder !== undefined && sameStripeAt(inspected.ref, ref)));
    try {
      prepared = await this.stripes.prepareRebuild(ref, same ? inspected.stripe : undefined);
    } catch (err) {
      this.rebuildFailed(target.label, entry, err);
      return null;
    }
    if (!prepared) {
      this.states.delete(key);
      return null;
    }
    return { target, ref, prepared };
  }

  private async land(target: RebuildTarget, key: string, entry: QueuedStripe, ref: StripeRef, prepared: PreparedRebuild): Promise<boolean> {
    const forRebuild = entry.poolRebuild;
    try {
      const next = await this.stripes.landRebuild(ref, prepared);
      // Issued in this continuation: landRebuild's write session has just ended (StripeStore.beginWrite).
      if (!(await target.replace(ref, next))) {
        // The chunk moved on while this landed (rewritten, or its records
        // relocated): its current stripe may still miss the shard, so the
        // next pass looks at that one (and drops the entry if it is healthy).
        entry.state = 'Degraded';
        entry.reason = 'stripe superseded while its rebuild landed; retried';
        return false;
      }
      this.rebuiltStripes++;
      // The tag now, else the one read before landing: a pool rebuild that checks the stripe
      // while it lands tags it then (and leaves it to this path), and one that has ended since
      // (a scrub's landing outlives it) has cleared its tag.
      const counted = entry.poolRebuild ?? forRebuild;
      if (counted !== undefined) {
        counted.stripesRebuilt++;
        counted.bytesLanded += prepared.lengthBytes;
      }
      log.debug('stripe reconstructed', { stripe: target.label });
      this.states.delete(key);
      return true;
    } catch (err) {
      this.rebuildFailed(target.label, entry, err);
      return false;
    }
  }

  private rebuildFailed(label: string, entry: QueuedStripe, err: unknown): void {
    if (err instanceof InsufficientShards) {
      entry.state = 'Failed';
      entry.reason = `unrecoverable: ${err.message}`;
      log.error('stripe cannot be reconstructed', { stripe: label, err: (err as Error).message });
    } else {
      // No pool to rebuild onto (or a pool went away): stays Degraded, retried later.
      entry.state = 'Degraded';
      entry.reason = err instanceof NoSuitablePool ? `waiting for a pool: ${err.message}` : (err as Error).message;
      if (err instanceof NoSuitablePool) entry.retryAfterMs = Date.now() + this.opts.retryIntervalMs;
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
    const report: ScrubReport = { stripesChecked: 0, badStripes: 0, durationMs: 0, volumesSkipped: [], skippedStripesChecked: 0, skippedBadStripes: 0, skippedDamage: [], damagedRecords: 0, damagedRecordNames: [] };
    const minGapMs = rateLimited ? 1000 / Math.max(1, this.opts.scrubStripesPerSecond) : 0;
    let next = Date.now();
    const landing = new Landing(MAX_LANDING_BYTES);
    // Volumes' chunk maps, then each holder source's stripes (cold S3 objects and parts).
    // Each list is taken when its turn comes (as fresh as the scan allows, one list held at a time).
    // `readOnly`: a volume that cannot be opened, its stripes listed from the index: verified and
    // damage reported, nothing queued or rebuilt (the flip goes through the open volume).
    type Scan = { todo: [number, StripeRef][]; entryFor: (c: number) => { key: string; make: () => Pick<QueuedStripe, 'ctx' | 'holder'> }; readOnly?: VolumeRecord };
    const scans: (() => Scan | Promise<Scan>)[] = [];
    // A volume that cannot be opened (its pool offline) is skipped and named
    // in the report: the others are still scrubbed. Thrown from here it ended
    // the whole pass, every interval, until the pool came back.
    const listed = this.volumes.list();
    const listing = listed instanceof Promise ? await listed : listed;
    report.volumesSkipped = listing.unavailable;
    this.scrubVolumesSkipped += listing.unavailable.length;
    if (listing.unavailable.length > 0) {
      log.warn('scrub skips volumes that cannot be opened; the next scrub tries them again', { volumes: listing.unavailable.map((u) => `${u.volume}@${u.pool}: ${u.error}`).join('; ') });
    }
    const entryOf = (volumeId: number) => (c: number) => ({ key: `${volumeId}:${c}`, make: () => ({ ctx: { volumeId, chunkIndex: c } }) });
    for (const vol of listing.open) scans.push(() => ({ todo: [...vol.stripes], entryFor: entryOf(vol.rec.id) }));
    // A closed volume's stripes from its chunk map in the index (what opening it would load),
    // read at its turn; opened only to repair one (the queue's rebuild opens it). Opening each
    // to scrub it kept every volume open for good: a descriptor and a chunk map per volume.
    for (const rec of listing.closed) scans.push(async () => ({ todo: await this.indexStripes(rec), entryFor: entryOf(rec.id) }));
    for (const u of listing.unavailable) {
      const rec = this.index?.volumes.get(u.volume);
      if (rec === undefined) continue;
      const entryFor = (c: number) => ({ key: `${rec.id}:${c}`, make: () => ({ ctx: { volumeId: rec.id, chunkIndex: c } }) });
      scans.push(async () => ({ todo: await this.indexStripes(rec), entryFor, readOnly: rec }));
    }
    for (const source of this.sources) {
      scans.push(() => {
        // A damaged record (its stripes unreadable) is skipped, counted and named, and every
        // other stripe still checked: thrown, it ended the whole pass, every interval, until repaired.
        const listed = [
          ...source.list((d) => {
            report.damagedRecords++;
            if (report.damagedRecordNames.length < MAX_REPORTED_DAMAGED_RECORDS) report.damagedRecordNames.push(`${source.prefix} ${d.db} ${source.describe?.(d) ?? d.key.toString('hex')}: ${d.problem}`);
          }),
        ];
        return {
          todo: listed.map(([, ref], t) => [t, ref]),
          entryFor: (t) => {
            const holderKey = listed[t]![0];
            return { key: `${source.prefix}:${holderKey}`, make: () => ({ ctx: { volumeId: -1, chunkIndex: -1 }, holder: { source, key: holderKey } }) };
          },
        };
      });
    }
    for (const scan of scans) {
      const { todo, entryFor, readOnly } = await scan();
      let i = 0;
      const groupStripes = rateLimited ? 1 : SCRUB_GROUP_STRIPES;
      const worker = async () => {
        // Reused for every group this worker checks: nothing keeps a shard past scrubOne.
        let scratch: Buffer | undefined;
        try {
          while (i < todo.length && !this.stopped) {
            const group = todo.slice(i, i + groupStripes);
            i += group.length;
            const wait = next - Date.now();
            next = Math.max(Date.now(), next) + minGapMs * group.length;
            if (wait > 0) await new Promise((r) => setTimeout(r, wait));
            scratch = this.scratchFor(scratch, StripeStore.scanScratchBytes(group[0]![1], group.length));
            const inspected = await this.stripes.inspectMany(group.map(([, ref]) => ref), scratch);
            for (const [g, [c, ref]] of group.entries()) {
              if (readOnly !== undefined) await this.scrubUnopened(readOnly, c, ref, inspected[g]!, report);
              else await this.scrubOne(entryFor(c), ref, inspected[g]!, report, landing);
            }
          }
        } finally {
          this.returnScratch(scratch);
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
    if (report.skippedBadStripes > 0) {
      log.warn('scrub found damaged stripes of volumes that cannot be opened; not repaired until they open (the next scrub or a pool rebuild then does)', {
        stripes: report.skippedBadStripes,
        first: report.skippedDamage.map((d) => `${d.volume}:${d.chunkIndex} shards ${d.badShards.join(',')}`).join('; '),
      });
    }
    if (report.damagedRecords > 0) {
      log.error('scrub skipped damaged index records: their stripes were not checked (fsck lists them all)', {
        records: report.damagedRecords,
        first: report.damagedRecordNames.join('; '),
      });
    }
    log.info('scrub finished', { damagedRecords: report.damagedRecords, stripesChecked: report.stripesChecked, badStripes: report.badStripes, durationMs: report.durationMs, volumesSkipped: report.volumesSkipped.length, skippedStripesChecked: report.skippedStripesChecked, skippedBadStripes: report.skippedBadStripes });
    return report;
  }

  /**
   * The Cold chunks of a closed volume (or one that cannot be opened), with
   * their stripes, as its chunk map in the index holds them now (what opening
   * it would load: VolumeManager.openRecord), read INDEX_SLICE_ENTRIES at a
   * time for up to INDEX_SLICE_MS, then a yield to the event loop: read in
   * one go, a 1M-entry map held it ~1 s at each scrub and pool rebuild.
   * Nothing writes that map while the volume is closed but compaction (same
   * bytes at another place: reads follow it, and a stripe is compared with
   * the index's before it is flipped) and a delete (its entries go: the
   * stripes listed are then not the volume's, and nothing is flipped).
   */
  private async indexStripes(rec: VolumeRecord): Promise<[number, StripeRef][]> {
    const chunks = Math.ceil(rec.sizeBytes / rec.chunkSizeBytes);
    const out: [number, StripeRef][] = [];
    let from = 0;
    for (;;) {
      const sliceStart = performance.now();
      let read: number;
      do {
        read = 0;
        for (const { chunkIndex, entry } of this.index!.volumeChunks(rec.id, from, INDEX_SLICE_ENTRIES)) {
          read++;
          from = chunkIndex + 1;
          if (chunkIndex < chunks && entry.state === ChunkState.Cold && entry.stripe !== undefined) out.push([chunkIndex, entry.stripe]);
        }
      } while (read === INDEX_SLICE_ENTRIES && performance.now() - sliceStart < INDEX_SLICE_MS);
      if (read < INDEX_SLICE_ENTRIES || this.stopped) return out;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Counts one inspected stripe of a volume that cannot be opened; a bad one
   * is reported, not queued (its flip needs the open volume, and a queued
   * entry would wait on it anyway). Counted bad only if the index still
   * holds that stripe: one deleted meanwhile is not damage, and one moved by
   * compaction (or rewritten: the volume opened meanwhile) is read again at
   * its current place.
   */
  private async scrubUnopened(rec: VolumeRecord, c: number, ref: StripeRef, inspected: InspectedStripe, report: ScrubReport): Promise<void> {
    report.skippedStripesChecked++;
    if (inspected.bad.length === 0) return;
    let bad = inspected.bad;
    const now = this.index!.chunks.get([rec.id, c]);
    const cur = now?.state === ChunkState.Cold ? now.stripe : undefined;
    if (cur === undefined) return;
    if (!sameStripeAt(cur, ref)) {
      bad = (await this.stripes.inspectMany([cur], Buffer.allocUnsafe(StripeStore.scanScratchBytes(cur, 1))))[0]!.bad;
      if (bad.length === 0) return;
    }
    report.skippedBadStripes++;
    if (report.skippedDamage.length < MAX_REPORTED_SKIPPED_DAMAGE) report.skippedDamage.push({ volume: rec.name, chunkIndex: c, badShards: [...bad] });
  }

  /**
   * Counts one inspected stripe; a bad one is rebuilt at once from the
   * shards just read (not read again). The shards are views of the worker's
   * scratch: decoding copies what it needs before this returns, and the
   * rebuilt records land in the background (bounded by `landing`).
   */
  private async scrubOne(
    at: { key: string; make: () => Pick<QueuedStripe, 'ctx' | 'holder'> },
    ref: StripeRef,
    inspected: InspectedStripe,
    report: ScrubReport,
    landing: Landing,
  ): Promise<void> {
    report.stripesChecked++;
    if (inspected.bad.length === 0) return;
    report.badStripes++;
    const reason = `scrub: shards ${inspected.bad.join(',')} bad`;
    const key = at.key;
    const cur = this.states.get(key);
    if (!cur && this.states.size >= this.maxQueued) return; // the next scrub finds it again
    // Sharing a queued entry object means a pass holding it sees the rebuild under way.
    const entry: QueuedStripe = cur ?? { ...at.make(), state: 'Degraded', reason };
    if (entry.state !== 'Reconstructing') entry.reason = reason;
    this.states.set(key, entry);
    // Decoding copies what it needs out of scratch; the writes land while the scan reads on.
    const started = await this.startRebuild(key, entry, { ref, stripe: inspected });
    if (started) await landing.add(started.landed, started.lengthBytes);
  }

  /**
   * Rebuilds the shards a lost or replaced cold pool no longer holds
   * (`couchestor rebuild <pool>`, POST /v1/rebuild): for every cold stripe
   * with a shard on `poolName` that the pool's current store does not hold
   * (StripeStore.shardPresent), reads k survivors, decodes that shard and
   * lands it on `poolName` itself (durable, then the index flips). Resolves
   * once every such stripe is rebuilt (or left Degraded/Failed, counted).
   * Shards the pool still holds are not verified: that is the scrub's job.
   * With the pool offline, its stripes are queued and rebuilt onto other
   * pools (the reconstruction pass). One pool rebuild at a time.
   *
   * A volume that cannot be opened (its hot pool offline) and whose chunk
   * map in the index has stripes on the pool is skipped, named in
   * volumesSkipped with that count and logged; the others are rebuilt, and
   * the report says complete: false. Its stripes need the open volume: the flip goes
   * through Volume.replaceStripe, which keeps the in-memory chunk map in
   * step with the index (a flip made in the index alone, then the volume
   * opened with the old reference, would have its next destage overwrite
   * the rebuilt stripe and free the old one). The skipped volumes are tried
   * again by the retry timer (retrySkippedVolumes) and by the next call.
   */
  rebuildPool(poolName: string): Promise<PoolRebuildReport> {
    return this.startPoolRebuild(poolName, null, 'operator');
  }
  private poolRebuild: { pool: string; only: Set<string> | null; startedBy: RebuildStarter; done: Promise<PoolRebuildReport> } | null = null;
  /**
   * An operator's rebuild (API) of another pool that arrived while the retry
   * timer's rebuild ran: it starts when that one ends, and the timer starts
   * nothing before it. One slot: a further request for yet another pool is
   * refused (PoolRebuildBusy), as one is while an operator's rebuild runs.
   */
  private nextRebuild: { pool: string; done: Promise<PoolRebuildReport> } | null = null;

  /** The pool rebuild running now, and the operator's rebuild queued behind it (null: none). */
  rebuildRunning(): { pool: string; wholePool: boolean; startedBy: RebuildStarter; queued: string | null } | null {
    const r = this.poolRebuild;
    return r === null ? null : { pool: r.pool, wholePool: r.only === null, startedBy: r.startedBy, queued: this.nextRebuild?.pool ?? null };
  }
  /**
   * Per cold pool whose last rebuild was not complete: the volumes it could
   * not open (and has not rebuilt since), and the stripes it left not
   * rebuilt (notRebuilt: queue full, unrecoverable, ...). The pool is not
   * fully rebuilt while an entry is here. Bounded by cold pools x volumes.
   * The volumes go once rebuilt or deleted (the retry timer); notRebuilt
   * only with a whole-pool rebuild that leaves none: a retry of the skipped
   * volumes looks at nothing else, so it must not clear them. `store`: the
   * pool's segment store that rebuild landed on; another one now (the pool
   * replaced or lost again since) makes the retry a whole-pool rebuild.
   */
  private readonly skippedByRebuild = new Map<string, IncompleteEntry>();

  /**
   * Pools not fully rebuilt: their last rebuild skipped volumes that could not
   * be opened (volumesSkipped, retried by the timer) or left stripes not
   * rebuilt (notRebuilt: rebuild the pool again), or was cut (interrupted:
   * the timer rebuilds the whole pool). A rebuild running now changes nothing
   * here until it ends (rebuildRunning() names it): the list is what the last
   * finished (or cut) rebuild left.
   */
  incompleteRebuilds(): ListedIncompleteRebuild[] {
    return [...this.skippedByRebuild].map(([pool, e]) => ({ pool, volumesSkipped: [...e.volumes].sort(), notRebuilt: e.notRebuilt, ...(e.interrupted ? { interrupted: true as const } : {}) }));
  }

  /**
   * The entries a daemon before this one left in the index: after a restart
   * the pool is still listed and the retry timer still retries its skipped
   * volumes. Their store is unknown (STORE_UNKNOWN, never the pool's current
   * one; not null, which is what segmentStore answers for a pool offline now):
   * the pool may have been replaced (or lost) while the daemon was down, so the
   * first retry rebuilds the whole pool (what a retry does when the store changed).
   * Bounded like the map: one record per cold pool.
   */
  private loadIncompleteRebuilds(): void {
    if (this.index === null) return;
    for (const { key, value } of this.index.incompleteRebuilds.getRange()) {
      // 'running': the daemon before this one died during a whole-pool rebuild of the pool.
      const listed = listedIncomplete(key, value);
      this.skippedByRebuild.set(key, { volumes: new Set(listed.volumesSkipped), notRebuilt: listed.notRebuilt, store: STORE_UNKNOWN, ...(listed.interrupted ? { interrupted: true } : {}) });
    }
  }

  /**
   * Sets (or, null, clears) a pool's entry: in memory, then in the index
   * (committed, synced, before this resolves). Every change of the list goes
   * through here so the two agree. A failed write is logged and the memory
   * list kept: the rebuild itself is done; only a restart could lose the entry.
   */
  private async setIncomplete(pool: string, entry: IncompleteEntry | null): Promise<void> {
    if (entry === null) {
      this.skippedByRebuild.delete(pool);
      // Its retries' logged errors go with it: listed again later, the same fault is logged again.
      this.retryErrorsLogged.delete(pool);
    } else this.skippedByRebuild.set(pool, entry);
    if (this.index === null) return;
    try {
      if (entry === null) await this.index.incompleteRebuilds.remove(pool);
      else await this.index.incompleteRebuilds.put(pool, { volumesSkipped: [...entry.volumes].sort(), notRebuilt: entry.notRebuilt, ...(entry.interrupted ? { state: 'interrupted' as const } : {}) });
    } catch (err) {
      this.incompleteWriteFailures++;
      log.warn('could not record the incomplete rebuild list in the index; a restart may forget it', { pool, err: (err as Error).message });
    }
  }
  /** Writes of incompleteRebuilds to the index that failed (logged). */
  incompleteWriteFailures = 0;

  /**
   * Before a whole-pool rebuild lands anything: the pool's record says a
   * rebuild is running (one small synced commit), keeping what was listed.
   * A hard crash before the rebuild's end leaves it, and the next start lists
   * the pool as interrupted (the pool's lost shards may be only partly
   * rebuilt; without it a pool with no entry read as rebuilt). Index only:
   * the list in memory, and so the API and the gauges, keep meaning "what
   * the last finished rebuild left" while this one runs. Its end replaces
   * the record (setIncomplete). A failed write is counted and fails the
   * rebuild before it lands anything (PoolRebuildNotRecorded): carried on
   * without it, a crash during the run left the pool unlisted, read as
   * rebuilt while its lost shards were only partly back. The timer retries a
   * listed pool next interval; an operator gets the error.
   */
  private async markRunning(pool: string): Promise<boolean> {
    if (this.index === null) return false;
    const was = this.skippedByRebuild.get(pool);
    try {
      await this.index.incompleteRebuilds.put(pool, { volumesSkipped: [...(was?.volumes ?? [])].sort(), notRebuilt: was?.notRebuilt ?? 0, state: 'running' });
      return true;
    } catch (err) {
      this.incompleteWriteFailures++;
      const cause = err as Error;
      // The timer's retry logs it once per distinct error (logRetryFailure), not every interval.
      if (this.poolRebuild?.startedBy !== 'timer') log.error('pool rebuild not started: could not record in the index that it is running (a crash during it would leave the pool unlisted); nothing written to the pool', { pool, err: cause.message });
      throw new PoolRebuildNotRecorded(`rebuild of pool ${pool} not started: recording it as running in the index failed (${cause.message}); nothing was written to the pool, rebuild again once the index takes writes`, { cause });
    }
  }

  /**
   * `only`: the volumes to rebuild (a retry of those a rebuild skipped: no holder source); null: the whole pool.
   * One pool rebuild at a time (each reads k survivors per stripe at full speed). An operator's
   * rebuild of another pool while one of theirs runs is refused (PoolRebuildBusy: they asked for
   * both). While the retry timer's runs, it waits for it instead (queued, one slot): the operator
   * did not start the timer's and could not know, and a 409 would make them poll for a gap the
   * timer may fill again at its next interval. The timer's run is not cut short: what it lands is
   * redundancy restored too, and it rebuilds only what is missing.
   */
  private startPoolRebuild(poolName: string, only: Set<string> | null, startedBy: RebuildStarter): Promise<PoolRebuildReport> {
    // stop() waits for the run it sees: one started after (a request that waited for a retry of
    // its pool) would run on after stop() returned, under an index and stores being closed.
    if (this.stopped) return Promise.reject(new PoolRebuildBusy(`the daemon is stopping; pool ${poolName} was not rebuilt`));
    const running = this.poolRebuild;
    const queued = this.nextRebuild;
    if (running === null && queued !== null && startedBy === 'operator') {
      // Between the timer's run ending and the queued request starting (a few microtasks).
      if (queued.pool === poolName) return queued.done;
      return Promise.reject(new PoolRebuildBusy(`pool ${queued.pool} is about to be rebuilt; rebuild ${poolName} after it`));
    }
    if (running) {
      if (running.pool !== poolName) {
        if (startedBy === 'operator' && running.startedBy === 'timer') {
          // Not a cold pool: its 404 now, not after the timer's run, and no slot held meanwhile.
          if (!this.stripes.coldPoolNames().includes(poolName)) return Promise.reject(new UnknownPool(`no cold pool named ${poolName}`));
          if (queued === null) return this.queueAfterTimer(running.done, poolName);
          if (queued.pool === poolName) return queued.done;
          return Promise.reject(new PoolRebuildBusy(`pool ${running.pool} is being rebuilt by the retry timer and ${queued.pool} is queued after it; rebuild ${poolName} after them`));
        }
        return Promise.reject(new PoolRebuildBusy(`pool ${running.pool} is being rebuilt; rebuild ${poolName} after it`));
      }
      // A whole-pool call during a retry of some volumes gets a whole-pool rebuild after it.
      if (running.only === null || only !== null) return running.done;
      // Accepted to wait: if an operator's rebuild of another pool was queued meanwhile, it goes
      // first (asked first) and this one after it; refusing it then would fail a request already waited on.
      const again = (): Promise<PoolRebuildReport> => {
        const ahead = this.poolRebuild === null ? this.nextRebuild : null;
        return ahead !== null && ahead.pool !== poolName ? ahead.done.then(again, again) : this.startPoolRebuild(poolName, null, startedBy);
      };
      return running.done.then(again, again);
    }
    const done = this.rebuildPoolNow(poolName, only).finally(() => (this.poolRebuild = null));
    this.poolRebuild = { pool: poolName, only, startedBy, done };
    return done;
  }

  /** An operator's whole-pool rebuild of `poolName`, started once the timer's run (`timerRun`) ends. */
  private queueAfterTimer(timerRun: Promise<PoolRebuildReport>, poolName: string): Promise<PoolRebuildReport> {
    const done = timerRun
      .then(
        () => undefined,
        () => undefined, // the timer's failure is the timer's (logged there); this request still runs
      )
      .then(() => {
        this.nextRebuild = null;
        if (this.stopped) throw new PoolRebuildBusy(`the daemon is stopping; pool ${poolName} was not rebuilt`);
        return this.startPoolRebuild(poolName, null, 'operator');
      });
    this.nextRebuild = { pool: poolName, done };
    log.info('pool rebuild queued behind the retry timer\'s rebuild', { pool: poolName, running: this.poolRebuild?.pool });
    return done;
  }

  /**
   * For each pool whose last rebuild skipped volumes that could not be
   * opened: rebuilds the pool's shards of those that open now (the retry
   * timer calls it; tests call it at the moment they choose). A pool with
   * none open yet waits; its entry goes once every volume it names is
   * rebuilt or deleted. Nothing while another pool rebuild runs (next interval).
   * A pool whose retry throws holds back no other (retryPools): every listed
   * pool is tried, then the first such error is thrown. The timer's pass
   * (retryOnTimer) logs and counts them instead.
   */
  async retrySkippedVolumes(): Promise<PoolRebuildReport[]> {
    const { reports, failures } = await this.retryPools();
    // Every listed pool was tried first: one that throws holds back no other.
    if (failures.length > 0) throw failures[0]!.err;
    return reports;
  }

  /**
   * retrySkippedVolumes' pass: each listed pool on its own. A pool whose retry
   * throws (a damaged S3 object record the whole-pool rebuild stops on, its
   * running record not written: PoolRebuildNotRecorded) stays listed, is
   * counted (poolRetryFailures) and logged once per distinct error, and the
   * pass goes on to the next pool. Before, the first throw ended the pass: a
   * pool that always threw kept every pool after it unrebuilt, silently.
   */
  private async retryPools(): Promise<{ reports: PoolRebuildReport[]; failures: { pool: string; err: unknown }[] }> {
    const reports: PoolRebuildReport[] = [];
    const failures: { pool: string; err: unknown }[] = [];
    // An operator's rebuild queued behind the timer's goes first.
    const busy = () => this.poolRebuild !== null || this.nextRebuild !== null;
    if (this.skippedByRebuild.size === 0 || busy()) return { reports, failures };
    // Which of them open: the open ones and the closed ones not known to fail (a rebuild borrows each at its turn).
    const listed = this.volumes.list();
    const listing = listed instanceof Promise ? await listed : listed;
    const opened = new Set([...listing.open.map((v) => v.name), ...listing.closed.map((r) => r.name)]);
    const unopened = new Set(listing.unavailable.map((u) => u.volume));
    for (const [pool, entry] of [...this.skippedByRebuild]) {
      if (this.stopped || busy()) break;
      try {
        const report = await this.retryPool(pool, entry, opened, unopened, busy);
        if (report !== null) reports.push(report);
      } catch (err) {
        this.poolRetryFailures++;
        failures.push({ pool, err });
        this.logRetryFailure(pool, err);
      }
    }
    return { reports, failures };
  }

  /** One listed pool's step of retryPools: the report of the rebuild it ran, or null (none run). */
  private async retryPool(pool: string, entry: IncompleteEntry, opened: Set<string>, unopened: Set<string>, busy: () => boolean): Promise<PoolRebuildReport | null> {
    if (!this.stripes.coldPoolNames().includes(pool)) {
      await this.setIncomplete(pool, null); // a pool no longer configured
      return null;
    }
    if (entry.interrupted === true) {
      // A whole-pool rebuild was cut: which stripes still lack their shard there is not known.
      // Rebuilt whole once the pool is online (offline: it waits, listed).
      if ((await this.stripes.segmentStore(pool)) === null || this.stopped || busy()) return null;
      return this.startPoolRebuild(pool, null, 'timer');
    }
    const known = new Set([...entry.volumes].filter((n) => opened.has(n) || unopened.has(n)));
    if (known.size === 0) {
      // Deleted volumes: nothing to retry. Stripes left not rebuilt keep the pool listed.
      // Written only when it changes: every retry interval would commit (and sync) the same record.
      if (entry.volumes.size > 0 || entry.notRebuilt === 0) await this.setIncomplete(pool, entry.notRebuilt === 0 ? null : { ...entry, volumes: known });
      return null;
    }
    if (![...known].some((n) => opened.has(n))) return null;
    return this.startPoolRebuild(pool, known, 'timer');
  }

  /** Pool retries (retryPools) that threw: the pool stays listed and is retried next interval. */
  poolRetryFailures = 0;
  /**
   * Per listed pool, the errors its retries threw that were logged: cleared when a rebuild of it
   * finishes (the timer's or an operator's: it got past the fault) and when it leaves the list
   * (setIncomplete). Cleared only by the timer's own runs and by a pass over a non-empty list,
   * the same fault back later (after an operator's rebuild got past it, or emptied the list) was
   * never logged again: the pool stayed listed, silently (review-rebuild-retry-log-cleared).
   */
  private readonly retryErrorsLogged = new Map<string, Set<string>>();

  /**
   * Logs a pool retry's failure the first time that error is seen for that
   * pool: every retry interval (10 s) would log the same line for as long as
   * the fault stays. (markRunning leaves the timer's PoolRebuildNotRecorded to this.)
   */
  private logRetryFailure(pool: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    let seen = this.retryErrorsLogged.get(pool);
    if (seen === undefined) this.retryErrorsLogged.set(pool, (seen = new Set()));
    if (seen.has(message) || seen.size >= MAX_RETRY_ERRORS_LOGGED) return;
    seen.add(message);
    log.error('retry of an incompletely rebuilt pool failed; the pool stays listed and is retried every retry interval (logged once per distinct error); the other pools are retried', { pool, err: message });
  }

  /**
   * A whole-pool rebuild that fails after marking itself running (a pool going
   * offline mid-way, an index error) is recorded as interrupted: its record
   * said running, and the pool is not known to be fully rebuilt. What the run
   * had in flight settles first (run.settle).
   */
  private async rebuildPoolNow(poolName: string, onlyAsked: Set<string> | null): Promise<PoolRebuildReport> {
    const run: RebuildRun = { markedRunning: false, settle: null };
    try {
      return await this.rebuildPoolRun(poolName, onlyAsked, run);
    } catch (err) {
      await run.settle?.();
      if (run.markedRunning) {
        const was = this.skippedByRebuild.get(poolName);
        await this.setIncomplete(poolName, { volumes: new Set(was?.volumes ?? []), notRebuilt: Math.max(1, was?.notRebuilt ?? 0), store: STORE_UNKNOWN, interrupted: true });
      }
      throw err;
    }
  }

  private async rebuildPoolRun(poolName: string, onlyAsked: Set<string> | null, run: RebuildRun): Promise<PoolRebuildReport> {
    let only = onlyAsked;
    const started = Date.now();
    const report: PoolRebuildReport = {
      pool: poolName,
      complete: false,
      retryOfSkipped: only !== null,
      volumesSkipped: [],
      stripesSkipped: 0,
      stripesChecked: 0,
      objectStripesChecked: 0,
      stripesRebuilt: 0,
      bytesLanded: 0,
      slowPathStripes: 0,
      notRebuilt: 0,
      durationMs: 0,
    };
    if (!this.stripes.coldPoolNames().includes(poolName)) throw new UnknownPool(`no cold pool named ${poolName}`);
    const target = await this.stripes.segmentStore(poolName); // a replaced directory gets a fresh store here
    // A retry of the volumes the last rebuild skipped, with the pool replaced (or lost) again
    // since: every other volume's shards there may be gone again, and a retry looks at those
    // volumes alone (it answered complete and dropped the pool). The whole pool instead.
    if (only !== null && this.skippedByRebuild.get(poolName)?.store !== target) only = null;
    // Upgraded: GET /v1/cold (rebuilding) says so, and a whole-pool request asked from now on shares this run.
    if (only === null && onlyAsked !== null && this.poolRebuild?.pool === poolName) this.poolRebuild.only = null;
    report.retryOfSkipped = only !== null;
    // A retry of skipped volumes has its entry already: a crash during it leaves the pool listed.
    if (only === null) run.markedRunning = await this.markRunning(poolName);
    if (only === null && target !== null) for (const source of this.sources) source.poolRebuildStarting?.(poolName, target);
    // Sources: the other online pools in a fixed order, so every stripe reads
    // the same k pools and each pool's records are read back to back.
    const sourceRank = new Map<string, number>();
    for (const name of this.stripes.coldPoolNames().sort()) if (name !== poolName && (await this.stripes.segmentStore(name)) !== null) sourceRank.set(name, sourceRank.size);
    const landing = new Landing(MAX_LANDING_BYTES);
    const slow: Promise<number>[] = [];
    let window: SyncWindow | null = null;
    const flushes: Promise<void>[] = [];
    let workers: Promise<void>[] = [];
    // Loans of the volumes whose stripes a window holds (giveBackAfterFlips below), ended once it is flushed.
    const windowLoans = new Map<SyncWindow, (() => void)[]>();
    /** Flushes a window (flushWindow, into `flushes`; only with a target), then ends the loans waiting for it. */
    const flushOf = (w: SyncWindow): void => {
      const flushed = this.flushWindow(poolName, target!, w, report);
      flushes.push(flushed);
      const loans = windowLoans.get(w) ?? [];
      windowLoans.delete(w);
      const giveBack = () => {
        for (const r of loans) r();
      };
      void flushed.then(giveBack, giveBack);
    };
    let paused: Promise<void> | null = null; // PAUSE_POOL_REBUILD
    // A run that throws part way (an index read failing): its workers, writes, flushes and
    // slow-path stripes settle, and its last window is flushed as at a normal end (synced, then
    // flipped; flushWindow never rejects: a failed sync or flip leaves its stripes Degraded).
    // Stripes it took and did not land go back to the queue (Degraded). Left Reconstructing,
    // neither a pass nor a later pool rebuild took them again ("a pass has it"): the timer's
    // whole-pool rebuild counted them not rebuilt every time, and the window's write session
    // stayed open. Ended without flips instead, the window's records were dead space no running
    // count knew of, and with the fault still there each retry (every retryIntervalMs) landed the
    // same stripes again: the pool grew by a window per retry (review-rebuild-failure-keeps-landed).
    run.settle = async () => {
      await Promise.allSettled(workers);
      await landing.drain();
      const last = window as SyncWindow | null;
      window = null;
      if (last !== null && target !== null) flushOf(last);
      await Promise.allSettled([...flushes, ...slow]);
      for (const e of this.states.values()) if (e.poolRebuild === report) delete e.poolRebuild;
    };
    // Each volume's chunk map, then each holder source (cold S3 objects and
    // parts): all take the same batched path, listed one holder at a time.
    // A volume that cannot be opened is skipped (named, logged once), not fatal: one offline
    // hot pool must not hold back every other volume's redundancy.
    const listed = this.volumes.list();
    const listing = listed instanceof Promise ? await listed : listed;
    for (const u of only === null ? listing.unavailable : listing.unavailable.filter((x) => only.has(x.volume))) {
      // Its chunk map in the index says whether it has anything on the pool: a closed volume
      // lands no new stripe, so one with none (a hot volume, say) holds nothing back. Deleted
      // meanwhile: nothing either. Without the index: not known, skipped.
      const rec = this.index?.volumes.get(u.volume);
      const stripes = this.index === null ? null : rec === undefined ? 0 : (await this.indexStripes(rec)).filter(([, ref]) => ref.shards.some((sh) => sh.pool === poolName)).length;
      if (stripes === 0) continue;
      report.volumesSkipped.push({ ...u, stripes });
      report.stripesSkipped += stripes ?? 0;
    }
    if (report.volumesSkipped.length > 0) {
      log.warn('pool rebuild skips volumes that cannot be opened; the pool stays not fully rebuilt until they open (retried every retry interval, or rebuild again)', {
        pool: poolName,
        stripes: report.stripesSkipped,
        volumes: report.volumesSkipped.map((u) => `${u.volume}@${u.pool} (${u.stripes ?? 'unknown'} stripes): ${u.error}`).join('; '),
      });
    }
    // Each volume at its turn: an open one borrowed (kept open until its flips are done), a
    // closed one only when its chunk map in the index has a stripe with a shard on the pool (a
    // closed volume lands no new stripe), then given back: the run holds open the volumes of the
    // stripes it has in flight, not every volume (each kept open for good before).
    type Turn = { holder: RebuildHolder } | { volume: string; closed: VolumeRecord | null };
    const turns: Turn[] = [
      ...listing.open.filter((v) => only === null || only.has(v.name)).map((v) => ({ volume: v.name, closed: null })),
      ...listing.closed.filter((r) => only === null || only.has(r.name)).map((r) => ({ volume: r.name, closed: r })),
      ...(only === null ? [...this.sources].map((source) => ({ holder: this.sourceHolder(source) })) : []),
    ];
    // A loan ends once the flips of its stripes are done: those of the windows flushing, and of the one being
    // filled; and its workers have all settled (one that threw ends Promise.all while the others still run).
    const giveBackAfterFlips = (vol: Volume) => {
      const before = Promise.allSettled([...flushes, ...workers]);
      const giveBack = () => void before.then(() => this.volumes.giveBack(vol));
      const w = window as SyncWindow | null;
      if (w === null) return giveBack();
      const loans = windowLoans.get(w);
      if (loans === undefined) windowLoans.set(w, [giveBack]);
      else loans.push(giveBack);
    };
    for (const turn of turns) {
      let lent: Volume | null = null;
      if ('volume' in turn) {
        lent = await this.lendForRebuild(turn.volume, turn.closed, poolName, report);
        if (lent === null) continue;
      }
      const holder = lent !== null ? this.volumeHolder(lent) : (turn as { holder: RebuildHolder }).holder;
      try {
        // Which shards are gone is decided before anything of this holder lands on the pool
        // (a rebuilt record may reuse the place an old reference names), by reading: a record
        // another holder's rebuild put at a stale place fails the identity check.
        const jobs: HolderJob[] = [];
        // Listed up front: no LMDB read transaction stays open across the awaits below.
        for (const [key, ref] of [...holder.list()]) {
          const lost = ref.shards.findIndex((sh) => sh.pool === poolName);
          if (lost < 0) continue;
          report.stripesChecked++;
          if (holder.isSource) report.objectStripesChecked++;
          // Outside every segment the pool's store has: gone, no read needed (the common case).
          const present = target !== null && target.contains(this.stripes.resolve(ref.shards[lost]!)) && (await this.stripes.shardPresent(ref, lost));
          if (present) continue;
          jobs.push({ ref, lost, key, at: ref.shards[lost]!.segment * 2 ** 40 + ref.shards[lost]!.offsetBytes });
        }
        // Write order on the lost pool is write order on the survivors: their records are back to back.
        jobs.sort((a, b) => a.at - b.at);
        let next = 0;
        const worker = async () => {
          let scratch: Buffer | undefined;
          // The group being taken (entries set Reconstructing, not handed on yet): a throw there returns them.
          let taking: { entry: QueuedStripe }[] | null = null;
          try {
            while (next < jobs.length && !this.stopped) {
              const group: { job: HolderJob; key: string; entry: QueuedStripe; keepQueued: boolean }[] = [];
              taking = group;
              while (next < jobs.length && group.length < SCRUB_GROUP_STRIPES) {
                const job = jobs[next++]!;
                const key = holder.queueKey(job.key);
                const cur = this.states.get(key);
                if (cur?.state === 'Reconstructing') {
                  cur.poolRebuild = report; // a pass has it: counted here once it lands
                  continue;
                }
                const now = holder.current(job.key);
                if (now === undefined) continue; // gone (trimmed, promoted, deleted)
                if (!holder.same(now, job.ref)) {
                  // Rewritten, or its records moved by compaction, since it was listed: the
                  // queue's pass checks the current stripe in full (and drops it if whole).
                  holder.requeue(job.key, `pool ${poolName} lost; stripe changed while the rebuild ran`);
                  const queued = this.states.get(key);
                  if (queued !== undefined) queued.poolRebuild = report;
                  continue;
                }
                if (!cur && this.states.size >= this.maxQueued + POOL_REBUILD_GROUPS_AT_ONCE * SCRUB_GROUP_STRIPES) {
                  report.notRebuilt++; // queue full: the next rebuild or scrub finds it
                  continue;
                }
                const entry: QueuedStripe = cur ?? { ...holder.entry(job.key), state: 'Degraded', reason: `pool ${poolName} lost` };
                entry.state = 'Reconstructing';
                entry.poolRebuild = report; // a pass that finishes it (pool offline, flip superseded, slow path) counts it
                this.states.set(key, entry); // bounded: at most the groups in flight beyond the queue's own entries
                // Another shard on a pool that is offline now (not a source): that one is gone too.
                // Kept queued for it while the queue is at most half full: entries the rebuild adds
                // must not crowd out its own in-flight stripes (beyond it the scrub finds them).
                const otherLost = job.ref.shards.some((sh, i) => i !== job.lost && !sourceRank.has(sh.pool));
                group.push({ job, key, entry, keepQueued: cur !== undefined || (otherLost && this.states.size < this.maxQueued / 2) });
              }
              taking = null;
              if (group.length === 0) continue;
              if (target === null) {
                // Nowhere to land on the pool itself: the pass places these elsewhere.
                for (const g of group) g.entry.state = 'Degraded';
                continue;
              }
              let prepared: (PreparedRebuild | null)[];
              try {
                // Scratch only where the JS path needs it (compressed records): the native kernel reads into its own.
                prepared = await this.stripes.prepareLostShards(group.map((g) => g.job), sourceRank, (bytes) => (scratch = this.scratchFor(scratch, bytes)));
              } catch (err) {
                for (const g of group) this.rebuildFailed(holder.label, g.entry, err);
                continue;
              }
              const fast: LandingStripe[] = [];
              prepared.forEach((p, t) => {
                const g = group[t]!;
                if (p !== null) {
                  fast.push({ ...g, holder, prepared: p });
                  return;
                }
                // A source was missing or bad: read every survivor, decode from the good ones.
                report.slowPathStripes++;
                g.entry.state = 'Degraded';
                g.entry.reason = `pool ${poolName} lost; a survivor failed verification`;
                slow.push(this.rebuildOne(g.key, g.entry));
              });
              if (fast.length === 0) continue;
              const lengthBytes = fast.reduce((sum, f) => sum + f.prepared.lengthBytes, 0);
              const w = (window ??= { token: this.stripes.beginWrite(), bytes: 0, writes: [], landed: [] });
              const written = this.writeLost(holder.label, poolName, target, w, fast);
              w.writes.push(written);
              w.bytes += lengthBytes;
              if (w.bytes >= REBUILD_SYNC_BYTES) {
                window = null;
                flushOf(w);
              }
              // Bounds the record buffers held (they are recycled once written).
              await landing.add(written, lengthBytes);
              if (PAUSE_POOL_REBUILD && only === null) await (paused ??= this.pauseRebuild(poolName, written));
            }
          } catch (err) {
            for (const g of taking ?? []) this.rebuildFailed(holder.label, g.entry, err);
            throw err;
          } finally {
            this.returnScratch(scratch);
          }
        };
        workers = Array.from({ length: POOL_REBUILD_GROUPS_AT_ONCE }, worker);
        await Promise.all(workers);
        if (this.stopped) break;
      } finally {
        if (lent !== null) giveBackAfterFlips(lent);
      }
    }
    await landing.drain();
    const last = window as SyncWindow | null;
    window = null; // handed on: a throw after this must not have settle() flush it again
    if (last !== null && target !== null) flushOf(last);
    await Promise.all(flushes);
    await Promise.all(slow); // counted by land() through the entries' poolRebuild tag
    // Stripes superseded while landing, or left for other pools, and those that found no pool
    // during the rebuild (the pool it landed on may be back): counted the same way.
    if (!this.stopped) await this.retryWaiting();
    // Left in the queue (bounded by maxQueuedStripes) with its shard on this pool still gone:
    // not rebuilt. (One queued for another bad shard has this pool's shard back: not counted.)
    // Only the entries this rebuild took (tagged): a stripe it skipped with the queue full is
    // counted above, and a degraded read may have queued it since (untagged): not twice.
    const left = [...this.states.values()].filter((e) => e.poolRebuild === report);
    for (const entry of left) delete entry.poolRebuild;
    for (const { ctx, holder } of left) {
      let ref: StripeRef | undefined;
      try {
        ref = holder ? holder.source.current(holder.key) : (await this.queueVolume(ctx.volumeId))?.stripes.get(ctx.chunkIndex);
      } catch {
        report.notRebuilt++; // its volume stopped opening meanwhile: not looked at, not rebuilt
        continue;
      }
      const i = ref?.shards.findIndex((sh) => sh.pool === poolName) ?? -1;
      if (ref !== undefined && i >= 0 && !(await this.stripes.shardPresent(ref, i))) report.notRebuilt++;
    }
    this.giveBackQueueLoans(); // those the look above borrowed
    // A retry of skipped volumes looked at nothing else: stripes the last whole-pool rebuild
    // left not rebuilt are still missing their shard as far as it knows (counted on).
    const carried = only === null ? 0 : (this.skippedByRebuild.get(poolName)?.notRebuilt ?? 0);
    // Replaced (or lost) during the run: another store now. The stripes it found holding their
    // shard on the disk it started with were passed over as present, and what it flipped before
    // the replacement went there too: gone with that disk, counted nowhere. Answered complete,
    // the pool's entry was dropped (also the one `pools replace` had just written) and nothing
    // rebuilt them (review-rrepl: rebuild-pool-replaced-mid-run). Listed as cut instead: the
    // retry timer rebuilds the whole pool onto the disk there now.
    const replacedDuring = target !== null && (await this.stripes.segmentStore(poolName)) !== target;
    report.complete = !this.stopped && !replacedDuring && report.volumesSkipped.length === 0 && report.notRebuilt === 0 && carried === 0;
    if (!this.stopped && replacedDuring) {
      const was = this.skippedByRebuild.get(poolName);
      const volumes = new Set([...(was?.volumes ?? []), ...report.volumesSkipped.map((u) => u.volume)]);
      await this.setIncomplete(poolName, { volumes, notRebuilt: Math.max(1, carried + report.notRebuilt), store: STORE_UNKNOWN, interrupted: true });
    } else if (!this.stopped) {
      // What is left: a whole-pool rebuild's replaces the last; a retry keeps the volumes still closed.
      const left = { volumes: new Set(report.volumesSkipped.map((u) => u.volume)), notRebuilt: carried + report.notRebuilt, store: target };
      await this.setIncomplete(poolName, left.volumes.size > 0 || left.notRebuilt > 0 ? left : null);
      // Replaced again since the look above (another store now): its disk is not the one rebuilt.
      if (report.complete && target !== null && (await this.stripes.segmentStore(poolName)) === target) {
        for (const source of this.sources) {
          await source.poolRebuilt?.(poolName, target).catch((err: Error) => log.warn('a holder source failed to take note of a complete pool rebuild', { pool: poolName, source: source.prefix, err: err.message }));
        }
      }
    } else if (only === null) {
      // Cut by a stop (close: stop() waits for this, the index still open): the pool is not fully
      // rebuilt, and without an entry it read as rebuilt after the restart. How many stripes are
      // left is not known (holders not reached were not listed): at least one, until a whole-pool
      // rebuild recounts. A retry cut keeps its entry as it was.
      const was = this.skippedByRebuild.get(poolName);
      const volumes = new Set([...(was?.volumes ?? []), ...report.volumesSkipped.map((u) => u.volume)]);
      await this.setIncomplete(poolName, { volumes, notRebuilt: Math.max(1, (was?.notRebuilt ?? 0) + report.notRebuilt), store: target, interrupted: true });
    }
    // Whoever started it, the run got past what failed the pool's earlier retries: the same fault back is logged again.
    this.retryErrorsLogged.delete(poolName);
    report.durationMs = Date.now() - started;
    log.info('pool rebuild finished', { ...report });
    return report;
  }

  /**
   * A volume of a pool rebuild, borrowed for its turn (given back once the
   * flips of its stripes are done), or null when it has nothing to do: a
   * closed one (`closed`: its record as listed) whose chunk map in the index
   * has no stripe with a shard on the pool is not opened; one deleted since
   * it was listed is passed over; one that no longer opens is skipped as
   * those listed unavailable are (named in the report with its stripes there).
   */
  private async lendForRebuild(name: string, closed: VolumeRecord | null, poolName: string, report: PoolRebuildReport): Promise<Volume | null> {
    const onPool = async (rec: VolumeRecord) => (await this.indexStripes(rec)).filter(([, ref]) => ref.shards.some((sh) => sh.pool === poolName)).length;
    if (closed !== null && this.index !== null && (await onPool(closed)) === 0) return null;
    try {
      // The daemon's opens a closed volume a slice at a time (VolumeManager.borrowForPass).
      return await this.volumes.borrow(name);
    } catch (err) {
      const rec = this.index?.volumes.get(name);
      if (this.index !== null && rec === undefined) return null; // deleted meanwhile
      const stripes = rec === undefined ? null : await onPool(rec);
      if (stripes === 0) return null;
      const u = this.volumes.openFailure(name) ?? { volume: name, pool: rec?.poolName ?? '', error: (err as Error).message };
      report.volumesSkipped.push({ ...u, stripes });
      report.stripesSkipped += stripes ?? 0;
      log.warn('pool rebuild skips a volume that no longer opens; the pool stays not fully rebuilt until it opens (retried every retry interval, or rebuild again)', { pool: poolName, volume: name, stripes: stripes ?? 'unknown', err: u.error });
      return null;
    }
  }

  /** A volume's chunk map as a pool rebuild sees it (keys are chunk indexes as strings). */
  private volumeHolder(vol: Volume): RebuildHolder {
    const ctxOf = (key: string): StripeContext => ({ volumeId: vol.rec.id, chunkIndex: Number(key) });
    return {
      label: vol.name,
      isSource: false,
      list: () => [...vol.stripes].map(([c, ref]) => [String(c), ref] as [string, StripeRef]),
      queueKey: (key) => `${vol.rec.id}:${key}`,
      current: (key) => vol.stripes.get(Number(key)),
      // The in-memory map keeps a reference object until the chunk's stripe changes.
      same: (now, listed) => now === listed,
      requeue: (key, reason) => this.enqueue(ctxOf(key), reason),
      entry: (key) => ({ ctx: ctxOf(key) }),
      replace: (key, expected, next) => vol.replaceStripe(Number(key), expected, next),
    };
  }

  /**
   * A holder source's stripes (cold S3 objects and parts) as a pool rebuild
   * sees them: the same batched path as volumes (k survivors read, CRC
   * checked; a failing one sends the stripe down the per-stripe path), the
   * source's compare-and-swap flips each stripe.
   */
  private sourceHolder(source: StripeHolderSource): RebuildHolder {
    return {
      label: source.prefix,
      isSource: true,
      list: () => source.list(),
      queueKey: (key) => `${source.prefix}:${key}`,
      current: (key) => source.current(key),
      // Read afresh from LMDB each time (a new object): compared by value.
      same: (now, listed) => sameStripeAt(now, listed),
      requeue: (key, reason) => this.enqueueHolder(source, key, reason),
      entry: (key) => ({ ctx: { volumeId: -1, chunkIndex: -1 }, holder: { source, key } }),
      replace: (key, expected, next) => source.replace(key, expected, next),
      ...(source.replaceMany ? { replaceMany: (flips: readonly HolderFlip[]) => source.replaceMany!(flips) } : {}),
    };
  }

  /**
   * Issues a window's flips, all in this tick: through the holder's
   * replaceMany where it has one (one transaction for all of that holder's
   * stripes in the window, each record written once), else one replace()
   * per stripe. One promise per landed stripe, in order.
   */
  private issueFlips(landed: SyncWindow['landed']): Promise<boolean>[] {
    const out: Promise<boolean>[] = new Array<Promise<boolean>>(landed.length);
    const batches = new Map<RebuildHolder, number[]>();
    landed.forEach((l, t) => {
      const holder = l.stripe.holder;
      if (holder.replaceMany === undefined) {
        out[t] = holder.replace(l.stripe.job.key, l.stripe.job.ref, l.next);
        return;
      }
      const batch = batches.get(holder);
      if (batch) batch.push(t);
      else batches.set(holder, [t]);
    });
    for (const [holder, batch] of batches) {
      const all = holder.replaceMany!(batch.map((t) => ({ key: landed[t]!.stripe.job.key, expected: landed[t]!.stripe.job.ref, next: landed[t]!.next })));
      batch.forEach((t, i) => (out[t] = all.then((r) => r[i]!)));
    }
    return out;
  }

  /** Writes one group of a pool rebuild (not yet durable) into `w`; never rejects. */
  private async writeLost(label: string, poolName: string, target: SegmentStore, w: SyncWindow, fast: LandingStripe[]): Promise<void> {
    try {
      const next = await this.stripes.landLostShards(poolName, target, fast.map((f) => ({ ref: f.job.ref, prepared: f.prepared })));
      fast.forEach((f, t) => w.landed.push({ stripe: f, next: next[t]! }));
    } catch (err) {
      for (const f of fast) this.rebuildFailed(label, f.entry, err);
    }
  }

  /**
   * Makes a window's writes durable (one fdatasync), then flips the index of
   * each stripe in it (compare-and-swap: a stripe rewritten or moved since
   * it was read is not flipped; the reconstruction pass looks at it again).
   * The flips are issued together, so lmdb-js commits them in one batch with
   * one sync; a holder source's go in one transaction (issueFlips). Never rejects.
   */
  private async flushWindow(poolName: string, target: SegmentStore, w: SyncWindow, report: PoolRebuildReport): Promise<void> {
    try {
      await Promise.all(w.writes);
      try {
        await target.sync();
        // The pool's directory may have been lost or replaced since these records were
        // written: the sync then made them durable in an unlinked file (and synced the
        // new directory by its path). Flip only onto the pool's current store.
        if ((await this.stripes.segmentStore(poolName)) !== target) {
          throw new NoSuitablePool(`pool ${poolName} was lost or replaced while its rebuild landed`);
        }
      } catch (err) {
        for (const l of w.landed) this.rebuildFailed(l.stripe.holder.label, l.stripe.entry, err);
        return;
      }
      const flips = this.issueFlips(w.landed);
      this.stripes.endWrite(w.token); // the flips are issued: compaction may look at these segments again
      const results = await Promise.allSettled(flips);
      results.forEach((r, t) => {
        const { stripe } = w.landed[t]!;
        if (r.status === 'rejected') return this.rebuildFailed(stripe.holder.label, stripe.entry, r.reason);
        if (!r.value) {
          stripe.entry.state = 'Degraded';
          stripe.entry.reason = 'stripe superseded while its rebuild landed; retried';
          return;
        }
        this.rebuiltStripes++;
        report.stripesRebuilt++;
        report.bytesLanded += stripe.prepared.lengthBytes;
        if (stripe.keepQueued) {
          // Queued before this rebuild took it (a degraded read, a scrub, another lost pool
          // waiting for a pool), or with a shard on another offline pool: only this pool's
          // shard was rebuilt, another may still be bad.
          // The next pass checks the stripe in full and drops it if whole. Deleting it here
          // left a stripe missing a second lost pool's shard out of the queue, counted Healthy
          // and never retried (test/review-cold-rebuild-keeps-queued).
          delete stripe.entry.poolRebuild; // counted here, not again by the pass
          stripe.entry.state = 'Degraded';
          stripe.entry.reason = `pool ${poolName} shard rebuilt; the other shards are checked again`;
          return;
        }
        this.states.delete(stripe.key);
      });
    } finally {
      this.stripes.endWrite(w.token);
    }
  }

  /**
   * A read scratch of at least `bytes` for a scan worker: `held` if big
   * enough, else one kept from an earlier scan, else a new one. Scans reuse
   * them because every fresh 16-48 MiB buffer counts as external memory and
   * V8 answered each scan's with a scavenge and a mark-compact (6-37 ms
   * pauses per pool rebuild on the 2-core VM, `--trace-gc`).
   */
  private scratchFor(held: Buffer | undefined, bytes: number): Buffer {
    if (held !== undefined && held.length >= bytes) return held;
    this.returnScratch(held);
    const i = this.spareScratch.findIndex((b) => b.length >= bytes);
    if (i >= 0) return this.spareScratch.splice(i, 1)[0]!;
    return Buffer.allocUnsafe(bytes);
  }

  /** Keeps a worker's scratch for the next scan (bounded), dropped after SCRATCH_KEEP_MS unused. */
  private returnScratch(b: Buffer | undefined): void {
    if (b === undefined) return;
    if (this.spareScratch.length < MAX_SPARE_SCRATCH) this.spareScratch.push(b);
    clearTimeout(this.scratchTimer);
    this.scratchTimer = setTimeout(() => (this.spareScratch.length = 0), SCRATCH_KEEP_MS);
    this.scratchTimer.unref();
  }
  private readonly spareScratch: Buffer[] = [];
  private scratchTimer: NodeJS.Timeout | undefined;

  /** PAUSE_POOL_REBUILD: once `written` (a run's first group) is on the pool, says so on stdout and waits for stop(). */
  private async pauseRebuild(pool: string, written: Promise<void>): Promise<void> {
    await written; // never rejects (writeLost)
    if (this.stopped) return;
    if (this.stopSignal === null) {
      let resolve!: () => void;
      const stopped = new Promise<void>((r) => (resolve = r));
      this.stopSignal = { stopped, resolve };
    }
    process.stdout.write(`couchestor paused pool-rebuild ${JSON.stringify({ pool })}\n`);
    await this.stopSignal.stopped;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal?.resolve();
    for (const t of this.timers) clearInterval(t);
    await this.running;
    await this.scrubbing;
    await this.poolRebuild?.done.catch(() => undefined);
    await this.nextRebuild?.done.catch(() => undefined); // refuses to start once stopped
    clearTimeout(this.scratchTimer);
    this.spareScratch.length = 0;
  }
}

/**
 * A pool rebuild makes its writes durable and flips their stripes once per
 * this many bytes landed (and at its end): one fdatasync and one LMDB commit
 * per window instead of one per group (16 MiB windows measured slower:
 * 0.50/0.76x vs 0.79/0.85x interleaved, each sync stalls the appends behind it). Bounds what a crash mid-rebuild
 * costs (written but unflipped records are dead space, redone by the next
 * rebuild) and the window's list of flips (one entry per 256 KiB record).
 */
export const REBUILD_SYNC_BYTES = 64 * 1024 * 1024;

/**
 * What a pool rebuild needs of a stripe holder (a volume's chunk map, or a
 * registered source): its stripes keyed by holder key, the reference it
 * holds now, and its compare-and-swap flip.
 */
interface RebuildHolder {
  label: string;
  /** A holder source (counted in objectStripesChecked). */
  isSource: boolean;
  list(): Iterable<[string, StripeRef]>;
  /** The reconstruction queue's key of the holder's stripe `key`. */
  queueKey(key: string): string;
  current(key: string): StripeRef | undefined;
  /** `now` (current) is still the stripe `listed` was. */
  same(now: StripeRef, listed: StripeRef): boolean;
  /** Leaves the stripe to the queue's pass. */
  requeue(key: string, reason: string): void;
  /** A new queue entry's identity fields. */
  entry(key: string): Pick<QueuedStripe, 'ctx' | 'holder'>;
  replace(key: string, expected: StripeRef, next: StripeRef): Promise<boolean>;
  /** The source's batched flip (StripeHolderSource.replaceMany), where it has one. */
  replaceMany?(flips: readonly HolderFlip[]): Promise<boolean[]>;
}

interface HolderJob extends LostShardJob {
  /** The holder's key of the stripe. */
  key: string;
  /** Sort key: the lost shard's old place. */
  at: number;
}

interface LandingStripe {
  job: HolderJob;
  key: string;
  entry: QueuedStripe;
  /**
   * Left queued once flipped: it was queued before the rebuild took it (maybe
   * for another shard too), or another of its shards is on an offline pool.
   */
  keepQueued: boolean;
  holder: RebuildHolder;
  prepared: PreparedRebuild;
}

/** A pool rebuild's writes since its last sync, and the write session that keeps compaction off them. */
/**
 * How the scrub and the pool rebuilds reach the volumes (the daemon's
 * VolumeManager: volumesForPass, borrowVolume, giveBack, openFailure).
 */
export interface PassVolumes {
  open: Volume[];
  closed: VolumeRecord[];
  unavailable: UnavailableVolume[];
}

export interface PassVolumeSource {
  /** Every volume: the open ones, the closed ones (records: their chunk maps are in the index) and those that cannot be opened now; opens none that may open. */
  list(): PassVolumes | Promise<PassVolumes>;
  /** The volume, open until given back; throws (rejects) as an open does. The daemon's opens a closed one a slice at a time (a promise). */
  borrow(name: string): Volume | Promise<Volume>;
  giveBack(vol: Volume): void;
  /** The recorded failure of the volume's last open, if it failed. */
  openFailure(name: string): UnavailableVolume | undefined;
}

interface SyncWindow {
  token: number;
  bytes: number;
  writes: Promise<void>[];
  landed: { stripe: LandingStripe; next: StripeRef }[];
}

export interface PoolRebuildReport {
  pool: string;
  /**
   * Every stripe with a shard on the pool was looked at and none is left
   * missing it: no volume skipped, notRebuilt 0, not stopped. False while a
   * volume that could not be opened was skipped (volumesSkipped). For a
   * retryOfSkipped rebuild: of the volumes the pool's last rebuild skipped
   * (the others were looked at by that one), and false while stripes that
   * rebuild left not rebuilt are outstanding (incompleteRebuilds' notRebuilt).
   */
  complete: boolean;
  /**
   * A retry timer's rebuild of only the volumes an earlier rebuild of the pool
   * skipped (no holder source). False for a retry that found the pool replaced
   * again since: that one rebuilds the whole pool.
   */
  retryOfSkipped: boolean;
  /**
   * Volumes with stripes on the pool that could not be opened (pool offline,
   * EIO), with the pool: their stripes were not looked at. `stripes`: how
   * many have a shard on the pool, from the index (null: no index to read).
   */
  volumesSkipped: (UnavailableVolume & { stripes: number | null })[];
  /** Sum of volumesSkipped's stripes. */
  stripesSkipped: number;
  /** Stripes with a shard on the pool (volumes' and holder sources'). */
  stripesChecked: number;
  /** Of stripesChecked, those of holder sources (cold S3 objects and parts). */
  objectStripesChecked: number;
  /**
   * Stripes whose shard was rebuilt (durable, index flipped) while the
   * rebuild ran: onto the pool, or by the per-stripe path or the final queue
   * pass (stripes superseded while landing; with the pool offline, every
   * stripe) wherever a pool was free.
   */
  stripesRebuilt: number;
  /** Bytes of shard records landed for them (the slow path's include any corrupt survivor it rebuilt too). */
  bytesLanded: number;
  /** Stripes where a chosen survivor was missing or failed verification, rebuilt from all survivors instead. */
  slowPathStripes: number;
  /** Stripes still missing their shard of this pool at the end (Degraded/Failed: see GET /v1/cold). */
  notRebuilt: number;
  durationMs: number;
}

/** A rebuild of another pool is running. */
/** Who started a pool rebuild: an operator (POST /v1/rebuild, `couchestor rebuild`) or the retry timer. */
export type RebuildStarter = 'operator' | 'timer';

export class PoolRebuildBusy extends Error {
  override name = 'PoolRebuildBusy';
}

/** The pool named is not a cold pool. */
export class UnknownPool extends Error {
  override name = 'UnknownPool';
}

/** A whole-pool rebuild could not record in the index that it runs: it lands nothing (the message names the pool and the cause). */
export class PoolRebuildNotRecorded extends Error {
  override name = 'PoolRebuildNotRecorded';
}

export interface ScrubReport {
  /** Stripes of the volumes that opened (and of holder sources). */
  stripesChecked: number;
  /** Of those, stripes found bad (queued and rebuilt). */
  badStripes: number;
  durationMs: number;
  /**
   * Volumes the pass could not open (pool offline, EIO), with the pool: their
   * stripes were verified from the index (skipped*) but nothing of theirs was repaired.
   */
  volumesSkipped: UnavailableVolume[];
  /** Stripes of volumesSkipped, listed from the index and verified (read-only). */
  skippedStripesChecked: number;
  /** Of those, stripes with a missing or bad shard: not repaired until the volume opens. */
  skippedBadStripes: number;
  /** The first MAX_REPORTED_SKIPPED_DAMAGE of them. */
  skippedDamage: { volume: string; chunkIndex: number; badShards: number[] }[];
  /** Holder source records (S3 objects, parts) too damaged to list their stripes: skipped, their stripes not checked. */
  damagedRecords: number;
  /** The first MAX_REPORTED_DAMAGED_RECORDS of them: "source db bucket/key: problem". */
  damagedRecordNames: string[];
}

/** Damaged records a scrub report names (the count has them all). */
export const MAX_REPORTED_DAMAGED_RECORDS = 100;

/** Damaged stripes of unopenable volumes a scrub report names (the count has them all). */
export const MAX_REPORTED_SKIPPED_DAMAGE = 100;

/** One pool rebuild run, as rebuildPoolNow sees it if the run throws. */
interface RebuildRun {
  /** Its record was marked running: a failure marks it interrupted. */
  markedRunning: boolean;
  /** Waits for what the run has in flight and returns the stripes it took to the queue (set once it has any). */
  settle: (() => Promise<void>) | null;
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

  async add(landed: Promise<unknown>, lengthBytes: number): Promise<void> {
    while (this.inFlight.size > 0 && this.bytes + lengthBytes > this.maxBytes) await Promise.race(this.inFlight);
    this.bytes += lengthBytes;
    const tracked: Promise<void> = landed.then(() => undefined).finally(() => {
      this.bytes -= lengthBytes;
      this.inFlight.delete(tracked);
    });
    this.inFlight.add(tracked);
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }
}
