// Space reclaim for the cold tier: dead-byte accounting per segment file
// (persisted in LMDB) and the background job that compacts segments whose
// dead fraction is high.
//
// Compacting segment S of pool P (DESIGN.md: old bytes are freed only after
// the index flip; nothing is written over the only good copy). A pass takes
// its segments in groups (at most segmentsPerScan segments, groupCopyBytes
// live bytes): steps 1 and 5 read the index once for a whole group, not
// once per segment, so a pass over S segments reads it about 2*S/group
// times instead of 2*S; steps 2-4 run one segment after another.
//  1. S's live records are found from the index itself (volume chunk map in
//     LMDB and in memory, cold S3 objects and parts), never from the hints,
//     plus the records of references readers hold (StripeStore.hold: a GET
//     of a version overwritten since, a read begun before a destage freed
//     its stripe), which are copied too but have no index entry to flip;
//  2. they are copied to P's head segment, durable (writev + fdatasync), a
//     batch at a time, throttled;
//  3. the stripe store learns old place -> copy (readers and free() calls
//     holding a reference from before the flip follow it);
//  4. one LMDB transaction per batch rewrites every index entry that has a
//     shard at a copied place. The rewrite substitutes a place for another
//     holding the same bytes, so whatever the entry holds when the
//     transaction runs (it re-reads it there: that is the compare-and-swap),
//     the result is correct; an entry rewritten meanwhile to a new stripe has
//     no shard in S and is left alone. Open volumes' in-memory maps follow;
//  5. S is deleted only once every write session begun before the pass has
//     ended and a final look at the index (one read snapshot taken after
//     every write queued before it has committed, read in slices) finds
//     nothing pointing into S, nor a held reference (at the snapshot or
//     after the scan) whose forwards still lead into it.
// A SIGKILL before 4 commits leaves S referenced and the copies orphans;
// after it, S unreferenced but present. The start-up recount marks either
// kind dead, so the next pass reclaims it; fsck reports them as orphans.
import { statSync } from 'node:fs';
import type { Database, Key, Transaction } from 'lmdb';
import { Counter, type Registry } from 'prom-client';
import { log } from '../../log.js';
import { ChunkState, type ChunkEntry, type MetaStore } from '../meta/store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, coldStripeRefs, moveColdStripes } from '../objects/cold-segments.js';
import { DamagedIndexRecord, describeIndexKey, openIndexDB, recordDamage } from '../objects/cold-holders.js';
import type { SegmentLocation, SegmentStore } from './segment-store.js';
import type { DeadShardOf, ShardRef, StripeRef, StripeStore } from './stripe-store.js';

export interface CompactionOptions {
  /** How often the job looks for segments to compact (0 = only when asked, runOnce). */
  intervalMs: number;
  /** A sealed segment is compacted once at least this fraction of its bytes is dead (0 < x <= 1). */
  deadFraction: number;
  /** Copy rate limit of the background job; runOnce({ unthrottled }) ignores it. */
  maxBytesPerSecond: number;
  /** Live bytes copied (and flipped in one transaction) per batch. */
  batchBytes: number;
  /** Longest wait for write sessions begun before a deletion (uploads in flight); past it the segment waits for a later pass. */
  settleTimeoutMs: number;
  /** Index entries a scan of the index (the recount, a compaction's looks at a segment) reads between two yields to the event loop. */
  recountSliceEntries: number;
  /**
   * Segments one scan of the index looks at (a group shares its first look
   * and its final look). Bounds the memory of a group: one map entry per
   * live record of its segments, one per index entry holding them.
   */
  segmentsPerScan: number;
  /**
   * Live bytes a group copies before its segments are deleted (at least one
   * segment's, whatever it holds): the disk space held twice at once.
   * One segment at a time held at most that segment's live bytes.
   */
  groupCopyBytes: number;
}

export const DEFAULT_COMPACTION_OPTIONS: CompactionOptions = {
  intervalMs: 30_000,
  deadFraction: 0.5,
  maxBytesPerSecond: 64 * 1024 * 1024,
  batchBytes: 8 * 1024 * 1024,
  settleTimeoutMs: 60_000,
  // 100,000 entries took ~2 s in ~100 slices at load 7 (bench/cold-fresh-pool-open): ~20 ms a slice there;
  // 256 a slice measured no lower worst-case delay (the rest is the collector and the load).
  recountSliceEntries: 1024,
  segmentsPerScan: 64,
  // One default segment (256 MiB): compacting one segment at a time held up to its live bytes (< half of it at deadFraction 0.5).
  groupCopyBytes: 256 * 1024 * 1024,
};

/**
 * Places told dead on a pool whose store may hold stale places, waiting for
 * their header check (StripeStore.holdsShard). Past it a place is counted
 * unchecked (over-counted, as before the checks: compaction finds live
 * records from the index, never from the hints).
 */
export const MAX_PENDING_DEAD_CHECKS = 65_536;
/** Header checks in flight at once (64-byte reads). */
export const DEAD_CHECKS_AT_ONCE = 16;

export interface CompactionStats {
  segmentsCompactedTotal: number;
  /** Segment bytes deleted minus live bytes copied out of them. */
  reclaimedBytesTotal: number;
  copiedBytesTotal: number;
  /** Segments left in place by a pass: still referenced, corrupt live records, or writes not settled. */
  segmentsDeferredTotal: number;
  passes: number;
  /** Passes refused because an S3 index record is damaged (CompactionRefused): nothing copied or deleted by them. */
  passesRefusedDamagedRecord: number;
  /** Dead bytes the accounting holds now, over every cold pool. */
  deadBytes: number;
  /** A pass is in progress. */
  running: boolean;
}

export interface PassReport {
  segmentsCompacted: number;
  reclaimedBytes: number;
  copiedBytes: number;
  segmentsDeferred: number;
}

/** What the job needs of the volumes (the manager's open volumes). */
export interface OpenVolumeView {
  readonly rec: { readonly id: number };
  readonly stripes: Map<number, StripeRef>;
  /** Old stripes kept by a preserving migration (Volume.preserved): referenced like live ones. */
  readonly preserved?: Map<number, StripeRef>;
}

interface ObjectLike {
  segments: { kind: string }[];
}
interface PartLike {
  segment: { kind: string };
}

/** What a recount in progress is told (SegmentCompactor.sinceRecount). */
interface SinceRecount {
  /** Places told dead since the instant, at most MAX_PENDING_DEAD_CHECKS. */
  freed: { key: string; offsetBytes: number; lengthBytes: number }[];
  /** Bytes told dead past that bound, per segment: added unchecked. */
  overflowBytes: Map<string, number>;
  replaced: Set<string>;
}

/** A sealed segment a pass compacts. */
interface Candidate {
  pool: string;
  store: SegmentStore;
  segment: number;
  sizeBytes: number;
  /** Its dead-byte hint when the pass began. */
  deadBytes: number;
}

/** What a look at the index found in one segment: live places (offset -> length) and the entries holding them (by holderId). */
interface SegmentLook {
  live: Map<number, number>;
  holders: Map<string, Holder>;
}

/** An index entry that holds stripe references. */
type Holder = { kind: 'chunk'; key: [number, number] } | { kind: 'object'; key: Buffer } | { kind: 'part'; key: Buffer };

function segKey(pool: string, segment: number): string {
  return `${pool}\u0000${segment}`;
}

/** A record's place: pool, segment, offset. */
function placeKey(s: ShardRef): string {
  return `${s.pool}\u0000${s.segment}\u0000${s.offsetBytes}`;
}

/** The references of one chunk-map entry (forEachRef). */
function visitChunk(volumeId: number, chunkIndex: number, entry: ChunkEntry, visit: (ref: StripeRef, holder: Holder | null) => void): void {
  if (entry.state === ChunkState.Cold && entry.stripe) visit(entry.stripe, { kind: 'chunk', key: [volumeId, chunkIndex] });
  // Kept by a preserving migration: referenced until `volumes release` (any chunk state).
  if (entry.preserved) visit(entry.preserved, { kind: 'chunk', key: [volumeId, chunkIndex] });
}

/**
 * The references of one object record. A record damaged where it could
 * name cold stripes (recordDamage scope 'stripes': a segment kind garbled,
 * segments not a list, a stripe reference unreadable) throws DamagedIndexRecord:
 * read as it is, its cold stripes look unreferenced (coldStripeRefs skips a
 * kind it does not know) and compaction would delete them; every scan that
 * decides what is live (the looks, the recount, forEachRef) goes through here.
 */
function visitObject(meta: MetaStore, key: Key, value: ObjectLike, visit: (ref: StripeRef, holder: Holder | null) => void): void {
  const k = Buffer.from(key as Buffer);
  // Damage that can hide cold stripes only ('stripes', as the pool rebuild's
  // listing): a hot segment's damaged fileId or length names no stripe, and
  // refusing on it stopped compaction node-wide for a record in a hot bucket.
  const problem = recordDamage(value, 'segments', 'stripes');
  if (problem !== null) throw damagedRecord(meta, 'objects', k, problem);
  for (const ref of coldStripeRefs(value.segments)) visit(ref, { kind: 'object', key: k });
}

/** The references of one part record; a damaged one throws (see visitObject). */
function visitPart(meta: MetaStore, key: Key, value: PartLike, visit: (ref: StripeRef, holder: Holder | null) => void): void {
  const k = Buffer.from(key as Buffer);
  const problem = recordDamage(value, 'segment', 'stripes');
  if (problem !== null) throw damagedRecord(meta, 'parts', k, problem);
  for (const ref of coldStripeRefs([value.segment])) visit(ref, { kind: 'part', key: k });
}

function damagedRecord(meta: MetaStore, db: 'objects' | 'parts', key: Buffer, problem: string): DamagedIndexRecord {
  return new DamagedIndexRecord({ db, key, problem }, describeIndexKey(meta, db, key));
}

/**
 * Test hook (test/cold-segment-compaction's SIGKILL case,
 * serve-stop-ends-api-compaction): with
 * COUCHESTOR_TEST_PAUSE_COMPACTION=POINT in the daemon's environment, the
 * first pass to reach POINT prints `couchestor paused compaction POINT
 * {"pool":...,"segment":N}` on stdout and holds there until stop() (a kill
 * then lands mid-pass for certain; polling `running` could see a pass end
 * first). POINT: `before-flip` (a batch copied to the head, not flipped),
 * `after-flip` (the first batch's index flip made), `before-delete` (every
 * copy flipped, the final look found the segment unreferenced). Read once at
 * start; unset, it costs one comparison per batch and per deletion.
 */
const PAUSE_COMPACTION_AT = process.env.COUCHESTOR_TEST_PAUSE_COMPACTION ?? null;

/**
 * A compaction pass refused because an S3 index record is damaged: what it
 * references cannot be told, so no segment is copied or deleted until the
 * record is repaired or removed (fsck names it).
 */
export class CompactionRefused extends Error {
  override name = 'CompactionRefused';
  constructor(readonly damaged: DamagedIndexRecord) {
    super(`segment compaction refused: ${damaged.message}; no segment is compacted until the record is repaired or removed (fsck lists damaged records)`);
  }
}

export class SegmentCompactor {
  private readonly opts: CompactionOptions;
  private readonly objects: Database<ObjectLike, Buffer>;
  private readonly parts: Database<PartLike, Buffer>;
  /** Dead bytes per "pool\0segment" (mirror of meta.segmentDeadBytes); bounded by the number of segments. */
  private readonly dead = new Map<string, number>();
  private readonly stats_: Omit<CompactionStats, 'deadBytes' | 'running'> = {
    segmentsCompactedTotal: 0,
    reclaimedBytesTotal: 0,
    copiedBytesTotal: 0,
    segmentsDeferredTotal: 0,
    passes: 0,
    passesRefusedDamagedRecord: 0,
  };
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<PassReport> | null = null;
  private stopped = false;
  private wakeSleep: (() => void) | null = null;
  /** Called by stop(): a pass waiting for volume deletes under way (passNow) ends then, not once they end. */
  private stopRequested!: () => void;
  private readonly stopRequest = new Promise<void>((resolve) => (this.stopRequested = resolve));
  /** PAUSE_COMPACTION_AT: taken by the first pass to reach the point; resolved by stop(). */
  private testPause: { held: Promise<void>; release: () => void } | null = null;
  /**
   * Test hook for in-process tests (compaction-sliced-under-writes,
   * review-compaction-final-look-moved-ref): awaited between a look's objects
   * scan and its parts scan, with the look's snapshot kind, so a reference
   * moving from a part to its object lands there for certain. Null (always,
   * outside those tests): one null test per look.
   */
  betweenObjectsAndParts: ((snapshot: 'per-slice' | 'snapshot') => Promise<void>) | null = null;
  private recounted = false;
  /**
   * Dead places on pools whose store may hold stale places, checked before
   * they are counted: a reference from before a pool was replaced names
   * another record's bytes there, or none, and counting them (as before)
   * over-counted the new store's segments until the next start's recount.
   */
  private readonly deadChecks: { at: ShardRef; of: DeadShardOf; epoch: number }[] = [];
  private checking: Promise<void> | null = null;
  /** Bumped by each recount's index snapshot: a check of a place freed before it is not counted again. */
  private recountEpoch = 0;
  /** Places counted without their check because deadChecks was full (MAX_PENDING_DEAD_CHECKS). */
  uncheckedDeadPlaces = 0;
  /**
   * Checked places that held nothing yet (beyond their store's written end),
   * by place: a rebuild of that very stripe may still land its record there
   * and lose its flip (StripeStore.onLostFlipAtSamePlace), which re-checks
   * the place. Usually another record fills it, or nothing: dropped oldest
   * first past MAX_PENDING_DEAD_CHECKS (then not counted, as before).
   */
  private readonly parkedChecks = new Map<string, { at: ShardRef; of: DeadShardOf; epoch: number }>();
  /** Places of lost flips no parked check named yet (its check may be in flight); bounded as parkedChecks. */
  private readonly lostFlipPlaces = new Set<string>();
  /** The recount in progress (concurrent calls share it). */
  private recounting: Promise<void> | null = null;
  /**
   * While a recount reads the index: places told dead since its instant
   * (recountNow says which are added on top of what it counts), and the
   * pools whose store was replaced meanwhile (what it counted for them is
   * stale). Bounded: MAX_PENDING_DEAD_CHECKS places, then bytes per segment.
   */
  private sinceRecount: SinceRecount | null = null;
  /**
   * While a group's segments are copied (compactGroup): its first look, by
   * pool then segment. A place counted dead since (addDead) leaves its live
   * map, so it is not copied: the look was taken before the group's first
   * copy, and a copy of a freed record is referenced by nothing and told
   * dead to no one (its bytes counted live until a restart's recount).
   * Bounded by the group's live records.
   */
  private groupLook: Map<string, Map<number, SegmentLook>> | null = null;

  constructor(
    private readonly stripes: StripeStore,
    private readonly meta: MetaStore,
    private readonly openVolumes: () => Iterable<OpenVolumeView>,
    opts: Partial<CompactionOptions> = {},
  ) {
    this.opts = { ...DEFAULT_COMPACTION_OPTIONS, ...opts };
    if (!(this.opts.deadFraction > 0 && this.opts.deadFraction <= 1)) throw new RangeError(`deadFraction must be in (0, 1], got ${this.opts.deadFraction}`);
    if (!(Number.isInteger(this.opts.recountSliceEntries) && this.opts.recountSliceEntries >= 1)) throw new RangeError(`recountSliceEntries must be a positive integer, got ${this.opts.recountSliceEntries}`);
    if (!(Number.isInteger(this.opts.segmentsPerScan) && this.opts.segmentsPerScan >= 1)) throw new RangeError(`segmentsPerScan must be a positive integer, got ${this.opts.segmentsPerScan}`);
    if (!(this.opts.groupCopyBytes >= 0)) throw new RangeError(`groupCopyBytes must be >= 0, got ${this.opts.groupCopyBytes}`);
    // A record whose bytes do not decode reads as damage (openIndexDB) and refuses the pass like any that can hide stripes.
    this.objects = openIndexDB<ObjectLike>(meta, OBJECTS_DB);
    this.parts = openIndexDB<PartLike>(meta, PARTS_DB);
    for (const { key, value } of meta.segmentDeadBytes.getRange()) this.dead.set(segKey(key[0], key[1]), value);
    stripes.onShardsDead = (shards, of) => this.markDead(shards, of);
    stripes.onLostFlipAtSamePlace = (shards) => this.lostFlipAt(shards);
    stripes.onStoreReplaced = (pool, fresh) => this.resetPool(pool, fresh);
    // Pool marks (a replaced pool told from a new one at O(1)): a no-op if the manager attached it already.
    stripes.useIndex(meta);
  }

  /** Starts the background job (a recount first, then a pass every intervalMs). */
  start(): void {
    if (this.opts.intervalMs <= 0 || this.timer || this.stopped) return;
    const tick = () => {
      this.timer = null;
      this.runOnce()
        .catch((err: Error) => {
          if (!(err instanceof CompactionRefused)) log.warn('segment compaction pass failed', { err: err.message }); // a refusal: logged by pass()
        })
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.opts.intervalMs);
        });
    };
    this.timer = setTimeout(tick, Math.min(this.opts.intervalMs, 1000));
  }

  /** Stops the job: a pass in progress ends after its current batch (its copies become orphans, reclaimed later). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopRequested();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.wakeSleep?.();
    this.testPause?.release();
    await this.running?.catch(() => undefined);
    // A recount called directly (not from a pass) holds a read snapshot until it ends.
    await this.recounting?.catch(() => undefined);
    await this.deadSettled();
    this.stripes.onShardsDead = null;
    this.stripes.onLostFlipAtSamePlace = null;
    this.stripes.onStoreReplaced = null;
  }

  stats(): CompactionStats {
    let deadBytes = 0;
    for (const v of this.dead.values()) deadBytes += v;
    return { ...this.stats_, deadBytes, running: this.running !== null };
  }

  /** Per segment of every online cold pool: size, dead bytes (the hint), head. For the admin API. */
  async segments(): Promise<{ pool: string; segment: number; sizeBytes: number; deadBytes: number; head: boolean }[]> {
    const out = [];
    for (const { pool, store } of await this.coldStores()) {
      for (const s of store.segments()) out.push({ pool, segment: s.segment, sizeBytes: s.sizeBytes, deadBytes: Math.min(s.sizeBytes, this.dead.get(segKey(pool, s.segment)) ?? 0), head: s.head });
    }
    return out;
  }

  /**
   * One pass: compacts, one segment at a time, every sealed segment over the
   * dead fraction. Concurrent calls share the pass in progress.
   */
  runOnce(opts: { unthrottled?: boolean } = {}): Promise<PassReport> {
    if (this.running) return this.running;
    if (this.stopped) return Promise.resolve({ segmentsCompacted: 0, reclaimedBytes: 0, copiedBytes: 0, segmentsDeferred: 0 });
    const p = this.pass(opts.unthrottled === true).finally(() => {
      this.running = null;
    });
    this.running = p;
    return p;
  }

  /**
   * Counts places no index references any more. One on a pool whose store
   * was opened empty in this process while marked written (lost and
   * replaced, or emptied: StripeStore.mayHoldStalePlaces) is counted only if
   * its record is there (StripeStore.holdsShard), so the count equals what
   * a recount from the index finds: a stale reference's place there holds
   * another record (live, or counted when that one is freed) or nothing.
   */
  private markDead(shards: ShardRef[], of?: readonly DeadShardOf[]): void {
    const now: ShardRef[] = [];
    shards.forEach((s, i) => {
      const o = of?.[i];
      if (o === undefined || !this.stripes.mayHoldStalePlaces(s.pool)) return void now.push(s);
      if (this.deadChecks.length >= MAX_PENDING_DEAD_CHECKS) {
        this.uncheckedDeadPlaces++;
        return void now.push(s);
      }
      this.deadChecks.push({ at: s, of: o, epoch: this.recountEpoch });
    });
    this.addDead(now);
    if (this.deadChecks.length > 0) this.checking ??= this.runDeadChecks();
  }

  private async runDeadChecks(): Promise<void> {
    try {
      while (this.deadChecks.length > 0) {
        const batch = this.deadChecks.splice(0, DEAD_CHECKS_AT_ONCE);
        const held = await Promise.all(batch.map((c) => this.stripes.holdsShard(c.at, c.of)));
        batch.forEach((c, i) => {
          if (held[i] !== 'unwritten') return;
          const key = placeKey(c.at);
          // A rebuilt record of this stripe landed there since and lost its flip: look again.
          if (this.lostFlipPlaces.delete(key)) return void this.deadChecks.push(c);
          this.parkedChecks.delete(key);
          this.parkedChecks.set(key, c);
          if (this.parkedChecks.size > MAX_PENDING_DEAD_CHECKS) this.parkedChecks.delete(this.parkedChecks.keys().next().value!);
        });
        // A recount's snapshot taken since the place was freed already counts it (unreferenced there).
        // Pool offline (cannot tell): counted as before; if it comes back replaced, resetPool voids it.
        this.addDead(batch.filter((c, i) => held[i] !== false && held[i] !== 'unwritten' && c.epoch === this.recountEpoch).map((c) => c.at));
      }
    } finally {
      this.checking = null;
    }
  }

  /**
   * Rebuilt records whose flip lost, at the place the reference they
   * replaced names (StripeStore.releaseReplaced): live if the flip lost to
   * compaction moving another shard, so never counted from here; but a
   * free() of that reference whose check found the place empty (parked) is
   * checked again, and counted now that the record is there.
   */
  private lostFlipAt(shards: ShardRef[]): void {
    for (const s of shards) {
      const key = placeKey(s);
      const parked = this.parkedChecks.get(key);
      if (parked !== undefined) {
        this.parkedChecks.delete(key);
        this.deadChecks.push(parked);
        continue;
      }
      this.lostFlipPlaces.add(key);
      if (this.lostFlipPlaces.size > MAX_PENDING_DEAD_CHECKS) this.lostFlipPlaces.delete(this.lostFlipPlaces.values().next().value!);
    }
    if (this.deadChecks.length > 0) this.checking ??= this.runDeadChecks();
  }

  /** Resolves once every place told dead so far is counted, or found to be another record's. */
  async deadSettled(): Promise<void> {
    while (this.checking !== null) await this.checking;
  }

  /**
   * A pool's store was opened over a replaced or empty directory: its old
   * segments' hints count another store's bytes. An empty store has no
   * dead byte; a replaced one that holds records (a copy restored) is
   * counted again by the next pass's recount.
   */
  private resetPool(pool: string, fresh: boolean): void {
    this.sinceRecount?.replaced.add(pool);
    // Places of the store replaced: void (bounded maps, walked only on a replacement).
    for (const [key, c] of this.parkedChecks) if (c.at.pool === pool) this.parkedChecks.delete(key);
    for (const key of this.lostFlipPlaces) if (key.startsWith(`${pool}\u0000`)) this.lostFlipPlaces.delete(key);
    for (const key of [...this.dead.keys()]) {
      const [p, segment] = key.split('\u0000') as [string, string];
      if (p !== pool) continue;
      this.dead.delete(key);
      void this.meta.segmentDeadBytes.remove([pool, Number(segment)]);
    }
    if (!fresh) this.recounted = false;
  }

  private addDead(shards: ShardRef[]): void {
    const since = this.sinceRecount;
    for (const s of shards) {
      const key = segKey(s.pool, s.segment);
      this.groupLook?.get(s.pool)?.get(s.segment)?.live.delete(s.offsetBytes);
      if (since !== null) {
        if (since.freed.length < MAX_PENDING_DEAD_CHECKS) since.freed.push({ key, offsetBytes: s.offsetBytes, lengthBytes: s.lengthBytes });
        else since.overflowBytes.set(key, (since.overflowBytes.get(key) ?? 0) + s.lengthBytes);
      }
      const bytes = (this.dead.get(key) ?? 0) + s.lengthBytes;
      this.dead.set(key, bytes);
      // A hint: not awaited (the start-up recount corrects a lost update).
      void this.meta.segmentDeadBytes.put([s.pool, s.segment], bytes);
    }
  }

  private async coldStores(): Promise<{ pool: string; store: SegmentStore }[]> {
    const out = [];
    for (const pool of this.stripes.coldPoolNames()) {
      const store = await this.stripes.segmentStore(pool);
      if (store) out.push({ pool, store });
    }
    return out;
  }

  /**
   * Every stripe reference the index holds, with its holder: the chunk map
   * as committed, open volumes' maps (a destage's flip lands there after its
   * commit), cold objects and parts. Then the references
   * readers hold (StripeStore.hold: a GET of an overwritten version, a read
   * begun before a destage freed its stripe), each shard where the forwards
   * lead now: those records are copied like live ones (their readers follow
   * the forwards), but no index entry is flipped for them.
   */
  private forEachRef(visit: (ref: StripeRef, holder: Holder | null) => void): void {
    // A volume being deleted: its entries name places until a batch removes them (MetaStore.removeDeletingChunks).
    for (const vol of [...this.meta.listVolumes(), ...this.meta.listDeletingVolumes()]) {
      for (const { chunkIndex, entry } of this.meta.volumeChunks(vol.id)) visitChunk(vol.id, chunkIndex, entry, visit);
    }
    for (const { key, value } of this.objects.getRange(ALL_OBJECT_KEYS)) visitObject(this.meta, key, value, visit);
    for (const { key, value } of this.parts.getRange(ALL_OBJECT_KEYS)) visitPart(this.meta, key, value, visit);
    this.forEachMemoryRef(visit);
  }

  /** The references held in memory only: open volumes' maps and readers' holds (see forEachRef). */
  private forEachMemoryRef(visit: (ref: StripeRef, holder: Holder | null) => void): void {
    for (const vol of this.openVolumes()) {
      for (const ref of vol.stripes.values()) visit(ref, null);
      if (vol.preserved) for (const ref of vol.preserved.values()) visit(ref, null);
    }
    for (const ref of this.stripes.heldRefs()) visit({ ...ref, shards: ref.shards.map((s) => this.stripes.resolve(s)) }, null);
  }

  /**
   * forEachRef's index part read in slices of recountSliceEntries entries,
   * yielding to the event loop between two (each slice a fresh range from
   * the last key read: no cursor is held across a yield). From one read
   * snapshot `txn` (the index at one instant; LMDB reuses no page freed
   * while it is held, so commits meanwhile grow the file and slow down), or
   * with `'per-slice'` from a snapshot opened for each slice and released
   * before the yield: an entry changed between two slices is then read as
   * it was when its slice ran, and one whose reference moved from a key not
   * read yet to one read already (an upload's parts becoming its object) is
   * missed. Only callers that tolerate that use it (the recount's hints;
   * liveIn's first look, behind the final look from one snapshot).
   */
  private async forEachIndexRefSliced(snapshot: Transaction | 'per-slice', visit: (ref: StripeRef, holder: Holder | null) => void, withDeleting = false): Promise<void> {
    const slice = this.opts.recountSliceEntries;
    let sinceYield = 0;
    const scan = async <K extends Key, V>(db: Database<V, K>, start: K, end: K | undefined, each: (key: K, value: V) => void): Promise<void> => {
      let from = start;
      let exclusiveStart = false;
      for (;;) {
        const txn = snapshot === 'per-slice' ? this.objects.useReadTransaction() : snapshot;
        let batch: { key: K; value: V }[];
        try {
          batch = [...db.getRange({ start: from, ...(end !== undefined ? { end } : {}), exclusiveStart, limit: slice, transaction: txn })];
        } finally {
          if (snapshot === 'per-slice') txn.done();
        }
        for (const { key, value } of batch) each(key, value);
        sinceYield += batch.length;
        if (sinceYield >= slice) {
          sinceYield = 0;
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        if (batch.length < slice) return;
        from = batch[batch.length - 1]!.key;
        exclusiveStart = true;
      }
    };
    const volumeIds = [...this.meta.volumes.getRange(snapshot === 'per-slice' ? {} : { transaction: snapshot })].map((e) => e.value.id);
    // The recount's: a volume being deleted is referenced until a batch removes its entries and frees them (told dead then, once).
    if (withDeleting) for (const rec of this.meta.listDeletingVolumes(snapshot === 'per-slice' ? undefined : snapshot)) volumeIds.push(rec.id);
    for (const id of volumeIds) await scan(this.meta.chunks, [id, 0], [id + 1, 0], (key, entry) => visitChunk(id, key[1], entry, visit));
    await scan(this.objects, ALL_OBJECT_KEYS.start, undefined, (key, value) => visitObject(this.meta, key, value, visit));
    if (this.betweenObjectsAndParts !== null) await this.betweenObjectsAndParts(snapshot === 'per-slice' ? 'per-slice' : 'snapshot');
    await scan(this.parts, ALL_OBJECT_KEYS.start, undefined, (key, value) => visitPart(this.meta, key, value, visit));
  }

  /**
   * Sets every segment's dead bytes to its size minus the bytes the index
   * references in it: corrects hints lost to a crash and counts orphans
   * (half-written stripes, copies of an interrupted compaction, uploads cut
   * short). Records written by sessions in flight count as dead here; the
   * pass itself never trusts the hint (it asks the index again).
   *
   * Taken at one instant, with nothing awaited between: the epoch, the
   * segments' sizes and the references held in memory. The index is then
   * read in slices (forEachIndexRefSliced), each from a read snapshot of its
   * own, released before the yield: neither the event loop nor LMDB's freed
   * pages are held for the whole index (one snapshot held across the scan
   * made commits meanwhile reuse no page and run ~21x slower). What the
   * slices can see differ from the instant in, and how each is kept right:
   *  - a record appended after the instant lies past the sizes taken: its
   *    references are not counted live (they would lower that segment's
   *    dead bytes by bytes the sizes do not hold);
   *  - a place freed after the instant is told to addDead (sinceRecount; the
   *    dead checks' epoch likewise). It is added on top only if the count
   *    has it live (a slice, or memory at the instant, saw it referenced) or
   *    it lies past the sizes; one whose holder a slice read only after the
   *    free is already counted dead by size minus live, once;
   *  - a reference that moved between slices from a key not read yet to one
   *    read already (an upload's parts becoming its object) is not seen: its
   *    place counts dead though live. That over-counts a hint, never data:
   *    the pass asks the index again before copying or deleting anything.
   * A pool whose store is replaced meanwhile keeps its running figures, and
   * the next pass recounts.
   */
  recount(): Promise<void> {
    this.recounting ??= this.recountNow().finally(() => {
      this.recounting = null;
    });
    return this.recounting;
  }

  private async recountNow(): Promise<void> {
    const stores = await this.coldStores();
    this.recountEpoch++;
    const sizes = stores.flatMap(({ pool, store }) => store.segments().map((s) => ({ pool, segment: s.segment, sizeBytes: s.sizeBytes })));
    const sizeOf = new Map(sizes.map((z) => [segKey(z.pool, z.segment), z.sizeBytes]));
    // Each referenced place once (a stripe is usually seen both committed and in an open volume's map),
    // summed per segment as it is found: the work stays in the slices. Offsets by segment, not a
    // string per place: fewer allocations, shorter collector pauses (bench/cold-fresh-pool-open).
    const offsets = new Map<string, Set<number>>();
    const live = new Map<string, number>();
    const visit = (ref: StripeRef) => {
      for (const s of ref.shards) {
        const key = segKey(s.pool, s.segment);
        const sizeBytes = sizeOf.get(key);
        // Appended after the instant (a later slice sees its commit): not in the sizes taken.
        if (sizeBytes === undefined || s.offsetBytes + s.lengthBytes > sizeBytes) continue;
        let seen = offsets.get(key);
        if (seen === undefined) offsets.set(key, (seen = new Set()));
        if (seen.has(s.offsetBytes)) continue;
        seen.add(s.offsetBytes);
        live.set(key, (live.get(key) ?? 0) + s.lengthBytes);
      }
    };
    // Held references count as live: a pinned S3 version leaving the index is freed (counted dead) when its last reader lets go.
    this.forEachMemoryRef(visit);
    const since: SinceRecount = { freed: [], overflowBytes: new Map(), replaced: new Set() };
    this.sinceRecount = since;
    try {
      await this.forEachIndexRefSliced('per-slice', visit, true);
    } finally {
      this.sinceRecount = null;
    }
    // Told dead since the instant, per segment: see the method comment for which places count.
    const sinceDead = new Map(since.overflowBytes);
    for (const f of since.freed) {
      const sizeBytes = sizeOf.get(f.key);
      const counted = sizeBytes !== undefined && f.offsetBytes + f.lengthBytes <= sizeBytes && offsets.get(f.key)?.has(f.offsetBytes) !== true;
      if (!counted) sinceDead.set(f.key, (sinceDead.get(f.key) ?? 0) + f.lengthBytes);
    }
    const next = new Map<string, number>();
    for (const z of sizes) {
      if (since.replaced.has(z.pool)) continue;
      const key = segKey(z.pool, z.segment);
      next.set(key, Math.max(0, z.sizeBytes - (live.get(key) ?? 0)) + (sinceDead.get(key) ?? 0));
    }
    // Segments begun since the instant: only what was told dead since.
    // Not a replaced pool's: told before its replacement, they name the old store's segments (the new one reuses their numbers).
    for (const [key, bytes] of sinceDead) if (!next.has(key) && !since.replaced.has(key.split('\u0000')[0]!)) next.set(key, bytes);
    // A replaced pool: its running figures (reset, then told since), not what the snapshot made of the old store.
    for (const [key, bytes] of this.dead) if (since.replaced.has(key.split('\u0000')[0]!)) next.set(key, bytes);
    this.dead.clear();
    for (const [key, bytes] of next) this.dead.set(key, bytes);
    await this.meta.transaction(() => {
      for (const key of this.meta.segmentDeadBytes.getKeys()) void this.meta.segmentDeadBytes.remove(key);
      for (const [key, bytes] of next) {
        const [pool, segment] = key.split('\u0000') as [string, string];
        void this.meta.segmentDeadBytes.put([pool, Number(segment)], bytes);
      }
    });
    // Past the bound of places kept, frees were added unchecked (maybe twice): the next pass counts again.
    this.recounted = since.replaced.size === 0 && since.overflowBytes.size === 0;
  }

  /**
   * One pass. A damaged S3 index record (DamagedIndexRecord from any scan
   * of the index: the recount, referencesAnyPool, a group's looks) ends it
   * as CompactionRefused, logged naming the record: a group whose look
   * threw copied or deleted nothing, and the ones before it had their final
   * look before the record was met. Every later pass refuses the same way
   * while the record stays damaged (its scans meet it again): the segments
   * it may reference cannot be told apart from dead ones.
   */
  private async pass(unthrottled: boolean): Promise<PassReport> {
    try {
      const report = await this.passNow(unthrottled);
      this.refusedFor = null;
      return report;
    } catch (err) {
      if (!(err instanceof DamagedIndexRecord)) throw err;
      this.stats_.passesRefusedDamagedRecord++;
      // The hints may come from a recount that did not finish: count again once the record is repaired.
      this.recounted = false;
      const d = err.record;
      const id = `${d.db}/${d.key.toString('hex')}/${d.problem}`;
      // One error line per record refused on (the timer refuses every intervalMs): later ones at debug.
      const fields = { db: d.db, record: describeIndexKey(this.meta, d.db, d.key), problem: d.problem, refusedPasses: this.stats_.passesRefusedDamagedRecord };
      const what = 'segment compaction refused: a damaged S3 index record; no segment is copied or deleted until it is repaired or removed (fsck lists damaged records)';
      if (this.refusedFor !== id) log.error(what, fields);
      else log.debug(what, fields);
      this.refusedFor = id;
      throw new CompactionRefused(err);
    }
  }
  /** The damaged record the last pass refused on (null: it was not refused), so the log names it once, not every pass. */
  private refusedFor: string | null = null;

  private async passNow(unthrottled: boolean): Promise<PassReport> {
    const report: PassReport = { segmentsCompacted: 0, reclaimedBytes: 0, copiedBytes: 0, segmentsDeferred: 0 };
    // Volume deletes under way first: what they free is told dead batch by batch (MetaStore.deletesSettled).
    await Promise.race([this.meta.deletesSettled(), this.stopRequest]);
    if (this.stopped) return report;
    if (!this.recounted) await this.recount();
    const candidates: Candidate[] = [];
    const stores = await this.coldStores();
    this.pruneHints(stores);
    const aliased = this.aliasedPools(stores.map((s) => s.pool));
    for (const { pool, store } of stores) {
      const others = aliased.get(pool);
      if (others !== undefined && this.referencesAnyPool(new Set(others))) {
        log.warn('segment compaction: the index names records of this pool directory under another pool name (renamed in the configuration?); not compacted', { pool, others });
        continue;
      }
      for (const s of store.segments()) {
        if (s.head) continue;
        const deadBytes = Math.min(s.sizeBytes, this.dead.get(segKey(pool, s.segment)) ?? 0);
        if (s.sizeBytes === 0 || deadBytes / s.sizeBytes >= this.opts.deadFraction) candidates.push({ pool, store, segment: s.segment, sizeBytes: s.sizeBytes, deadBytes });
      }
    }
    candidates.sort((a, b) => b.deadBytes - a.deadBytes);
    // Groups in that order: up to segmentsPerScan segments whose live bytes, as the hints tell, fit
    // groupCopyBytes (at least one); compactGroup checks the bound again with the live bytes it finds.
    let queue = candidates;
    while (queue.length > 0 && !this.stopped) {
      let n = 0;
      let estimatedLiveBytes = 0;
      while (n < queue.length && n < this.opts.segmentsPerScan) {
        const liveBytes = queue[n]!.sizeBytes - queue[n]!.deadBytes;
        if (n > 0 && estimatedLiveBytes + liveBytes > this.opts.groupCopyBytes) break;
        estimatedLiveBytes += liveBytes;
        n++;
      }
      const later = await this.compactGroup(queue.slice(0, n), unthrottled, report);
      queue = [...later, ...queue.slice(n)];
    }
    await this.stripes.refreshPoolUsage();
    this.stats_.passes++;
    if (report.segmentsCompacted > 0) log.info('segment compaction pass', { ...report });
    return report;
  }

  /**
   * Cold pools whose directory is also that of another pool record of the
   * index (pool records are never removed), with those records' names: a
   * pool renamed in the configuration, or one directory named twice. The
   * index names the records there under the other name, which nothing
   * resolves, so every one of them looks unreferenced: compacting would
   * delete shards the index still names (renamed back, they are gone;
   * test/review-compaction-renamed-pool). Such a pool is not compacted while
   * a reference names one of the others (referencesAnyPool).
   */
  private aliasedPools(pools: readonly string[]): Map<string, string[]> {
    const dirOf = (dir: string): string | null => {
      try {
        const st = statSync(dir);
        return `${st.dev}:${st.ino}`;
      } catch {
        return null; // gone or unreadable: aliases nothing
      }
    };
    const byDir = new Map<string, string[]>();
    const dirOfPool = new Map<string, string>();
    for (const rec of this.meta.listPools()) {
      const d = dirOf(rec.path);
      if (d === null) continue;
      dirOfPool.set(rec.name, d);
      const names = byDir.get(d);
      if (names === undefined) byDir.set(d, [rec.name]);
      else names.push(rec.name);
    }
    const out = new Map<string, string[]>();
    for (const pool of pools) {
      const d = dirOfPool.get(pool);
      const others = d === undefined ? [] : byDir.get(d)!.filter((name) => name !== pool);
      if (others.length > 0) out.set(pool, others);
    }
    return out;
  }

  /**
   * Whether any reference (forEachRef) names a place on one of `pools`;
   * stops at the first. Asked only for pools that alias a compacted one
   * (aliasedPools): a name no longer configured gets no new reference, so
   * the answer only goes from true to false.
   */
  private referencesAnyPool(pools: ReadonlySet<string>): boolean {
    const found = {};
    try {
      this.forEachRef((ref) => {
        if (ref.shards.some((s) => pools.has(s.pool))) throw found;
      });
    } catch (err) {
      if (err === found) return true;
      throw err;
    }
    return false;
  }

  /**
   * Drops hints of segments that no longer exist in an open pool (a free()
   * of a reference older than the forwards kept can name a deleted one), so
   * the map stays bounded by the segments on disk.
   */
  private pruneHints(stores: { pool: string; store: SegmentStore }[]): void {
    const present = new Set<string>();
    const open = new Set<string>();
    for (const { pool, store } of stores) {
      open.add(pool);
      for (const s of store.segments()) present.add(segKey(pool, s.segment));
    }
    for (const key of this.dead.keys()) {
      const [pool, segment] = key.split('\u0000') as [string, string];
      if (!open.has(pool) || present.has(key)) continue;
      this.dead.delete(key);
      void this.meta.segmentDeadBytes.remove([pool, Number(segment)]);
    }
  }

  /**
   * Places in each of `targets` (segments, by pool) that must stay readable:
   * offset -> length, with the index entries holding them, per segment
   * (segKey). The index's references read in slices (forEachIndexRefSliced,
   * from `snapshot`), once for every target, then the ones held in memory
   * (open volumes' maps, readers' holds through the forwards, so a held
   * record already copied out no longer counts) as they are once the index
   * is read.
   */
  private async liveIn(targets: readonly { pool: string; segment: number }[], snapshot: Transaction | 'per-slice'): Promise<Map<string, SegmentLook>> {
    const looks = new Map<string, SegmentLook>();
    for (const t of targets) looks.set(segKey(t.pool, t.segment), { live: new Map(), holders: new Map() });
    const byPool = bySegment(targets, looks);
    const visit = (ref: StripeRef, holder: Holder | null) => {
      let hit: SegmentLook | undefined;
      let hits: SegmentLook[] | undefined;
      for (const s of ref.shards) {
        const look = byPool.get(s.pool)?.get(s.segment);
        if (look === undefined) continue;
        look.live.set(s.offsetBytes, s.lengthBytes);
        if (hit === undefined) hit = look;
        else if (look !== hit) (hits ??= []).push(look);
      }
      if (hit === undefined || !holder) return;
      const id = holderId(holder);
      hit.holders.set(id, holder);
      if (hits) for (const look of hits) look.holders.set(id, holder);
    };
    await this.forEachIndexRefSliced(snapshot, visit);
    this.forEachMemoryRef(visit);
    return looks;
  }

  /**
   * The look that allows deleting each of `targets`: the number of places
   * in it still referenced (by segKey), by the index at one instant after
   * every write queued before the call has committed, or in memory then or
   * once the index is read. The instant is one read snapshot (a write
   * transaction around the whole scan held the event loop and every writer
   * ~1 s per 100,000 entries); it is read in slices, so the snapshot is held
   * that long, not the loop. One snapshot, not one per slice: a reference
   * moving between two keys while slices ran would be missed, and this look
   * is what keeps a live shard's segment on disk. One look for a group:
   * each target's copies and flips are done before it is called, and the
   * instant is later than any look of its own would have been.
   */
  private async referencedNow(targets: readonly { pool: string; segment: number }[]): Promise<Map<string, number>> {
    // The barrier: resolves once every write queued before it has committed (lmdb-js runs transaction
    // callbacks in the order queued, after the single puts queued before them, and resolves each once its
    // batch has committed, resetting its read transaction first), so the snapshot below holds them. It is
    // what keeps a rebuild's flip: the rebuilt record lies in a segment the first look saw unreferenced
    // (not copied), the flip is queued as its write session ends (compactGroup's setImmediate lets it be),
    // and the generation check (newerThanIndex) does not catch it (same generation). A flip queued after
    // the barrier cannot name this segment unless the index already did at the snapshot (its
    // compare-and-swap fails once a flip here moved the stripe). test/compaction-final-look-rebuild-flip.
    await this.meta.transaction(() => undefined);
    const txn = this.objects.useReadTransaction();
    try {
      const counts = new Map<string, { places: number }>();
      for (const t of targets) counts.set(segKey(t.pool, t.segment), { places: 0 });
      const byPool = bySegment(targets, counts);
      // Memory at the snapshot's instant, then (liveIn) once the index is read.
      this.forEachMemoryRef((ref) => {
        for (const s of ref.shards) {
          const count = byPool.get(s.pool)?.get(s.segment);
          if (count !== undefined) count.places++;
        }
      });
      const places = new Map<string, number>();
      for (const [key, look] of await this.liveIn(targets, txn)) places.set(key, counts.get(key)!.places + look.live.size);
      return places;
    } finally {
      txn.done();
    }
  }

  /**
   * Compacts a group of sealed segments (pass() picks them): one first look
   * for all, then each one's live records copied and flipped, one segment
   * after another, then one final look for every segment copied, and each
   * one found unreferenced is deleted. Returns the members it did not get
   * to (past groupCopyBytes once their live bytes are known): the pass puts
   * them in a later group. Counts into `report`.
   */
  private async compactGroup(group: readonly Candidate[], unthrottled: boolean, report: PassReport): Promise<Candidate[]> {
    const defer = (c: Candidate, err?: Error) => {
      report.segmentsDeferred++;
      this.stats_.segmentsDeferredTotal++;
      if (err) log.warn('segment compaction: segment left in place', { pool: c.pool, segment: c.segment, err: err.message });
    };
    let looks: Map<string, SegmentLook>;
    try {
      // Per-slice snapshots: a reference missed here is not copied nor flipped, and the final look (referencedNow) keeps the segment.
      looks = await this.liveIn(group, 'per-slice');
    } catch (err) {
      for (const c of group) defer(c, err as Error);
      if (err instanceof DamagedIndexRecord) throw err; // the pass ends (pass(): CompactionRefused)
      return [];
    }
    const copied: { c: Candidate; sizeBytes: number; copiedBytes: number }[] = [];
    const later: Candidate[] = [];
    let groupLiveBytes = 0;
    let attempted = 0;
    this.groupLook = bySegment(group, looks);
    try {
      for (const c of group) {
        if (this.stopped) break;
        const look = looks.get(segKey(c.pool, c.segment))!;
        let liveBytes = 0;
        for (const lengthBytes of look.live.values()) liveBytes += lengthBytes;
        // The first always goes (progress); the others while the group's copies stay under the bound.
        if (attempted > 0 && groupLiveBytes + liveBytes > this.opts.groupCopyBytes) {
          later.push(c);
          continue;
        }
        attempted++;
        groupLiveBytes += liveBytes;
        try {
          const r = await this.copyOut(c, look, unthrottled);
          if (r === null) defer(c);
          else copied.push({ c, ...r });
        } catch (err) {
          defer(c, err as Error);
        }
      }
    } finally {
      this.groupLook = null;
    }
    if (copied.length === 0) return later;
    if (this.stopped) {
      // Their copies become orphans (the next start's recount counts them dead).
      for (const { c } of copied) defer(c);
      return later;
    }
    // Records of sessions in flight (a destage between its append and its
    // flip, an upload before its commit) are not in the index yet: wait
    // for those sessions, then look once more, after every queued write.
    let stillLive: Map<string, number>;
    try {
      if (!(await this.stripes.writesSettled(this.opts.settleTimeoutMs, () => this.stopped))) {
        for (const { c } of copied) defer(c);
        return later;
      }
      await new Promise((resolve) => setImmediate(resolve)); // let callers issue the flips their resolved writes lead to
      // A held reference counts only where it still leads into a segment (one held after the copy began).
      stillLive = await this.referencedNow(copied.map(({ c }) => c));
    } catch (err) {
      for (const { c } of copied) defer(c, err as Error);
      if (err instanceof DamagedIndexRecord) throw err; // nothing deleted; the pass ends (pass(): CompactionRefused)
      return later;
    }
    for (const { c, sizeBytes, copiedBytes } of copied) {
      try {
        const places = stillLive.get(segKey(c.pool, c.segment))!;
        if (places > 0) {
          log.debug('segment compaction: segment still referenced after the flip; left for a later pass', { pool: c.pool, segment: c.segment, places });
          defer(c);
          continue;
        }
        const pending = await this.newerThanIndex(c.store, c.segment);
        if (pending !== null) {
          log.info('segment compaction: segment holds a stripe newer than the index; kept for a later pass', { pool: c.pool, segment: c.segment, ...pending });
          defer(c);
          continue;
        }
        if (PAUSE_COMPACTION_AT === 'before-delete') await this.pauseAt('before-delete', c.pool, c.segment);
        if (this.stopped) {
          defer(c);
          continue;
        }
        await c.store.removeSegment(c.segment);
        const key = segKey(c.pool, c.segment);
        this.dead.delete(key);
        void this.meta.segmentDeadBytes.remove([c.pool, c.segment]);
        const reclaimedBytes = Math.max(0, sizeBytes - copiedBytes);
        this.stats_.segmentsCompactedTotal++;
        this.stats_.reclaimedBytesTotal += reclaimedBytes;
        this.stats_.copiedBytesTotal += copiedBytes;
        report.segmentsCompacted++;
        report.copiedBytes += copiedBytes;
        report.reclaimedBytes += reclaimedBytes;
      } catch (err) {
        defer(c, err as Error);
      }
    }
    return later;
  }

  /**
   * Copies one sealed segment's live records (its first look) to its pool's
   * head and flips the index to the copies, a batch at a time, throttled.
   * Null when it has to stay (gone, the head, stopped, or a live record
   * fails verification).
   */
  private async copyOut(c: Candidate, look: SegmentLook, unthrottled: boolean): Promise<{ sizeBytes: number; copiedBytes: number } | null> {
    const { pool, store, segment } = c;
    const info = store.segments().find((s) => s.segment === segment);
    if (!info || info.head) return null;
    const { live, holders } = look;
    const places = [...live.entries()].sort((a, b) => a[0] - b[0]).map(([offsetBytes, lengthBytes]) => ({ segment, offsetBytes, lengthBytes }));
    let copiedBytes = 0;
    let corrupt = 0;
    const startMs = Date.now();
    for (let i = 0; i < places.length; ) {
      if (this.stopped) return null;
      const batch: SegmentLocation[] = [];
      let batchBytes = 0;
      while (i < places.length && (batch.length === 0 || batchBytes + places[i]!.lengthBytes <= this.opts.batchBytes)) {
        const place = places[i++]!;
        // Counted dead since the group's first look (groupLook): not copied. Still referenced after all
        // (a reader's hold, a second holder): the final look finds it in S and keeps S.
        if (!live.has(place.offsetBytes)) continue;
        batchBytes += place.lengthBytes;
        batch.push(place);
      }
      if (batch.length === 0) break; // every place left was dead
      const result = await store.compactSegment(segment, batch);
      corrupt += result.corrupt.length;
      if (result.relocations.length > 0) {
        if (PAUSE_COMPACTION_AT === 'before-flip') await this.pauseAt('before-flip', pool, segment);
        this.stripes.addForwards(pool, result.relocations);
        await this.flip(pool, segment, result.relocations, holders);
        for (const r of result.relocations) copiedBytes += r.to.lengthBytes;
        if (PAUSE_COMPACTION_AT === 'after-flip') await this.pauseAt('after-flip', pool, segment);
      }
      if (!unthrottled) await this.throttle(startMs, copiedBytes);
    }
    if (corrupt > 0) {
      // A live record that fails its CRC was not copied: deleting S would
      // lose that shard. Scrub rebuilds it elsewhere; a later pass then finds S unreferenced.
      log.warn('segment compaction: live records fail verification; segment kept until they are rebuilt', { pool, segment, corrupt });
      return null;
    }
    return { sizeBytes: info.sizeBytes, copiedBytes };
  }

  /**
   * Defence in depth behind writesSettled(): a record of a cold volume's
   * chunk with a generation above the one its index entry holds can only be
   * a destage whose flip has not landed (destages number each stripe above
   * the last), so a segment holding one is not deleted. Returns the first
   * such record, or null. Records of deleted volumes, of volumes no longer
   * on the cold tier, of chunks whose entry keeps no generation (trimmed),
   * and of objects (uploads hold explicit sessions) do not count.
   */
  private async newerThanIndex(store: SegmentStore, segment: number): Promise<{ volumeId: number; chunkIndex: number; generation: number } | null> {
    const coldVolumes = new Set(this.meta.listVolumes().filter((v) => v.tier === 'cold').map((v) => v.id));
    for await (const { header } of store.headers(segment)) {
      const owner = header.ownerId;
      if (owner.toString('latin1', 0, 8) !== 'CSVOLUME') continue;
      const volumeId = owner.readUInt32BE(12);
      if (!coldVolumes.has(volumeId)) continue;
      const entry = this.meta.chunks.get([volumeId, header.chunkIndex]) as (ChunkEntry & { lastGeneration?: number }) | undefined;
      let indexed: number;
      if (entry?.state === ChunkState.Cold && entry.stripe) indexed = Math.max(entry.stripe.generation, entry.lastGeneration ?? 0);
      // In the volume file, on its way to a stripe (a migration to cold): transient.
      else if (entry?.state === ChunkState.Allocated) indexed = entry.lastGeneration ?? 0;
      else if (entry?.lastGeneration !== undefined) indexed = entry.lastGeneration;
      // Trimmed or never written, and no generation kept to compare with: nothing to go by.
      else continue;
      if (header.stripeGeneration > indexed) return { volumeId, chunkIndex: header.chunkIndex, generation: header.stripeGeneration };
    }
    return null;
  }

  /**
   * One transaction: every holder with a shard at a copied place now points
   * at the copy (see the file comment for why re-reading inside the
   * transaction makes this a compare-and-swap). Then open volumes' maps.
   */
  private async flip(pool: string, segment: number, relocations: { from: SegmentLocation; to: SegmentLocation }[], holders: Map<string, Holder>): Promise<void> {
    const to = new Map<number, SegmentLocation>();
    for (const r of relocations) to.set(r.from.offsetBytes, r.to);
    const move = (ref: StripeRef): StripeRef | null => {
      let changed = false;
      const shards = ref.shards.map((s) => {
        if (s.pool !== pool || s.segment !== segment) return s;
        const dst = to.get(s.offsetBytes);
        if (dst === undefined || dst.lengthBytes !== s.lengthBytes) return s;
        changed = true;
        return { pool, segment: dst.segment, offsetBytes: dst.offsetBytes, lengthBytes: dst.lengthBytes };
      });
      return changed ? { ...ref, shards } : null;
    };
    await this.meta.transaction(() => {
      for (const h of holders.values()) {
        if (h.kind === 'chunk') {
          const e = this.meta.chunks.get(h.key);
          const next = e?.state === ChunkState.Cold && e.stripe ? move(e.stripe) : null;
          const nextPreserved = e?.preserved ? move(e.preserved) : null;
          if (e && (next || nextPreserved)) void this.meta.chunks.put(h.key, { ...e, ...(next ? { stripe: next } : {}), ...(nextPreserved ? { preserved: nextPreserved } : {}) });
        } else if (h.kind === 'object') {
          const rec = this.objects.get(h.key);
          const segments = rec ? moveColdStripes(rec.segments, move) : undefined;
          if (rec && segments) void this.objects.put(h.key, { ...rec, segments });
        } else {
          const rec = this.parts.get(h.key);
          const segments = rec ? moveColdStripes([rec.segment], move) : undefined;
          if (rec && segments) void this.parts.put(h.key, { ...rec, segment: segments[0]! });
        }
      }
    });
    await this.meta.durable();
    // In-memory maps after the commit: a ref there may be newer than the
    // committed one (its flip still resolving) or the same; either way the
    // substitution is right. Synchronous, so no destage interleaves.
    for (const vol of this.openVolumes()) {
      for (const [c, ref] of vol.stripes) {
        const next = move(ref);
        if (next) {
          vol.stripes.set(c, next);
          this.stripes.forget(ref);
        }
      }
      if (vol.preserved) {
        for (const [c, ref] of vol.preserved) {
          const next = move(ref);
          if (next) {
            vol.preserved.set(c, next);
            this.stripes.forget(ref);
          }
        }
      }
    }
  }

  /** PAUSE_COMPACTION_AT: the first pass here says so on stdout and waits for stop(); later ones (none before a stop) go on. */
  private async pauseAt(point: string, pool: string, segment: number): Promise<void> {
    if (this.testPause !== null || this.stopped) return;
    let release!: () => void;
    this.testPause = { held: new Promise<void>((r) => (release = r)), release };
    process.stdout.write(`couchestor paused compaction ${point} ${JSON.stringify({ pool, segment })}\n`);
    await this.testPause.held;
  }

  /** Sleeps so the copy rate stays under maxBytesPerSecond; stop() cuts it short. */
  private async throttle(startMs: number, copiedBytes: number): Promise<void> {
    const dueMs = startMs + (copiedBytes / this.opts.maxBytesPerSecond) * 1000;
    const waitMs = dueMs - Date.now();
    if (waitMs <= 0 || this.stopped) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      this.wakeSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wakeSleep = null;
  }
}

/**
 * `bySegKey`'s values by pool, then segment number, for `targets`: what a
 * visit of every shard of every reference looks up (no string built per shard).
 */
function bySegment<T>(targets: readonly { pool: string; segment: number }[], bySegKey: Map<string, T>): Map<string, Map<number, T>> {
  const out = new Map<string, Map<number, T>>();
  for (const t of targets) {
    let segs = out.get(t.pool);
    if (segs === undefined) out.set(t.pool, (segs = new Map()));
    segs.set(t.segment, bySegKey.get(segKey(t.pool, t.segment))!);
  }
  return out;
}

function holderId(h: Holder): string {
  return h.kind === 'chunk' ? `c/${h.key[0]}/${h.key[1]}` : `${h.kind}/${h.key.toString('hex')}`;
}

/** couchestor_segment_reclaimed_bytes_total and friends, read from the compactor at scrape time. */
export function registerCompactionMetrics(compactor: SegmentCompactor, registry: Registry): void {
  new Counter({
    name: 'couchestor_segment_reclaimed_bytes_total',
    help: 'Cold segment bytes given back by compaction (segment files deleted, minus the live records copied out of them).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(compactor.stats().reclaimedBytesTotal);
    },
  });
  new Counter({
    name: 'couchestor_segments_compacted_total',
    help: 'Cold segment files compacted and deleted.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(compactor.stats().segmentsCompactedTotal);
    },
  });
}
