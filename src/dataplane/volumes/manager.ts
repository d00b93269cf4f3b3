// Owns pools and volumes of one daemon: creation, placement, resize, delete,
// and the cache of open Volume objects shared by every front-end connection.
import fs from 'node:fs';
import path from 'node:path';
import { AlreadyExists, InvalidArgument, NoSuitablePool, NotFound, PoolOffline, TooFewOnlinePools, VolumeFailed, VolumeInUse } from '../errors.js';
import { ChunkState, MetaStore, VOLUME_NAME_RE, type ChunkEntry, type PoolRecord, type Tier, type VolumeRecord } from '../meta/store.js';
import { Pool } from '../pools/pool.js';
import { dirEntries, holdsPoolLayout, readPoolIdentity, writePoolIdentity, type PoolIdentity } from '../pools/identity.js';
import { randomUUID } from 'node:crypto';
import { STATUS_GROUP_SHIFT, Volume, holdsData, statusGroupsFor, type ColdTier, type VolumeCounters } from './volume.js';
import { Journal, journalFileEntries } from '../journal/journal.js';
import { hotObjectsOnPool, markHotObjectsLost } from '../objects/pool-objects.js';
import { prepareHotPool } from '../objects/hot-segments.js';
import { JOURNAL_ID_FILE, ensureJournalId, readJournalId } from '../journal/journal-id.js';
import { Destager, type DestagerOptions } from '../journal/destager.js';
import { StripeStore, type StripeRef } from '../ec/stripe-store.js';
import { Reconstructor, type PassVolumes } from '../ec/reconstruction.js';
import type { ErasureCodingPolicy } from '../ec/policy.js';
import { log } from '../../log.js';
import { ensureDurableDir, syncNewEntry, syncNewEntrySync } from '../dir-sync.js';
import { deadRangesHoldData, punchAfterInterruptedMove } from './migration.js';

export const DEFAULT_CHUNK_SIZE_BYTES = 1024 * 1024;
/** 2^53 guards the `number` arithmetic; real exports stay far below. */
export const MAX_VOLUME_SIZE_BYTES = 2 ** 50;
/** A recorded open failure older than this is tried again before unavailableVolumes() reports it. */
export const UNAVAILABLE_RECHECK_MS = 1_000;

/** A volume that could not be opened: the pool it failed on and the error. */
export interface UnavailableVolume {
  volume: string;
  pool: string;
  error: string;
}

export interface CreateVolumeOptions {
  name: string;
  sizeBytes: number;
  tier?: Tier;
  pool?: string;
  readOnly?: boolean;
  chunkSizeBytes?: number;
  labels?: Record<string, string>;
}

/**
 * A front end whose clients open volumes (the NBD server registers itself:
 * addVolumeClients): what deleteVolume asks before it pulls a volume.
 */
export interface VolumeClients {
  /** Peer addresses ('unix' for a Unix-socket client) of the clients that have volume `name` open or are opening it. */
  clientsOf(name: string): string[];
  /**
   * Ends those clients' connections as a daemon stop does (their requests in
   * flight answered, then the socket closed); resolves once they are closed.
   */
  disconnectClients(name: string): Promise<void>;
}

export interface DeleteVolumeOptions {
  /** Disconnect the volume's clients first instead of refusing (VolumeInUse). */
  force?: boolean;
  /**
   * Return once the volume is out of the namespace and its "deleting" mark
   * durable; the chunk map and its data are removed in the background (the
   * API's delete). Without it the call returns once all of it is removed.
   */
  background?: boolean;
}

/** Chunk entries a delete removes per index transaction (~3 ms of event loop each; removeChunkMap). */
const DELETE_BATCH_ENTRIES = 1024;
/**
 * Crash-test hook (test/volume-delete-batched): with
 * COUCHESTOR_TEST_PAUSE_DELETE_AFTER_BATCHES=N, a delete's chunk-map
 * removal, once N batches are committed and freed, prints `couchestor paused
 * delete {"volume":...}` on stdout and waits for good, so the test SIGKILLs
 * it mid-removal. Read once at start.
 */
const PAUSE_DELETE_AFTER_BATCHES = Number(process.env.COUCHESTOR_TEST_PAUSE_DELETE_AFTER_BATCHES ?? 0);

export class VolumeManager {
  readonly pools = new Map<string, Pool>();
  /** The pools the daemon's configuration names (set at start, daemon.ts openManager); null: not known, every pool record counts. Records of others stay in the index. */
  configuredPools: ReadonlySet<string> | null = null;
  /**
   * The open volumes, by name. A volume stays open while something holds it:
   * lent (borrowVolume, borrowById: an NBD connection, an API call, a
   * migration, the scrub, a pool rebuild, the control loop's look, the
   * destager, the rebuild queue; until each gives it back) or pinned
   * (openVolume: the start's finishing of an interrupted RELEASE, tools and
   * tests; until it is deleted or the daemon stops); a failed one stays for
   * good (EIO until a restart, never reopened silently). Once nothing holds it the last giveBack closes it (when it is
   * quiet: Volume.quiet). So the open volumes, their descriptors and chunk
   * maps, are what clients and work in flight use, not every volume the
   * scrub, a pool rebuild or the control loop looked at.
   */
  private readonly open = new Map<string, Volume>();
  /** Ids of the open volumes pinned by openVolume (at most one entry per open volume). */
  private readonly pinned = new Set<number>();
  /** Loans of background passes per volume id (at most one entry per open volume). */
  private readonly loans = new Map<number, number>();
  /**
   * I/O counters of volumes closed after a loan, by id, while not zero: the
   * heat tracker reads counters that only grow. At most one per volume record.
   */
  private readonly closedCounters = new Map<number, VolumeCounters>();
  /**
   * Names of volumes being created: createVolume awaits its file's directory
   * sync before the record lands, and a second create of the name meanwhile
   * must not pass the exists check. One entry per create in flight.
   */
  private readonly creating = new Set<string>();
  /** Opens in progress (openSliced), by name: a second open of the name meanwhile shares the first. At most one per volume record. */
  private readonly opening = new Map<string, Promise<Volume>>();
  /** Set by close(): an open in progress gives up at its next slice. */
  private closing = false;
  /** Volumes whose last open failed, by name, and when (at most one entry per volume; cleared by an open or a delete). */
  private readonly unopenable = new Map<string, { entry: UnavailableVolume; atMs: number }>();
  /** Volumes tryOpenNow is trying in the background (one try each at a time). */
  private readonly tryingInBackground = new Set<string>();
  /**
   * Cold chunks (one stripe each) of volumes not open, by volume id, as the
   * index holds them (coldStripeCount): counted by the start's scan
   * (highestDestagedSeqSlices) or at first need, dropped when the volume
   * opens (its `stripes` is the figure then) or is deleted. Nothing else
   * changes a closed volume's Cold chunks: compaction and a rebuild move a
   * stripe, the chunk stays Cold. At most one entry per volume record.
   */
  private readonly closedColdChunks = new Map<number, number>();
  /**
   * unfinishedMove's answer for volumes not open, by volume id, read from the
   * index at first need (the control loop asks at every pass), dropped when
   * the volume opens or is deleted: as for closedColdChunks, nothing else
   * changes a closed volume's chunk states. At most one entry per volume record.
   */
  private readonly closedMoveLeft = new Map<number, { chunksOnFile: number; offPlacement: boolean }>();
  /** The front ends whose clients deleteVolume asks about (one per NBD server). */
  private readonly clientSources = new Set<VolumeClients>();
  /**
   * Names of volumes a delete has taken (past its in-use check) until it
   * ends: a front end refuses an open of one as an unknown name
   * (isBeingDeleted). At most one entry per volume record.
   */
  private readonly deleting = new Set<string>();
  /** Chunk-map removals of deleted volumes running (removeChunkMap), by volume id. */
  private readonly removals = new Map<number, Promise<void>>();
  cold: (ColdTier & { destager: Destager; policy: ErasureCodingPolicy; reconstructor: Reconstructor }) | null = null;

  /** This data directory's id (MetaStore.dataDirId), named in every pool identity. */
  readonly dataDirId: string;

  constructor(readonly meta: MetaStore) {
    this.dataDirId = meta.dataDirId();
    for (const rec of meta.listPools()) this.pools.set(rec.name, rec.uuid === undefined ? this.legacyPool(rec) : new Pool(rec, this.dataDirId));
    // Each pool's identity checked now (an earlier version's gets one); one not the pool stays
    // offline, now and whenever its directory changes while the daemon runs (Pool.identityRepair).
    for (const p of this.pools.values()) p.isOnline();
    this.recomputeUsage();
  }

  /**
   * A pool recorded by a build before the pool identity (no uuid): its
   * directory gets an identity the first time it is seen holding our layout
   * (holdsPoolLayout: the lock file, volumes/, journal/, segments/, objects/),
   * file first, then the record. Seen empty (a disk not mounted, its mount
   * point there) it is offline as one with an identity missing is, until its
   * disk is back (or `pools replace`). The uuid is only in memory until then.
   */
  private legacyPool(rec: PoolRecord): Pool {
    const dir = rec.path;
    let found: PoolIdentity | null = null;
    try {
      found = readPoolIdentity(dir);
    } catch {
      // Judged by isOnline (identityProblem says why).
    }
    // An identity a crash left before its record (file first): this pool's, kept.
    const uuid = found !== null && found.dataDirId === this.dataDirId && found.pool === rec.name ? found.poolUuid : randomUUID();
    const pool = new Pool({ ...rec, uuid }, this.dataDirId);
    pool.legacyUpgrade = () => {
      const there = readPoolIdentity(dir);
      if (there === null) {
        if (!holdsPoolLayout(dir)) return false;
        writePoolIdentity(dir, { pool: rec.name, poolUuid: uuid, dataDirId: this.dataDirId });
      } else if (there.dataDirId !== this.dataDirId || there.pool !== rec.name || there.poolUuid !== uuid) {
        // Another pool's or another data directory's disk mounted here: not this pool, and its
        // uuid is not recorded (recorded, the pool's own disk, mounted later without an
        // identity, would never be upgraded: offline for good).
        return false;
      }
      // The same record with the uuid (the path, tier, capacity of the one in the index now).
      const now = this.meta.pools.get(rec.name) ?? rec;
      if (now.uuid === undefined) this.meta.pools.putSync(rec.name, { ...now, uuid });
      log.info('pool directory from an earlier version: its pool identity is written', { pool: rec.name, path: dir, uuid });
      return true;
    };
    return pool;
  }

  /**
   * A pool new to the index: its directory's identity, written now (durable:
   * file and directory fsync) unless one of this data directory is there (a
   * crash between it and the record; a pool renamed in the configuration,
   * same directory). Another data directory's identity is refused: that disk
   * is another node's pool.
   */
  private newPoolUuid(rec: PoolRecord): string {
    for (let attempt = 0; attempt < 2; attempt++) {
      const found = readPoolIdentity(rec.path);
      if (found !== null) {
        if (found.dataDirId !== this.dataDirId) throw new InvalidArgument(`pool ${rec.name}: ${rec.path} holds the identity of pool ${found.pool} of another data directory (id ${found.dataDirId}): that disk belongs to another node's pool; give pool ${rec.name} an empty directory`);
        return found.poolUuid;
      }
      const uuid = randomUUID();
      if (writePoolIdentity(rec.path, { pool: rec.name, poolUuid: uuid, dataDirId: this.dataDirId })) return uuid;
    }
    throw new Error(`pool ${rec.name}: the pool identity in ${rec.path} kept changing while it was written`);
  }

  static open(dataDir: string): VolumeManager {
    return new VolumeManager(MetaStore.open(dataDir));
  }

  /**
   * Every pool's used bytes from every chunk entry (~1-1.5 s per 1M entries,
   * most of it decoding them). In one go, not sliced as a volume's open is
   * (openSliced): it runs in the constructor, before the daemon listens, so
   * it holds up no client, only the start; and a pool chosen for a new
   * volume (choosePool) needs the figure whole.
   */
  private recomputeUsage(): void {
    for (const p of this.pools.values()) p.usedBytes = 0;
    for (const v of this.meta.listVolumes()) {
      for (const { entry } of this.meta.volumeChunks(v.id)) {
        // Not a chunk on a pool its disk was replaced under (lostOnPools): the new disk does not hold it.
        if (entry.state === ChunkState.Allocated && v.lostOnPools?.includes(entry.pool) !== true) { const p = this.pools.get(entry.pool); if (p) p.usedBytes += v.chunkSizeBytes; }
      }
    }
  }

  /**
   * Adds or updates a pool definition (directory is created if missing, unless
   * `makeDir` is false: a known pool given a path whose directory is not there
   * yet, registered offline).
   */
  async putPool(rec: PoolRecord, opts: { makeDir?: boolean } = {}): Promise<Pool> {
    if (opts.makeDir !== false) ensureDurableDir(rec.path);
    const existing = this.pools.get(rec.name);
    const recorded = this.meta.pools.get(rec.name);
    // The uuid stays the index's (the configuration does not carry it); a new pool's directory gets its identity first.
    const uuid = rec.uuid ?? (recorded !== undefined ? recorded.uuid : this.newPoolUuid(rec));
    const full: PoolRecord = uuid === undefined ? { ...rec } : { ...rec, uuid };
    if (uuid === undefined) delete full.uuid;
    await this.meta.pools.put(rec.name, full);
    // A record from before the identity keeps the upgrade of legacyPool (its uuid in memory until written).
    const pool = uuid === undefined ? this.legacyPool(full) : new Pool(full, this.dataDirId);
    if (existing) pool.usedBytes = existing.usedBytes;
    this.pools.set(rec.name, pool);
    pool.isOnline(); // its identity checked now, as the constructor does
    return pool;
  }

  /**
   * The highest destagedSeq of any chunk entry of a listed volume (the journal
   * numbers new records above it), read `sliceEntries` entries at a time: yields
   * the running figure after each slice, the final one last. Each slice is a
   * fresh range from the last key read, so a caller may yield to the event loop
   * between two without holding a cursor or read snapshot. Slices from
   * different snapshots give the figure one would: a chunk's destagedSeq only
   * rises, and a deleted volume's entries (left out: not listed) go with its
   * record, its id never reused.
   */
  *highestDestagedSeqSlices(sliceEntries: number): Generator<number, void, undefined> {
    let highest = 0;
    for (const vol of this.meta.listVolumes()) {
      let from: [number, number] = [vol.id, 0];
      let exclusiveStart = false;
      // The same entries give the volume's cold chunk count (closedColdChunks): no second scan.
      const chunkCount = Volume.chunkCount(vol.sizeBytes, vol.chunkSizeBytes);
      let cold = 0;
      for (;;) {
        let read = 0;
        for (const { key, value } of this.meta.chunks.getRange({ start: from, end: [vol.id + 1, 0], exclusiveStart, limit: sliceEntries })) {
          highest = Math.max(highest, value.destagedSeq ?? 0);
          if (isColdChunk(key[1], value, chunkCount)) cold++;
          from = key;
          read++;
        }
        if (read < sliceEntries) break;
        exclusiveStart = true;
        yield highest;
      }
      if (!this.open.has(vol.name)) this.closedColdChunks.set(vol.id, cold);
    }
    yield highest;
  }

  /** The cold tier's journal directory (on journalPool()), or null without a hot pool. */
  journalDir(): string | null {
    const hot = this.journalPool();
    return hot ? path.join(hot.rec.path, 'journal') : null;
  }

  /**
   * The pool holding the cold tier's journal: the one the index records it
   * was made on (MetaStore.markJournalMade), while that pool is known; else
   * (a first start, an index from before that record) the first hot pool.
   * Not simply the first: the pool map is the index's pools in name order,
   * then new configured ones; a hot pool listed first in couchestor.yaml but
   * sorting after another, or one added whose name sorts first, or the
   * journal's pool made another tier, moved the journal at the next start to
   * an empty one on another pool, the acknowledged writes not yet destaged
   * dropped without a word. Its pool made another tier keeps it (nothing
   * moves a journal's records; startColdTier warns).
   */
  journalPool(): Pool | undefined {
    const recorded = new Set(this.meta.journalPools());
    const pools = [...this.pools.values()];
    return pools.find((p) => p.rec.tier === 'hot' && recorded.has(p.name)) ?? pools.find((p) => recorded.has(p.name)) ?? pools.find((p) => p.rec.tier === 'hot');
  }

  /**
   * Starts the cold tier: stripe store over the cold pools, the journal on
   * the first hot pool (replayed now), and the destager.
   */
  startColdTier(policy: ErasureCodingPolicy, opts: DestagerOptions & { journalCapacityBytes?: number; highestDestagedSeq?: number }): void {
    const hot = this.journalPool();
    if (!hot) throw new NoSuitablePool('the journal needs a hot pool');
    if (hot.rec.tier !== 'hot') log.warn(`the cold tier's journal stays on pool ${hot.name}, now a ${hot.rec.tier} pool: it holds the acknowledged writes to cold volumes not yet destaged, and nothing moves them to another pool`, { pool: hot.name, path: this.journalDir() });
    // Its journal holds acknowledged writes not yet destaged: no start without it (openManager leaves a known pool's missing directory missing).
    if (!hot.isOnline()) {
      // Present but not the pool (an empty mount point, another disk): no journal/ is made there.
      if (hot.offlineButPresent()) throw new PoolOffline(`pool ${hot.name} holds the cold tier's journal, and its directory is not the pool: ${hot.offlineReason() ?? 'its identity does not match'}; the journal holds the acknowledged writes to cold volumes not yet destaged: mount the pool's disk (a replaced disk's journal is lost: \`couchestor pools replace ${hot.name} --discard-volumes\`, then an empty journal/ in it starts an empty one)`);
      throw new PoolOffline(`pool ${hot.name} holds the cold tier's journal, and its directory ${hot.rec.path} is missing or not writable: mount its disk; a replaced disk's journal is lost (make the directory, and an empty journal/ in it after \`couchestor pools replace ${hot.name} --discard-volumes\`, to start with an empty one)`);
    }
    const journalDir = this.journalDir()!;
    const journalExisted = fs.existsSync(journalDir);
    hot.ensureDirs();
    const stripes = new StripeStore(() => [...this.pools.values()], policy);
    stripes.useIndex(this.meta); // pool marks, before any stripe is written (stripe-store.ts POOLS_WRITTEN_DB)
    const ids = new Set(this.meta.listVolumes().map((v) => v.id));
    // The daemon reads it beforehand with yields between slices (highestDestagedSeqSliced);
    // read here in one go, the slices block ~0.85 s per 100,000 entries.
    let highestDestagedSeq = opts.highestDestagedSeq ?? 0;
    if (opts.highestDestagedSeq === undefined) for (const h of this.highestDestagedSeqSlices(Number.MAX_SAFE_INTEGER)) highestDestagedSeq = h;
    if (!journalExisted) this.refuseLostJournal(hot.name, journalDir, highestDestagedSeq);
    this.refuseMissingJournalFiles(hot.name, journalDir);
    const journal = Journal.open({
      dir: journalDir,
      chunkSizeBytes: policy.stripeSizeBytes,
      capacityBytes: opts.journalCapacityBytes,
      destagedSeq: (v, c) => this.meta.chunks.get([v, c])?.destagedSeq ?? 0,
      volumeExists: (id) => ids.has(id),
      highestDestagedSeq,
    });
    // Its directory exists now: missing at a later start, it is a lost journal (refuseLostJournal).
    this.meta.markJournalMade(hot.name, journalDir);
    // The index's set of journal files: the ones there now (replayed; one a crash left unrecorded
    // included), then each named or removed as it happens (Journal.fileLog).
    this.recordJournalFiles(journal.namedFileNos());
    this.meta.setJournalId(ensureJournalId(journalDir, this.meta.journalId()));
    journal.fileLog = {
      named: (no) => this.meta.journalFiles.putSync(no, 1),
      removing: (no) => {
        if (this.meta.journalFiles.get(no) !== undefined) this.meta.journalFiles.removeSync(no);
      },
    };
    const destager = new Destager(journal, { borrow: (id) => this.borrowById(id), giveBack: (vol) => this.giveBack(vol) }, opts);
    const reconstructor = new Reconstructor(
      stripes,
      (id) => this.borrowById(id),
      () => this.allVolumes(),
      {
        retryIntervalMs: 10_000,
        scrubIntervalMs: policy.scrubbingEnabled ? policy.scrubIntervalMs : 0,
        scrubStripesPerSecond: 200,
      },
      {
        list: () => this.volumesForPass(),
        borrow: (name) => this.borrowForPass(name),
        giveBack: (vol) => this.giveBack(vol),
        openFailure: (name) => this.openFailure(name),
      },
      this.meta,
      () => this.coldStripeCount(),
    );
    this.cold = { journal, stripes, destager, policy, reconstructor };
    destager.start();
    reconstructor.start();
  }

  /**
   * Throws when the journal directory `dir`, missing, existed before: made
   * empty, the acknowledged writes to cold volumes it held and that were not
   * yet destaged would be dropped without a word (the volumes read their old
   * bytes). A wiped disk, or the wrong one, mounted at the hot pool's path
   * looks like this. "Existed before" is the index's record that it was made
   * on this pool (MetaStore.markJournalMade, written at each start once it
   * exists), not a guess from the directory's contents: there are none.
   * An index from a build before that record, with no record of any journal,
   * had one if a cold volume exists or a destaged seq is recorded. A first
   * start, and the operator's empty journal/ (the loss accepted), go on.
   */
  refuseLostJournal(pool: string, dir: string, highestDestagedSeq: number): void {
    const existed = this.meta.journalMadeOn(pool) || (!this.meta.journalMadeOn() && (highestDestagedSeq > 0 || this.meta.listVolumes().some((v) => v.tier === 'cold')));
    if (!existed) return;
    throw new PoolOffline(
      `the cold tier's journal directory ${dir} on pool ${pool} is missing, but the journal was there before: it holds the acknowledged writes to cold volumes not yet destaged, and an empty journal would drop them (is a wiped or the wrong disk mounted at ${path.dirname(dir)}?). Mount or restore the disk that holds it and start again; or, accepting the loss of those writes (their volumes read their older bytes), make an empty directory ${dir}: serve then starts with an empty journal`,
    );
  }

  /**
   * Throws when journal files the index recorded (Journal.fileLog: named,
   * not yet removed after being fully destaged) are missing from `dir`: they
   * held acknowledged writes to cold volumes not yet destaged, and an open
   * without them drops those writes without a word (`rm journal/*.log`, an
   * old backup of the journal restored, the wrong disk). An empty `journal/`
   * made by the operator (no journal identity in it: JOURNAL_ID_FILE, which
   * every open makes) is the accepted loss refuseLostJournal offers: its
   * records are dropped and the open goes on. A journal identity other than
   * the one the index recorded is another journal: refused.
   */
  refuseMissingJournalFiles(pool: string, dir: string): void {
    const found = this.missingJournalFiles(pool, dir);
    if (found === null) return;
    if (found.acceptedLoss) {
      log.warn("the cold tier's journal directory was made again empty: the acknowledged writes to cold volumes not yet destaged in its lost files are dropped (their volumes read their older bytes)", { pool, dir, filesLost: found.missing });
      this.recordJournalFiles([]);
      return;
    }
    throw new PoolOffline(found.problem);
  }

  /**
   * What refuseMissingJournalFiles judges, without changing anything (fsck):
   * null when nothing is missing; else the refusal's words, or acceptedLoss
   * for an operator's empty journal/.
   */
  missingJournalFiles(pool: string, dir: string): { problem: string; missing: number; acceptedLoss: boolean } | null {
    const id = readJournalId(dir);
    const recordedId = this.meta.journalId();
    if (id !== null && recordedId !== undefined && id !== recordedId) {
      return { missing: 0, acceptedLoss: false, problem: `the cold tier's journal directory ${dir} on pool ${pool} holds another journal (id ${id}; the index's is ${recordedId}): the wrong disk or an old copy is there. Mount or restore the disk that holds this journal and start again; or, accepting the loss of the writes to cold volumes not yet destaged (their volumes read their older bytes), move ${dir} away and make an empty directory ${dir}: serve then starts with an empty journal` };
    }
    const recorded = [...this.meta.journalFiles.getKeys()];
    if (recorded.length === 0) return null;
    const present = new Set(fs.existsSync(dir) ? journalFileEntries(dir).map((e) => e.no) : []);
    const missing = recorded.filter((no) => !present.has(no));
    if (missing.length === 0) return null;
    // The journal's identity (JOURNAL_ID_FILE, a dotfile: `rm journal/*` and `rm -r journal/*` leave it) says the
    // directory is the journal that was in use; without it (and empty) it is the operator's new one.
    const acceptedLoss = !fs.existsSync(path.join(dir, JOURNAL_ID_FILE)) && present.size === 0;
    const names = missing.slice(0, 5).map((no) => `journal-${String(no).padStart(10, '0')}-*.log`);
    return {
      missing: missing.length,
      acceptedLoss,
      problem: `the cold tier's journal in ${dir} on pool ${pool} is missing ${missing.length} of its files (${names.join(', ')}${missing.length > 5 ? ', ...' : ''}), which the index recorded and were not yet destaged: they hold acknowledged writes to cold volumes, and an open without them would drop those writes (were they removed, or is an older copy of the journal, or the wrong disk, there?). Restore them and start again; or, accepting the loss of those writes (their volumes read their older bytes), move ${dir} away and make an empty directory ${dir}: serve then starts with an empty journal`,
    };
  }

  /** Makes the index's set of journal files exactly `nos` (one durable commit when it changes). */
  private recordJournalFiles(nos: number[]): void {
    const want = new Set(nos);
    const have = [...this.meta.journalFiles.getKeys()];
    if (have.length === want.size && have.every((no) => want.has(no))) return;
    this.meta.journalFiles.transactionSync(() => {
      for (const no of have) if (!want.has(no)) this.meta.journalFiles.removeSync(no);
      for (const no of want) this.meta.journalFiles.putSync(no, 1);
    });
  }

  /** Every volume, opened and pinned (for good): only for tools and tests; the daemon's passes use volumesForPass. */
  allVolumes(): Volume[] {
    return this.meta.listVolumes().map((r) => this.openVolume(r.name));
  }

  /**
   * The Volume of id `id` (opened if needed), lent as borrowVolume's: the
   * destager and the rebuild queue hold it across awaits (a destage, a
   * stripe's rebuild and flip) and give it back once done with it
   * (giveBack). Pinned here before, every volume with journal records after
   * a restart, and every volume a scrub repaired a stripe of, stayed open for
   * good. An open volume is lent in this turn; a closed one is opened a
   * slice at a time (borrowVolumeAsync, sharing an open in progress: an NBD
   * client's of the same volume): read in one go, the destage of a 1M-entry
   * volume after a restart held the event loop ~0.9 s. Null when no volume
   * has that id (deleted, before or while it opened).
   */
  borrowById(id: number): Volume | null | Promise<Volume | null> {
    for (const v of this.open.values()) if (v.rec.id === id) return this.borrowVolume(v.name);
    const rec = this.meta.listVolumes().find((v) => v.id === id);
    if (rec === undefined) return null;
    return this.borrowVolumeAsync(rec.name).then(
      (vol) => {
        if (vol.rec.id === id) return vol;
        // Deleted while it opened, and its name taken by a new volume since: not this id's.
        this.giveBack(vol);
        return null;
      },
      (err: unknown) => {
        if (this.meta.volumes.get(rec.name)?.id !== id) return null; // deleted while it opened
        throw err;
      },
    );
  }

  listVolumes(): VolumeRecord[] {
    return this.meta.listVolumes();
  }

  getVolumeRecord(name: string): VolumeRecord | undefined {
    return this.meta.volumes.get(name);
  }

  /**
   * `couchestor pools replace NAME`: the pool's disk died and a new, empty one
   * is mounted at its path. Refused unless the directory is there and empty
   * (a `lost+found` aside), and the pool is not online with its identity.
   * A cold pool's shards are rebuilt from parity: the rebuild machinery learns
   * every shard there is gone from an interrupted whole-pool rebuild record
   * (the retry timer rebuilds the whole pool, checking each shard), run now
   * when the cold tier is open (`rebuild`). A hot/warm pool holds single
   * copies: a volume with chunks only there is refused unless
   * `discardVolumes`, and is then marked lost (lostOnPools: it never opens,
   * reads are I/O errors, never zeros, until deleted). Then a new identity is
   * written into the directory (durable), the record gets its uuid, and the
   * pool counts as online at its next use.
   */
  async replacePool(name: string, opts: { discardVolumes?: boolean } = {}): Promise<{ pool: string; tier: Tier; uuid: string; volumesLost: string[]; objectsLost: number; rebuild: 'queued' | 'none'; journalLost: boolean }> {
    const pool = this.pools.get(name);
    if (!pool) throw new NotFound(`no pool named ${name}`);
    const dir = pool.rec.path;
    if (!fs.existsSync(dir)) throw new InvalidArgument(`pool ${name}: directory ${dir} is missing: mount the new disk and make the directory (empty), then run \`couchestor pools replace ${name}\` again`);
    if (pool.isOnline()) throw new InvalidArgument(`pool ${name} is online: ${dir} holds its identity; \`pools replace\` is for a new, empty disk replacing a dead one`);
    // lost+found (mkfs), and an identity's temp file a power cut left while an earlier replace wrote it.
    const entries = dirEntries(dir).filter((n) => n !== 'lost+found' && !/^\.couchestor-pool\.tmp-\d+$/.test(n));
    if (entries.length > 0) {
      throw new InvalidArgument(`pool ${name}: ${dir} is not empty (${entries.slice(0, 5).join(', ')}${entries.length > 5 ? ', ...' : ''}): \`pools replace\` takes a new, empty disk; ${pool.offlineReason() ?? ''}`);
    }
    const volumesLost: string[] = [];
    let journalLost = false;
    // A hot pool also holds hot buckets' S3 object files (single copies, as volume files).
    const objects = pool.rec.tier === 'hot' ? hotObjectsOnPool(this.meta, name) : { objects: [], parts: 0 };
    const objectsLost = objects.objects.length + objects.parts;
    if (pool.rec.tier !== 'cold') {
      for (const v of this.meta.listVolumes()) {
        if ([...this.meta.volumeChunks(v.id)].some(({ entry }) => entry.state === ChunkState.Allocated && entry.pool === name)) volumesLost.push(v.name);
      }
      journalLost = this.meta.journalMadeOn(name);
      // The running cold tier's journal is open on the old disk: writes to cold volumes would go on
      // being acknowledged into it after the replace, and dropped with it at the next start.
      if (journalLost && this.cold !== null) {
        throw new InvalidArgument(`pool ${name} holds the cold tier's journal, open in the running daemon: stop the daemon, then run \`couchestor pools replace ${name} --discard-volumes\` (serve then refuses to start until an empty journal/ is made in the pool directory: the writes to cold volumes not yet destaged are lost)`);
      }
      if ((volumesLost.length > 0 || journalLost || objectsLost > 0) && opts.discardVolumes !== true) {
        const what = [
          ...(volumesLost.length > 0 ? [`volumes ${volumesLost.join(', ')} have data only on it (${pool.rec.tier} pools hold single copies)`] : []),
          ...(objects.objects.length > 0 ? [`S3 objects ${objects.objects.slice(0, 5).join(', ')}${objects.objects.length > 5 ? `, ... (${objects.objects.length} in all)` : ''} have data only on it`] : []),
          ...(objects.parts > 0 ? [`${objects.parts} uploaded parts of multipart uploads in progress are on it`] : []),
          ...(journalLost ? ["it held the cold tier's journal (the acknowledged writes to cold volumes not yet destaged)"] : []),
        ];
        throw new InvalidArgument(`pool ${name}: ${what.join('; ')}: replacing its disk loses that. If the old disk can be mounted, mount it instead; else run \`couchestor pools replace ${name} --discard-volumes\` (those volumes then read as I/O errors until deleted${objectsLost > 0 ? ', those objects answer an error until deleted' : ''}${journalLost ? '; serve refuses to start until an empty journal/ is made in the pool directory' : ''})`);
      }
    }
    const uuid = randomUUID();
    // The identity first (durable), then the index: a crash between leaves an identity the
    // record does not name (offline, `pools replace` again after emptying the directory).
    if (!writePoolIdentity(dir, { pool: name, poolUuid: uuid, dataDirId: this.dataDirId })) throw new InvalidArgument(`pool ${name}: an identity appeared in ${dir} meanwhile`);
    const rec: PoolRecord = { ...pool.rec, uuid };
    await this.meta.transaction(() => {
      this.meta.pools.put(name, rec);
      for (const v of volumesLost) {
        const vr = this.meta.volumes.get(v);
        if (vr) this.meta.volumes.put(v, { ...vr, lostOnPools: [...new Set([...(vr.lostOnPools ?? []), name])] });
      }
      if (objectsLost > 0) markHotObjectsLost(this.meta, name);
      // Every shard it held is gone: a whole-pool rebuild, as one cut (reconstruction.ts retryPool).
      if (pool.rec.tier === 'cold') this.meta.incompleteRebuilds.put(name, { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' });
    });
    await this.meta.durable();
    for (const v of volumesLost) {
      const open = this.open.get(v);
      this.open.delete(v);
      if (open) this.pinned.delete(open.rec.id);
      this.unopenable.delete(v);
      if (open) await open.close().catch(() => undefined);
    }
    pool.replacedBy(rec);
    if (pool.rec.tier !== 'cold') pool.usedBytes = 0;
    // The S3 fan-out on the new disk: a hot pool online at start that lost its disk while the
    // daemon runs has no adopt hook (daemon.ts adoptWhenBack, which makes it) to run; without
    // it PUTs placed there answer 503.
    if (pool.rec.tier === 'hot' && !pool.adoptPending && pool.isOnline()) prepareHotPool(pool);
    log.warn('pool replaced: a new, empty disk with a new identity', { pool: name, path: dir, uuid, volumesLost: volumesLost.join(','), objectsLost, journalLost });
    return { pool: name, tier: pool.rec.tier, uuid, volumesLost, objectsLost, rebuild: pool.rec.tier === 'cold' ? 'queued' : 'none', journalLost };
  }

  /** Picks the online pool of `tier` with the most free space that fits. */
  choosePool(tier: Tier, needBytes: number): Pool {
    let best: Pool | undefined;
    for (const p of this.pools.values()) {
      if (p.rec.tier !== tier || !p.isOnline()) continue;
      if (!best || p.freeBytes() > best.freeBytes()) best = p;
    }
    if (!best) {
      const offline = [...this.pools.values()].filter((p) => p.rec.tier === tier).map((p) => p.name);
      // Pools of the tier there but offline: availability (503), passes once they are back; none configured: 507.
      if (offline.length > 0) throw new TooFewOnlinePools(`no online pool with tier=${tier} (${offline.join(', ')} offline)`);
      throw new NoSuitablePool(`no pool with tier=${tier}`);
    }
    if (best.freeBytes() < Math.min(needBytes, DEFAULT_CHUNK_SIZE_BYTES)) {
      throw new NoSuitablePool(`no pool with tier=${tier} has room (largest free: ${best.freeBytes()} bytes)`);
    }
    return best;
  }

  async createVolume(opts: CreateVolumeOptions): Promise<VolumeRecord> {
    if (!VOLUME_NAME_RE.test(opts.name)) {
      throw new InvalidArgument(`invalid volume name ${JSON.stringify(opts.name)}: use 1-128 of [A-Za-z0-9._-], starting alphanumeric`);
    }
    validateSize(opts.sizeBytes);
    const chunkSizeBytes = opts.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES;
    if (chunkSizeBytes < 4096 || (chunkSizeBytes & (chunkSizeBytes - 1)) !== 0) {
      throw new InvalidArgument('chunk size must be a power of two >= 4096');
    }
    if (this.meta.volumes.get(opts.name) || this.creating.has(opts.name)) throw new AlreadyExists(`volume ${opts.name} already exists`);
    const named = opts.pool !== undefined ? this.poolByName(opts.pool) : undefined;
    // --pool names where the volume's file lives: a pool of the volume's tier (with
    // no tier asked, the tier is the pool's). A cold volume is striped over every
    // cold pool; its --pool names the hot pool of its file (after a promotion).
    const tier = opts.tier ?? (named?.rec.tier === 'cold' ? undefined : named?.rec.tier) ?? 'hot';
    if (named && named.rec.tier !== (tier === 'cold' ? 'hot' : tier)) {
      const asked = opts.tier === undefined ? 'no tier was asked' : `tier ${tier} was asked`;
      throw new InvalidArgument(
        named.rec.tier === 'cold'
          ? `pool ${named.name} is a cold pool and ${asked}: a cold volume is striped over every cold pool, not placed on one; create it with tier cold and no pool (or a hot pool for its file after a promotion)`
          : tier === 'cold'
            ? `pool ${named.name} is a ${named.rec.tier} pool and tier cold was asked: a cold volume's pool is the hot pool of its file (after a promotion); name a hot pool or none`
            : `pool ${named.name} is a ${named.rec.tier} pool and ${asked}: name a ${tier} pool, or leave the pool out`,
      );
    }
    if (tier === 'cold') {
      if (!this.cold) throw new NoSuitablePool('the cold tier is not running (no erasure-coding policy or cold pools)');
      if (chunkSizeBytes !== this.cold.policy.stripeSizeBytes) {
        throw new InvalidArgument(`cold volumes use the stripe size ${this.cold.policy.stripeSizeBytes} as chunk size`);
      }
    }
    // Cold volumes keep their journal and (after promotion) file on a hot pool.
    const pool = named ?? this.choosePool(tier === 'cold' ? 'hot' : tier, opts.sizeBytes);
    pool.ensureDirs();
    const rec: VolumeRecord = {
      name: opts.name,
      id: this.meta.nextVolumeId(),
      sizeBytes: opts.sizeBytes,
      chunkSizeBytes,
      tier,
      poolName: pool.name,
      readOnly: opts.readOnly ?? false,
      createdMs: Date.now(),
      ...(opts.labels ? { labels: opts.labels } : {}),
      // A new volume keeps no file on purpose (see keptFilePools).
      keptFilePools: [],
    };
    // A stale file from an interrupted delete must not leak old bytes. The
    // placement file is made here, its name durable before the record is
    // (fdatasync does not cover a new name): a FLUSH on the volume, a SWITCH
    // of a promoted chunk into the file, never depend on a name a power cut
    // could take, and no FLUSH waits for a directory sync.
    const file = pool.volumeFile(rec.id);
    this.creating.add(rec.name);
    try {
      fs.rmSync(file, { force: true });
      const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
      try {
        await syncNewEntry(file, fd);
      } finally {
        fs.closeSync(fd);
      }
      await this.meta.volumes.put(rec.name, rec);
    } catch (err) {
      // No record: the file would be an orphan for good (ids are never
      // reused, so no later create reclaims it).
      fs.rmSync(file, { force: true });
      throw err;
    } finally {
      this.creating.delete(rec.name);
    }
    await this.meta.durable();
    return rec;
  }

  poolByName(name: string): Pool {
    const p = this.pools.get(name);
    if (!p) throw new NotFound(`no pool named ${name}`);
    return p;
  }

  /**
   * The shared open Volume for `name`, opening it on first use, pinned: it
   * stays open until the volume is deleted or the daemon stops. For clients
   * and work that uses the volume beyond one call; a background pass that
   * looks at a volume borrows it instead (borrowVolume).
   */
  openVolume(name: string): Volume {
    const vol = this.openShared(name);
    this.pinned.add(vol.rec.id);
    return vol;
  }

  /**
   * The shared open Volume for `name` (opened if needed, as openVolume), lent
   * to a background pass: it stays open until every loan of it is given back
   * (giveBack), then closes unless something else holds it (see `open`).
   */
  borrowVolume(name: string): Volume {
    const vol = this.openShared(name);
    this.loans.set(vol.rec.id, (this.loans.get(vol.rec.id) ?? 0) + 1);
    return vol;
  }

  /** Ends one loan of `vol` (borrowVolume); the last one closes it when nothing else holds it. */
  giveBack(vol: Volume): void {
    const id = vol.rec.id;
    const n = this.loans.get(id);
    if (n === undefined) {
      // A bookkeeping bug, not worth the daemon (the callers run it from promise callbacks): kept open.
      log.error('volume given back more often than it was lent; left open', { volume: vol.name });
      return;
    }
    if (n > 1) {
      this.loans.set(id, n - 1);
      return;
    }
    this.loans.delete(id);
    this.closeIfUnheld(vol);
  }

  /** borrowVolume, fn, giveBack. */
  withVolume<T>(name: string, fn: (vol: Volume) => T): T {
    const vol = this.borrowVolume(name);
    try {
      return fn(vol);
    } finally {
      this.giveBack(vol);
    }
  }

  /**
   * The open volumes by what holds them: pinned (lent too or not), lent only,
   * and neither (idle: not yet quiet, or with journal records, when their last
   * loan ended; closed at a later one).
   */
  openCounts(): { pinned: number; lent: number; idle: number } {
    let pinned = 0;
    let lent = 0;
    for (const v of this.open.values()) {
      if (this.pinned.has(v.rec.id)) pinned++;
      else if (this.loans.has(v.rec.id)) lent++;
    }
    return { pinned, lent, idle: this.open.size - pinned - lent };
  }

  /**
   * Closes `vol` when nothing holds it: not pinned, not lent, not failed (a
   * failed volume answers EIO until the daemon restarts; reopened it would
   * serve again), and quiet (nothing in flight, nothing written that is not
   * durable: closing a file with writes not yet synced would lose their
   * write-back error, which only descriptors open at the time see). The
   * journal's records of a cold volume are not the volume's: the destager
   * opens it (pinned) to destage them; kept open meanwhile, it saves that
   * reopen. One not quiet yet stays open unpinned: the next loan's end looks again.
   */
  private closeIfUnheld(vol: Volume): void {
    const id = vol.rec.id;
    if (this.open.get(vol.name) !== vol || this.pinned.has(id) || this.loans.has(id) || vol.failed !== null || !vol.quiet()) return;
    if (this.cold?.journal.hasVolume(id)) return;
    this.open.delete(vol.name);
    // Its cold chunks as the index has them (coldStripeCount): its in-memory map mirrors them.
    this.closedColdChunks.set(id, vol.stripes.size);
    const c = vol.counters;
    if (c.readOps + c.writeOps + c.readBytes + c.writeBytes > 0) this.closedCounters.set(id, { ...c });
    vol.close().catch((err: Error) => log.warn('closing a volume nothing holds failed', { volume: vol.name, err: err.message }));
  }

  /** The shared open Volume for `name`, opening it on first use; neither pinned nor lent. */
  private openShared(name: string): Volume {
    const cached = this.open.get(name);
    // A failed volume stays failed (EIO) until the daemon restarts: never reopen it silently.
    if (cached) return cached;
    const rec = this.meta.volumes.get(name);
    if (!rec) throw new NotFound(`no volume named ${name}`);
    const at = { pool: rec.poolName };
    try {
      const vol = this.openRecord(rec, at);
      this.unopenable.delete(name);
      return vol;
    } catch (err) {
      this.unopenable.set(name, { entry: { volume: name, pool: at.pool, error: (err as Error).message }, atMs: Date.now() });
      throw err;
    }
  }

  /**
   * Every volume as a background pass (the scrub, a pool rebuild) takes them,
   * opening none that may open: the open ones; the closed ones, by record
   * (nothing but compaction, same bytes elsewhere, and a delete changes a
   * closed volume's chunk map: the index answers for it, and a pass borrows
   * one it must work on: borrowForPass); and those that cannot be opened now,
   * with the pool and error: a volume that may not open (mayNotOpen) is tried
   * (and closed again): now when that is quick (quickToTry), else after the
   * others with its chunk map read a slice at a time (tryOpen), the listing
   * then a promise (read in one go, a volume of 1M entries whose last open
   * failed held the event loop seconds at every scrub). Answered in this turn
   * otherwise: the retry timer's rebuild is running once its call returns
   * (rebuildRunning). Opening every volume here (availableVolumes
   * before) kept each open for good after the first scrub: a descriptor and a
   * chunk map per volume, until EMFILE.
   */
  volumesForPass(): PassVolumes | Promise<PassVolumes> {
    const listed: PassVolumes = { open: [], closed: [], unavailable: [] };
    const online = new Map<string, boolean>();
    // Tried after the others, a slice at a time (a promise): the pass waits for those only.
    const big: VolumeRecord[] = [];
    for (const rec of this.meta.listVolumes()) {
      const vol = this.open.get(rec.name);
      if (vol !== undefined) listed.open.push(vol);
      else if (!this.mayNotOpen(rec, online)) listed.closed.push(rec);
      else if (!this.quickToTry(rec)) big.push(rec);
      else {
        const failure = this.tryOpenNow(rec);
        if (failure === undefined) listed.closed.push(rec);
        else listed.unavailable.push(failure as UnavailableVolume);
      }
    }
    if (big.length === 0) return listed;
    return (async () => {
      for (const rec of big) {
        const failure = await this.tryOpen(rec.name);
        if (failure === undefined) listed.closed.push(rec);
        else if (failure !== null) listed.unavailable.push(failure);
        // null: deleted while it was tried.
      }
      return listed;
    })();
  }

  /**
   * A volume lent to a background pass (a pool rebuild's turn): an open one
   * in this turn, a closed one opened a slice at a time, sharing an open in
   * progress (borrowVolumeAsync): read in one go, the rebuild's open of a
   * 1M-entry volume held the event loop seconds.
   */
  borrowForPass(name: string): Volume | Promise<Volume> {
    return this.open.has(name) ? this.borrowVolume(name) : this.borrowVolumeAsync(name);
  }

  /**
   * Tries to open `name` (then closes it again when nothing holds it), its
   * chunk map read a slice at a time: undefined when it opened, its failure
   * (as recorded: pool and error) when not, null when no volume has that
   * name (deleted meanwhile).
   */
  async tryOpen(name: string): Promise<UnavailableVolume | undefined | null> {
    try {
      this.giveBack(await this.borrowForPass(name));
      return undefined;
    } catch (err) {
      const rec = this.meta.volumes.get(name);
      if (rec === undefined) return null;
      return this.unopenable.get(name)?.entry ?? { volume: name, pool: rec.poolName, error: (err as Error).message };
    }
  }

  /**
   * tryOpen for a caller that cannot wait (a metrics scrape, the stripe
   * counts, NBD_OPT_LIST): a volume whose chunk map is small (at most TRY_NOW_MAX_CHUNKS
   * chunks: a few ms), or that fails before its map is read (lost, its
   * placement pool offline), is tried now; a bigger one is tried in the
   * background, a slice at a time (shared with any open of it in progress),
   * and 'pending' returned: the caller answers from what is known (its last
   * failure) until that try ends.
   */
  tryOpenNow(rec: VolumeRecord): UnavailableVolume | undefined | 'pending' {
    if (!this.quickToTry(rec)) {
      if (!this.tryingInBackground.has(rec.name)) {
        this.tryingInBackground.add(rec.name);
        void this.tryOpen(rec.name).finally(() => this.tryingInBackground.delete(rec.name));
      }
      return 'pending';
    }
    try {
      this.giveBack(this.borrowVolume(rec.name));
      return undefined;
    } catch (err) {
      return this.unopenable.get(rec.name)?.entry ?? { volume: rec.name, pool: rec.poolName, error: (err as Error).message };
    }
  }

  /** Whether an open of `rec` is short enough to try in one go: a small chunk map, or one that fails before its map is read (lost, placement pool offline). */
  private quickToTry(rec: VolumeRecord): boolean {
    return Volume.chunkCount(rec.sizeBytes, rec.chunkSizeBytes) <= TRY_NOW_MAX_CHUNKS || (rec.lostOnPools?.length ?? 0) > 0 || !(this.pools.get(rec.poolName)?.isOnline() ?? false);
  }

  /**
   * Every volume's record, with `error` (and `errorPool`) for one that cannot
   * be opened now (GET /v1/volumes, `couchestor volumes list`): listed, not
   * left out, and the listing never fails for it. Opens nothing that is not
   * known to fail: a volume that may not open (mayNotOpen: lost, placement
   * pool offline, file missing, last open failed) is tried, a slice at a
   * time (tryOpen), so a big map read never holds the event loop; an open
   * volume that failed since (EIO until a restart) shows why.
   * `readOnly` (the offline `couchestor volumes list`, a read): nothing is
   * opened, made or written; such a volume is judged from its chunk map and
   * files (readOnlyOpenFailure). Tried, an open made its missing file again
   * (and the pool's directories).
   */
  async listVolumesWithErrors(opts: { readOnly?: boolean } = {}): Promise<(VolumeRecord & { error?: string; errorPool?: string })[]> {
    const out: (VolumeRecord & { error?: string; errorPool?: string })[] = [];
    const online = new Map<string, boolean>();
    for (const rec of this.meta.listVolumes()) {
      const vol = this.open.get(rec.name);
      let failure: UnavailableVolume | undefined | null;
      if (vol !== undefined) failure = vol.failed !== null ? { volume: rec.name, pool: rec.poolName, error: vol.failed.message } : undefined;
      else if (this.mayNotOpen(rec, online)) failure = opts.readOnly === true ? await this.readOnlyOpenFailure(rec) : await this.tryOpen(rec.name);
      if (failure === null) continue; // deleted while it was tried
      out.push(failure === undefined ? rec : { ...rec, error: failure.error, errorPool: failure.pool });
    }
    return out;
  }

  /**
   * Whether a closed volume may fail to open: lost, its placement pool
   * offline (both fail before any file or chunk entry is read), its file
   * missing (one stat), or its last open failed. `online` caches the pools'
   * state for one pass over the volumes.
   */
  private mayNotOpen(rec: VolumeRecord, online: Map<string, boolean>): boolean {
    if ((rec.lostOnPools?.length ?? 0) > 0 || this.unopenable.has(rec.name)) return true;
    let placementOnline = online.get(rec.poolName);
    if (placementOnline === undefined) online.set(rec.poolName, (placementOnline = this.pools.get(rec.poolName)?.isOnline() ?? false));
    return !placementOnline || !fs.existsSync(this.pools.get(rec.poolName)!.volumeFile(rec.id));
  }

  /**
   * What an open of closed volume `rec` would fail with, found without
   * opening it: its chunk map read a slice at a time (startChunkMapLoad,
   * loadChunkEntries: the index only), then each file the map has chunks in
   * looked for (finishOpen would refuse it missing: openOrCreate); undefined
   * when the open would go ahead (a missing file no chunk is in it would
   * make). Null when it was deleted meanwhile. Nothing is opened or written.
   */
  private async readOnlyOpenFailure(rec: VolumeRecord): Promise<UnavailableVolume | undefined | null> {
    const at = { pool: rec.poolName };
    try {
      const load = this.startChunkMapLoad(rec, at);
      for (;;) {
        const sliceStart = performance.now();
        let done = false;
        do {
          if (this.loadChunkEntries(load, this.meta.volumeChunks(rec.id, load.lastChunk + 1, OPEN_SLICE_ENTRIES), at) < OPEN_SLICE_ENTRIES) done = true;
        } while (!done && performance.now() - sliceStart < OPEN_SLICE_MS);
        if (done) break;
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.meta.volumes.get(rec.name)?.id !== rec.id) return null;
      }
      for (let i = 0; i < load.filePools.length; i++) {
        const pool = load.filePools[i]!;
        at.pool = pool.name;
        const file = pool.volumeFile(rec.id);
        if ((i > 0 || load.placementHoldsChunks) && !fs.existsSync(file)) {
          throw new PoolOffline(`volume file ${file} is missing but volume ${rec.name} has chunks in it on pool ${pool.name} (disk replaced or file removed outside the daemon?): not made again empty`);
        }
      }
      return undefined;
    } catch (err) {
      return { volume: rec.name, pool: at.pool, error: (err as Error).message };
    }
  }

  /**
   * The cold stripes of every volume (Reconstructor.counts: each metrics
   * scrape, API status call and control-loop pass), opening none that is
   * not known to fail: an open volume's from memory, a closed one's from
   * the index (closedColdChunks). A volume that is lost, whose placement
   * pool is offline (both fail before any file or chunk entry is read), or
   * whose last open failed is tried (and closed again), and left
   * out while it fails: unavailableVolumes() names it. Opening every volume
   * here kept a file open per volume for good (10,001 volumes: 10,044 fds)
   * and held the event loop 2-6.6 s at the first scrape.
   */
  coldStripeCount(): number {
    let stripes = 0;
    const online = new Map<string, boolean>();
    for (const rec of this.meta.listVolumes()) {
      let vol = this.open.get(rec.name);
      if (vol === undefined) {
        let placementOnline = online.get(rec.poolName);
        if (placementOnline === undefined) online.set(rec.poolName, (placementOnline = this.pools.get(rec.poolName)?.isOnline() ?? false));
        if (!placementOnline || (rec.lostOnPools?.length ?? 0) > 0 || this.unopenable.has(rec.name)) {
          // Tried (and closed again: nothing holds it), left out while it fails (or a try of a big map is under way).
          if (this.tryOpenNow(rec) !== undefined) continue;
          vol = this.open.get(rec.name);
        }
      }
      stripes += vol !== undefined ? vol.stripes.size : this.closedColdChunkCount(rec);
    }
    return stripes;
  }

  /** A closed volume's cold chunks: closedColdChunks, or read from its chunk map once. */
  private closedColdChunkCount(rec: VolumeRecord): number {
    const known = this.closedColdChunks.get(rec.id);
    if (known !== undefined) return known;
    const chunkCount = Volume.chunkCount(rec.sizeBytes, rec.chunkSizeBytes);
    let cold = 0;
    for (const { chunkIndex, entry } of this.meta.volumeChunks(rec.id)) if (isColdChunk(chunkIndex, entry, chunkCount)) cold++;
    this.closedColdChunks.set(rec.id, cold);
    return cold;
  }

  /**
   * Volumes that cannot be opened, with the pool and error. A failure
   * recorded more than UNAVAILABLE_RECHECK_MS ago is tried again first:
   * nothing else may have (a daemon without a cold tier has no stripe counts
   * to open every volume), and a volume whose pool is back must not stay
   * reported unavailable.
   */
  unavailableVolumes(): UnavailableVolume[] {
    const nowMs = Date.now();
    for (const [name, u] of [...this.unopenable]) {
      if (nowMs - u.atMs < UNAVAILABLE_RECHECK_MS) continue;
      if (!this.meta.volumes.get(name)) {
        this.unopenable.delete(name);
        continue;
      }
      // Recorded again when it fails; a big map is tried in the background (its last failure listed meanwhile).
      this.tryOpenNow(this.meta.volumes.get(name)!);
    }
    return [...this.unopenable.values()].map((u) => u.entry);
  }

  /** unavailableVolumes for a caller that can wait (the API): a volume due a new try is tried a slice at a time, and answered after. */
  async unavailableVolumesAsync(): Promise<UnavailableVolume[]> {
    const nowMs = Date.now();
    for (const [name, u] of [...this.unopenable]) {
      if (nowMs - u.atMs < UNAVAILABLE_RECHECK_MS) continue;
      if (!this.meta.volumes.get(name)) this.unopenable.delete(name);
      else await this.tryOpen(name);
    }
    return [...this.unopenable.values()].map((u) => u.entry);
  }

  /**
   * What a move of the volume to its own tier still has to do (a move a kill
   * cut or an abort left): for a cold volume, its chunks still in a file
   * (Allocated); for a hot or warm one, whether a chunk is off its placement
   * file (on a stripe, in another pool's file, or journaled). From the open
   * volume; a closed one from the index, opening nothing (nothing changes a
   * closed volume's chunk map but compaction and a delete): the control loop
   * asks it of every volume at every pass. One that may not open, or a
   * hot/warm one with journal records, is borrowed for the answer (an open
   * that fails throws, as openVolume's).
   */
  unfinishedMove(name: string): { chunksOnFile: number; offPlacement: boolean } {
    const rec = this.meta.volumes.get(name);
    if (!rec) throw new NotFound(`no volume named ${name}`);
    const fromVolume = (vol: Volume) => ({ chunksOnFile: vol.chunksOnFile().length, offPlacement: vol.hasChunksOffPlacement() });
    const open = this.open.get(name);
    if (open !== undefined) return fromVolume(open);
    if (this.mayNotOpen(rec, new Map()) || (rec.tier !== 'cold' && (this.cold?.journal.hasVolume(rec.id) ?? false))) return this.withVolume(name, fromVolume);
    const known = this.closedMoveLeft.get(rec.id);
    if (known !== undefined) return known;
    const chunkCount = Volume.chunkCount(rec.sizeBytes, rec.chunkSizeBytes);
    let chunksOnFile = 0;
    let offPlacement = false;
    for (const { chunkIndex, entry } of this.meta.volumeChunks(rec.id)) {
      if (chunkIndex >= chunkCount) continue;
      if (entry.state === ChunkState.Allocated) {
        chunksOnFile++;
        if (entry.pool !== rec.poolName) offPlacement = true;
      } else if (entry.state === ChunkState.Cold) offPlacement = true;
    }
    const left = { chunksOnFile, offPlacement: rec.tier !== 'cold' && offPlacement };
    this.closedMoveLeft.set(rec.id, left);
    return left;
  }

  /** The recorded failure of the last open of `name`, if it failed (no new attempt). */
  openFailure(name: string): UnavailableVolume | undefined {
    return this.unopenable.get(name)?.entry;
  }

  /** openVolume's work; `at.pool` names the pool being opened when it throws. */
  private openRecord(rec: VolumeRecord, at: { pool: string }): Volume {
    const t0 = performance.now();
    const load = this.startChunkMapLoad(rec, at);
    this.loadChunkEntries(load, this.meta.volumeChunks(rec.id), at);
    return this.finishOpen(rec, load, at, t0);
  }

  /**
   * The checks that fail an open before its chunk map is read, and the
   * empty load: a lost volume, an offline placement pool (the read of every
   * chunk entry, ~1.4 ms per 1,000, is not repeated on every retry: while
   * the pool is out the destager tries again every tick, the scrape, the
   * scrub and the control loop each time; review-offline-failed-open-cost).
   */
  private startChunkMapLoad(rec: VolumeRecord, at: { pool: string }): ChunkMapLoad {
    if (rec.lostOnPools !== undefined && rec.lostOnPools.length > 0) {
      at.pool = rec.lostOnPools[0]!;
      throw new VolumeFailed(`volume ${rec.name} lost its data on pool ${rec.lostOnPools.join(', ')}: the pool's disk was replaced (\`pools replace --discard-volumes\`); delete the volume (\`couchestor volumes delete ${rec.name}\`)`);
    }
    // The placement pool's file first, then every other pool's file an
    // Allocated chunk is in (a hot <-> warm move interrupted by a crash or
    // an abort leaves chunks on both sides).
    const placement = this.poolByName(rec.poolName);
    placement.assertOnline();
    const states = new Uint8Array(Volume.chunkCount(rec.sizeBytes, rec.chunkSizeBytes));
    return {
      states,
      chunkFile: new Uint8Array(states.length),
      // Chunks holding data per group, for BLOCK_STATUS (Volume.blockStatus): counted here, not by a walk of every chunk.
      dataPerGroup: statusGroupsFor(states.length),
      filePools: [placement],
      placementHoldsChunks: false,
      stripes: new Map(),
      preserved: new Map(),
      lastChunk: -1,
    };
  }

  /** Adds chunk entries (in any number of calls, each entry once) to `load` (lastChunk: the last one's index); returns how many it read. */
  private loadChunkEntries(load: ChunkMapLoad, entries: Iterable<{ chunkIndex: number; entry: ChunkEntry }>, at: { pool: string }): number {
    const n = load.states.length;
    let read = 0;
    for (const { chunkIndex: c, entry } of entries) {
      read++;
      load.lastChunk = c;
      if (c >= n) continue;
      this.applyChunkEntry(load, c, entry, at);
    }
    return read;
  }

  /**
   * Chunk `c`'s entry read again (openSliced: written while the map was
   * read): what loadChunkEntries counted for the one read before is undone,
   * then `entry` (undefined: none now) is added. The files the chunks are in
   * (filePools, placementHoldsChunks) are counted again after (recountFiles).
   */
  private reloadChunkEntry(load: ChunkMapLoad, c: number, entry: ChunkEntry | undefined, at: { pool: string }): void {
    if (c >= load.states.length) return;
    if (holdsData(load.states[c]!)) load.dataPerGroup[c >> STATUS_GROUP_SHIFT]!--;
    load.states[c] = ChunkState.Unallocated;
    load.chunkFile[c] = 0;
    load.stripes.delete(c);
    load.preserved.delete(c);
    if (entry !== undefined) this.applyChunkEntry(load, c, entry, at);
  }

  /** One chunk entry added to `load` (c below the chunk count; not added before, or undone: reloadChunkEntry). */
  private applyChunkEntry(load: ChunkMapLoad, c: number, entry: ChunkEntry, at: { pool: string }): void {
    const { states, chunkFile, dataPerGroup, filePools } = load;
    const state = entry.state;
    states[c] = state;
    if (holdsData(state)) dataPerGroup[c >> STATUS_GROUP_SHIFT]!++;
    if (entry.preserved) load.preserved.set(c, entry.preserved);
    if (state === ChunkState.Cold) {
      if (entry.stripe) load.stripes.set(c, entry.stripe);
      return;
    }
    if (state !== ChunkState.Allocated) return;
    if (entry.pool === filePools[0]!.name) {
      load.placementHoldsChunks = true;
      return;
    }
    let i = filePools.findIndex((p) => p.name === entry.pool);
    if (i < 0) {
      at.pool = entry.pool;
      filePools.push(this.poolByName(entry.pool));
      i = filePools.length - 1;
    }
    chunkFile[c] = i;
  }

  /** Opens the files of a read chunk map and makes the Volume, registered open; closes every descriptor it opened when it throws. */
  private finishOpen(rec: VolumeRecord, load: ChunkMapLoad, at: { pool: string }, t0: number): Volume {
    const name = rec.name;
    const files: { pool: Pool; fd: number }[] = [];
    try {
      for (let i = 0; i < load.filePools.length; i++) {
        const pool = load.filePools[i]!;
        at.pool = pool.name;
        pool.ensureDirs();
        // A file the index has chunks in is never made again empty: its
        // chunks would read as zeros, no error (pool disk replaced, file
        // removed by hand). Only one no chunk is in yet may be created.
        const holdsChunks = i > 0 || load.placementHoldsChunks;
        files.push({ pool, fd: openOrCreate(pool.volumeFile(rec.id), holdsChunks ? `volume ${rec.name} has chunks in it on pool ${pool.name}` : null) });
      }
    } catch (err) {
      for (const f of files) fs.closeSync(f.fd);
      throw err;
    }
    if (files.length > 1) {
      // The control loop finishes it (a move to the volume's own tier) when a
      // policy manages the volume; by hand, `couchestor volumes migrate`.
      log.warn('volume has chunks on more than one pool (a hot <-> warm move was interrupted); the control loop, or `couchestor volumes migrate` to its tier, finishes it', { volume: rec.name, tier: rec.tier, pools: files.map((f) => f.pool.name).join(',') });
    }
    // The constructor's fstat of each file cannot say which failed: the placement pool is named.
    at.pool = rec.poolName;
    let vol: Volume;
    try {
      vol = new Volume(rec, files, this.meta, load.states, load.chunkFile, this.cold, load.dataPerGroup, { stripes: load.stripes, preserved: load.preserved });
    } catch (err) {
      // The constructor fstat()s each file (EIO on a failing disk): without
      // this the descriptors leaked on every retry (the destager's, each tick).
      for (const f of files) fs.closeSync(f.fd);
      throw err;
    }
    vol.openCostMs = performance.now() - t0;
    const counters = this.closedCounters.get(rec.id);
    if (counters !== undefined) Object.assign(vol.counters, counters);
    this.closedCounters.delete(rec.id);
    this.open.set(name, vol);
    this.closedColdChunks.delete(rec.id);
    this.closedMoveLeft.delete(rec.id);
    return vol;
  }

  /**
   * Opens `name` if it is not open, its chunk map read OPEN_SLICE_MS of the
   * event loop at a time (openSliced); null when there is nothing to wait
   * for (open already, or no such volume). Resolves with the Volume lent
   * (borrowVolume's loan: the caller gives it back, giveBack), or rejects
   * with the open's failure: the caller answers with it (a borrowVolume
   * then opened the volume again in one go, its whole map read again only
   * to fail the same way). For work that must not hold the event loop while
   * a big volume opens (an NBD client's negotiation waits on it).
   */
  prepareOpen(name: string): Promise<Volume> | null {
    if (this.open.has(name) || this.meta.volumes.get(name) === undefined) return null;
    // A loan, not a bare open: nothing else holds a volume opened here, and only a giveBack closes one.
    return this.borrowVolumeAsync(name);
  }

  /** Whether `name` is open (borrowVolume takes it without an open). */
  isOpen(name: string): boolean {
    return this.open.has(name);
  }

  /** borrowVolume, the open (if it is not open) read a slice at a time (openSliced). */
  async borrowVolumeAsync(name: string): Promise<Volume> {
    for (;;) {
      const vol = await this.openSharedAsync(name);
      // Closed again by a loan that ended before this continuation ran: open it again.
      if (this.open.get(name) !== vol) continue;
      this.loans.set(vol.rec.id, (this.loans.get(vol.rec.id) ?? 0) + 1);
      return vol;
    }
  }

  /** The shared open Volume for `name`, as openShared, an open read a slice at a time; concurrent calls share one open. */
  private openSharedAsync(name: string): Promise<Volume> {
    const cached = this.open.get(name);
    if (cached) return Promise.resolve(cached);
    let p = this.opening.get(name);
    if (p === undefined) {
      p = this.openSliced(name).finally(() => this.opening.delete(name));
      this.opening.set(name, p);
    }
    return p;
  }

  /**
   * openShared's open, with the volume's chunk map read a slice at a time:
   * at most ~OPEN_SLICE_MS of the event loop, then a yield (a map of 1M
   * entries held it ~4 s in one go, every NBD and S3 client of the daemon
   * stalled). The files are opened and the Volume made after the last
   * slice, synchronously, so an open given up (a delete, a close of the
   * manager) leaves no descriptor.
   *
   * Between two slices the index may change: nothing changes a closed
   * volume's chunk map but compaction (a stripe moved), a delete, and an
   * open of it meanwhile by a synchronous caller (borrowVolume: its writes,
   * then maybe closed again). MetaStore.watchChunkWrites keeps the chunk of
   * each write to the map from before the read; one kept means the read may
   * have missed it (or half of a transaction), so each entry
   * written is read again after its write commits (in rounds, until a round
   * sees no new write). Past OPEN_REREAD_ROUNDS or WATCHED_CHUNKS_MAX
   * entries written, the map is read again whole (twice at most, then in
   * one go: always right). A volume opened meanwhile is
   * used as it is; a record deleted or changed (its size, pool or tier)
   * ends the read (NotFound, or again).
   */
  private async openSliced(name: string): Promise<Volume> {
    for (let attempt = 1; ; attempt++) {
      const rec = this.meta.volumes.get(name);
      if (!rec) throw new NotFound(`no volume named ${name}`);
      const t0 = performance.now();
      const at = { pool: rec.poolName };
      const watch = this.meta.watchChunkWrites(rec.id);
      let load: ChunkMapLoad;
      let stale = false;
      try {
        try {
          load = this.startChunkMapLoad(rec, at);
        } catch (err) {
          this.unopenable.set(name, { entry: { volume: name, pool: at.pool, error: (err as Error).message }, atMs: Date.now() });
          throw err;
        }
        // Writes queued before the watch (a compaction flip whose transaction
        // ran, not yet committed) land before the first slice reads.
        await this.meta.transaction(() => undefined).catch(() => undefined);
        for (;;) {
          if (this.closing) throw new VolumeFailed(`volume ${name} was not opened: the daemon is stopping`);
          const sliceStart = performance.now();
          let done = false;
          // Ranges of OPEN_SLICE_ENTRIES until OPEN_SLICE_MS is spent, each a fresh one from the last key read (no cursor held across a yield).
          do {
            const read = this.loadChunkEntries(load, this.meta.volumeChunks(rec.id, load.lastChunk + 1, OPEN_SLICE_ENTRIES), at);
            if (read < OPEN_SLICE_ENTRIES) {
              done = true;
              break;
            }
          } while (performance.now() - sliceStart < OPEN_SLICE_MS);
          if (done) break;
          await new Promise<void>((resolve) => setImmediate(resolve));
          // Deleted meanwhile (or its name taken by a new volume): given up here, not after the
          // whole map (a 1M-entry map read on for ~1-2 s beside the delete's own removal of it).
          if (this.meta.volumes.get(name)?.id !== rec.id) throw new NotFound(`no volume named ${name}`);
        }
        // The entries written while the map was read (compaction's flips of a
        // cold volume's stripes come every few ms while a pass runs): each read
        // again once its write has committed, until a look finds none new. Read
        // again whole, the open of a big cold volume during a compaction pass
        // was redone twice and then made in one go (1M entries: ~2 s, 0.5-0.7 s
        // of it holding the event loop).
        for (let round = 1; ; round++) {
          const written = watch.takeChunks();
          if (written !== null && written.length === 0) {
            // Files the first read saw chunks in that none is in now (moved off meanwhile): not opened.
            if (round > 1) recountFiles(load);
            break;
          }
          if (written === null || round > OPEN_REREAD_ROUNDS) {
            stale = true;
            break;
          }
          await this.meta.transaction(() => undefined).catch(() => undefined);
          if (this.closing) throw new VolumeFailed(`volume ${name} was not opened: the daemon is stopping`);
          for (const c of written) this.reloadChunkEntry(load, c, this.meta.chunks.get([rec.id, c]), at);
        }
      } catch (err) {
        watch.done();
        // A chunk map that cannot be read (damaged: an entry naming no pool, one that does not decode)
        // is recorded as openShared's failures are: the listing, the passes and NBD name it.
        // (Its record still there: a NotFound of a deleted volume is not a failure of it.)
        if (!this.closing && this.meta.volumes.get(name)?.id === rec.id) {
          this.unopenable.set(name, { entry: { volume: name, pool: at.pool, error: (err as Error).message }, atMs: Date.now() });
        }
        throw err;
      }
      watch.done();
      // From here to the end synchronous: nothing changes the index or `open` meanwhile.
      if (this.closing) throw new VolumeFailed(`volume ${name} was not opened: the daemon is stopping`);
      const cached = this.open.get(name);
      if (cached) return cached;
      const now = this.meta.volumes.get(name);
      if (now === undefined || now.id !== rec.id) throw new NotFound(`no volume named ${name}`);
      const changed = now.sizeBytes !== rec.sizeBytes || now.chunkSizeBytes !== rec.chunkSizeBytes || now.poolName !== rec.poolName || now.tier !== rec.tier || (now.lostOnPools?.length ?? 0) !== (rec.lostOnPools?.length ?? 0);
      if (stale || changed) {
        if (attempt < OPEN_SLICED_ATTEMPTS) continue;
        return this.openShared(name);
      }
      try {
        const vol = this.finishOpen(now, load, at, t0);
        this.unopenable.delete(name);
        return vol;
      } catch (err) {
        this.unopenable.set(name, { entry: { volume: name, pool: at.pool, error: (err as Error).message }, atMs: Date.now() });
        throw err;
      }
    }
  }

  openVolumes(): Volume[] {
    return [...this.open.values()];
  }

  /** The I/O counters of closed volumes that served I/O since the start, by volume id (the heat tracker's reading of a volume not open). */
  closedVolumeCounters(): ReadonlyMap<number, Readonly<VolumeCounters>> {
    return this.closedCounters;
  }

  async resizeVolume(name: string, newSizeBytes: number): Promise<VolumeRecord> {
    validateSize(newSizeBytes);
    const rec = this.meta.volumes.get(name);
    if (!rec) throw new NotFound(`no volume named ${name}`);
    if (newSizeBytes < rec.sizeBytes) {
      throw new InvalidArgument(`volume ${name} is ${rec.sizeBytes} bytes; shrinking to ${newSizeBytes} would drop data and is refused`);
    }
    // Through the open volume: its record is also rewritten by a tier switch
    // (setTier), and both must go through its quiesce gate. Lent for the call
    // (pinned, every volume ever resized stayed open until the daemon stopped).
    // Opened a slice at a time (openSliced): an API call on a big closed volume stalls no client; an open one taken in this turn.
    this.refuseBeingDeleted(name);
    const vol = this.open.has(name) ? this.borrowVolume(name) : await this.borrowVolumeAsync(name);
    try {
      this.refuseBeingDeleted(name);
      return await vol.resize(newSizeBytes);
    } finally {
      this.giveBack(vol);
    }
  }

  /**
   * `volumes release NAME`: frees what preserving migrations kept for the
   * volume (old stripes; the old file of a cold volume).
   */
  async releasePreserved(name: string): Promise<{ volume: string; stripesFreed: number; fileReleased: boolean }> {
    // Lent for the call, and opened, as resizeVolume.
    this.refuseBeingDeleted(name);
    const vol = this.open.has(name) ? this.borrowVolume(name) : await this.borrowVolumeAsync(name);
    try {
      this.refuseBeingDeleted(name);
      const r = await vol.releasePreserved();
      // Files a preserving hot <-> warm move kept: those of pools whose file
      // the volume does not have open.
      const filesRemoved = await vol.removeKeptFiles([...this.pools.values()].filter((p) => p.rec.tier !== 'cold'));
      return { volume: name, ...r, fileReleased: r.fileReleased || filesRemoved > 0 };
    } finally {
      this.giveBack(vol);
    }
  }

  /**
   * At daemon start, before any front end serves: finishes every RELEASE a
   * kill cut short between a move's last SWITCH and its RELEASE. From the
   * index only: a volume's file on a hot/warm pool that no Allocated chunk
   * is in, that is not a hot/warm volume's placement file and whose pool the
   * record does not list in keptFilePools is deleted; a cold volume's
   * placement file with bytes and no chunk in it, not listed, is truncated
   * (Volume.releaseFile, which checks all of it again at its gate). Both
   * through the opened volume's quiesce gate. Records without the list
   * (written before it existed) are left alone: their files may be copies an
   * older daemon kept. A volume that cannot be opened is logged and skipped
   * (its files stay; the next start tries again).
   */
  async finishInterruptedReleases(): Promise<{ filesRemoved: number; filesTruncated: number; bytesPunched: number }> {
    let filesRemoved = 0;
    let filesTruncated = 0;
    let bytesPunched = 0;
    for (const rec of this.meta.listVolumes()) {
      if (rec.keptFilePools === undefined) continue;
      try {
        const r = await this.finishInterruptedRelease(rec, rec.keptFilePools);
        filesRemoved += r.filesRemoved;
        filesTruncated += r.filesTruncated;
        bytesPunched += r.bytesPunched;
      } catch (err) {
        // A pool directory that cannot be read (EIO, EACCES) must not stop the daemon's start.
        log.warn('cannot finish an interrupted RELEASE; the files stay until the next start or `volumes release`', { volume: rec.name, err: (err as Error).message });
      }
    }
    return { filesRemoved, filesTruncated, bytesPunched };
  }

  /**
   * finishInterruptedReleases() for one volume whose record lists
   * keptFilePools. The files are looked at first and the chunk map read only
   * when one could be a leftover: usually none is, and reading every chunk
   * entry of every volume held the event loop ~0.6-0.9 s per 100,000
   * entries at each start (bench/cold-maintenance-stalls).
   */
  private async finishInterruptedRelease(rec: VolumeRecord, keptFilePools: string[]): Promise<{ filesRemoved: number; filesTruncated: number; bytesPunched: number }> {
    const kept = new Set(keptFilePools);
    // A kept file reached through another pool name (a pool renamed in the
    // configuration keeps its old record; a link) is still the kept copy.
    const keptFiles = [...kept].flatMap((n) => {
      const st = this.pools.get(n) && fs.statSync(this.pools.get(n)!.volumeFile(rec.id), { throwIfNoEntry: false });
      return st ? [st] : [];
    });
    // Leftovers unless a chunk is in them (known from the chunk map, below).
    const candidates = [...this.pools.values()].filter((p) => {
      if (p.rec.tier === 'cold' || p.name === rec.poolName || kept.has(p.name)) return false;
      const st = fs.statSync(p.volumeFile(rec.id), { throwIfNoEntry: false });
      return st !== undefined && !keptFiles.some((k) => k.dev === st.dev && k.ino === st.ino);
    });
    const placement = this.pools.get(rec.poolName);
    const coldFileCandidate = rec.tier === 'cold' && !kept.has(rec.poolName) && placement !== undefined && (fs.statSync(placement.volumeFile(rec.id), { throwIfNoEntry: false })?.size ?? 0) > 0;
    if (candidates.length === 0 && !coldFileCandidate) return { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 };
    // Allocated chunks per pool; a cold volume's dead chunks (Cold, Discarded: in key order, ascending) for the punch below.
    const inUse = new Map<string, number>();
    const dead: number[] = [];
    const chunkCount = Volume.chunkCount(rec.sizeBytes, rec.chunkSizeBytes);
    for (const { chunkIndex, entry } of this.meta.volumeChunks(rec.id)) {
      if (entry.state === ChunkState.Allocated) inUse.set(entry.pool, (inUse.get(entry.pool) ?? 0) + 1);
      else if (rec.tier === 'cold' && chunkIndex < chunkCount && (entry.state === ChunkState.Cold || entry.state === ChunkState.Discarded)) dead.push(chunkIndex);
    }
    const leftovers = candidates.filter((p) => !inUse.has(p.name));
    const coldFile = coldFileCandidate && inUse.size === 0;
    // A cold volume with chunks still in a file whose destaged ranges hold data: a kill before a move's hole punch (migration.ts).
    const punch = inUse.size > 0 && (await deadRangesHoldData(this, rec, inUse, dead));
    if (leftovers.length === 0 && !coldFile && !punch) return { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 };
    const vol = this.openVolume(rec.name);
    const filesRemoved = leftovers.length > 0 ? await vol.removeLeftoverFiles(leftovers) : 0;
    const filesTruncated = coldFile && (await vol.releaseFile()) ? 1 : 0;
    const bytesPunched = punch ? await punchAfterInterruptedMove(this, vol) : 0;
    if (leftovers.length > 0 || coldFile) log.info('finished a RELEASE a kill had cut short', { volume: rec.name, removed: leftovers.map((p) => p.name).join(','), truncated: coldFile ? rec.poolName : '' });
    return { filesRemoved, filesTruncated, bytesPunched };
  }

  /** Registers a front end deleteVolume asks about the volume's clients; returns its unregistering. */
  addVolumeClients(source: VolumeClients): () => void {
    this.clientSources.add(source);
    return () => this.clientSources.delete(source);
  }

  /** Whether a delete of `name` is running: a front end answers an open of it as of an unknown name. */
  isBeingDeleted(name: string): boolean {
    return this.deleting.has(name);
  }

  /**
   * A resize or release of a volume a delete has taken (isBeingDeleted: a
   * forced one waits up to 10 s for its clients) is refused (VolumeInUse,
   * 409): it went ahead and answered as done, and the volume was gone a
   * moment later. Checked again once the caller's open yielded.
   */
  private refuseBeingDeleted(name: string): void {
    if (this.deleting.has(name)) throw new VolumeInUse(`volume ${name} is being deleted`, name, []);
  }

  /**
   * Deletes volume `name` and its data. Refused (VolumeInUse: 409 on the
   * API) while an NBD client has its export open or is opening it, as RBD
   * refuses an image with watchers: before, the delete went ahead and the
   * client's next request failed with EIO. With `force` those clients are
   * disconnected first (requests in flight answered, then the socket
   * closed). From the check on, in the same turn, an open of the export is
   * refused as of an unknown name (isBeingDeleted), so a client never gets
   * a volume the delete then pulls. Not refused: a migration of it (it ends
   * at its next step, as before), the control loop's and background
   * passes' loans.
   */
  async deleteVolume(name: string, opts: DeleteVolumeOptions = {}): Promise<void> {
    const rec = this.meta.volumes.get(name);
    if (!rec) throw new NotFound(`no volume named ${name}`);
    if (this.deleting.has(name)) throw new VolumeInUse(`volume ${name} is being deleted already`, name, []);
    const clients = [...this.clientSources].flatMap((c) => c.clientsOf(name));
    if (clients.length > 0 && opts.force !== true) {
      const n = clients.length;
      throw new VolumeInUse(`volume ${name} is in use: ${n} NBD client${n === 1 ? ' has' : 's have'} it open (${clients.join(', ')}); disconnect ${n === 1 ? 'it' : 'them'} first, or delete with --force (?force=true) to disconnect ${n === 1 ? 'it' : 'them'}`, name, clients);
    }
    this.deleting.add(name);
    try {
      if (clients.length > 0) {
        log.info('deleting a volume in use: disconnecting its NBD clients', { volume: name, clients: clients.join(',') });
        await Promise.all([...this.clientSources].map((c) => c.disconnectClients(name)));
      }
      // Rewritten meanwhile by a tier switch (a migration's): the record as it is now.
      const now = this.meta.volumes.get(name);
      if (now === undefined || now.id !== rec.id) throw new NotFound(`no volume named ${name}`);
      await this.deleteRecord(name, now, { background: opts.background === true });
    } finally {
      this.deleting.delete(name);
    }
  }

  /**
   * Takes volume `rec` out of the namespace and returns; its chunk map and
   * what it names go in the background (removeChunkMap). Step 1 is one
   * small transaction (MetaStore.deleteVolume): the name lookup is gone
   * (API, NBD, list) and may be reused at once by a new volume (a new id),
   * and a durable "deleting <id>" mark is left for a restart to finish.
   */
  private async deleteRecord(name: string, rec: VolumeRecord, opts: { background?: boolean } = {}): Promise<void> {
    const vol = this.open.get(name);
    this.open.delete(name);
    this.pinned.delete(rec.id);
    this.unopenable.delete(name);
    if (vol) await vol.close();
    await this.meta.deleteVolume(rec);
    this.closedColdChunks.delete(rec.id);
    this.closedMoveLeft.delete(rec.id);
    this.closedCounters.delete(rec.id);
    // An open while the awaits above ran (a destager tick, a scrape, the
    // control loop) still found the record: it cached the volume (a new
    // volume of this name would then get the deleted one's file) or
    // recorded its failure again (reported unavailable for good). Taken out
    // here, closed before the map's removal starts: its writes land first.
    this.unopenable.delete(name);
    const late = this.open.get(name)?.rec.id === rec.id ? this.open.get(name)! : null;
    if (late) this.open.delete(name);
    this.pinned.delete(rec.id);
    this.cold?.journal.dropVolume(rec.id);
    // The files now: nothing reads them once the record is gone (durable above).
    this.removeVolumeFiles(rec);
    if (late) await late.close();
    const removal = this.removeChunkMap(rec);
    if (opts.background !== true) await removal;
    else removal.catch((err: Error) => log.error('removing a deleted volume\'s chunk map failed; the next start finishes it', { volume: name, id: rec.id, err: err.message }));
  }

  /**
   * Every hot/warm pool's file of volume `rec`: chunks of an interrupted
   * move, or one kept by preservation mode. One that cannot be removed (its
   * disk read-only or failing) is logged and left, an orphan volume file
   * fsck lists: thrown, it answered the delete 500 with the volume already
   * gone and its map's removal never started, and every later start threw
   * it from resumeDeletes (the daemon did not start while the disk stayed
   * read-only; test review-rbdel-readonly-pool).
   */
  private removeVolumeFiles(rec: VolumeRecord): void {
    for (const pool of this.pools.values()) {
      if (pool.rec.tier === 'cold') continue;
      const file = pool.volumeFile(rec.id);
      try {
        fs.rmSync(file, { force: true });
      } catch (err) {
        log.warn("a deleted volume's file could not be removed; left in place (fsck lists it as an orphan volume file)", { volume: rec.name, id: rec.id, pool: pool.name, file, err: (err as Error).message });
      }
    }
  }

  /**
   * A delete's chunk-map removal (step 2, then 3): DELETE_BATCH_ENTRIES
   * entries per transaction (MetaStore.removeDeletingChunks; ~3 ms of event
   * loop each), the event loop turning between two; after each commit the
   * bytes the batch named are freed (stripes told dead to compaction, pool
   * space given back). The last batch removes the mark. Stops at close()
   * (the mark stays: the next start finishes it). One per volume id.
   * `resumed`: a mark found at start, whose chunks the pools' usage never
   * counted (recomputeUsage counts listed volumes), so none is given back.
   */
  private removeChunkMap(rec: VolumeRecord, opts: { resumed?: boolean } = {}): Promise<void> {
    const running = this.removals.get(rec.id);
    if (running !== undefined) return running;
    // Each pool's disk as the removal starts: one replaced meanwhile (replacePool set its usage to 0) does not hold these chunks.
    const disks = new Map([...this.pools.values()].map((p) => [p.name, p.rec.uuid]));
    const removal = (async () => {
      let entries = 0;
      for (;;) {
        if (this.closing) return;
        const { removed, done } = await this.meta.removeDeletingChunks(rec.id, DELETE_BATCH_ENTRIES);
        entries += removed.length;
        const allocated = new Map<string, number>();
        for (const entry of removed) {
          if (entry.state === ChunkState.Allocated) allocated.set(entry.pool, (allocated.get(entry.pool) ?? 0) + 1);
          else if (entry.state === ChunkState.Cold && entry.stripe) this.cold?.stripes.free(entry.stripe);
          // Old copies kept by a preserving migration go with the volume.
          if (entry.preserved) this.cold?.stripes.free(entry.preserved);
        }
        // A resumed delete's chunks were never counted: the start's usage counts listed volumes only (recomputeUsage).
        // Nor chunks on a pool whose disk was replaced (replacePool set its usage to 0), before the delete
        // (lostOnPools) or during its removal (another uuid): the new disk holds none (test review-rbdel-lost-pool-usage).
        if (opts.resumed !== true) {
          for (const [name, n] of allocated) {
            const pool = this.pools.get(name);
            if (pool !== undefined && rec.lostOnPools?.includes(name) !== true && pool.rec.uuid === disks.get(name)) pool.release(n * rec.chunkSizeBytes);
          }
        }
        if (done) break;
        if (PAUSE_DELETE_AFTER_BATCHES > 0 && entries >= PAUSE_DELETE_AFTER_BATCHES * DELETE_BATCH_ENTRIES) {
          process.stdout.write(`couchestor paused delete ${JSON.stringify({ volume: rec.name, id: rec.id, entriesRemoved: entries })}\n`);
          await new Promise<never>(() => undefined);
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      log.info('deleted volume: its chunk map is removed', { volume: rec.name, id: rec.id, chunkEntries: entries });
    })().finally(() => this.removals.delete(rec.id));
    this.removals.set(rec.id, removal);
    this.meta.removalRunning(removal);
    return removal;
  }

  /**
   * Finishes, in the background, every delete a stop or crash cut short
   * (a "deleting" mark left in the index): the files first, then the chunk
   * map a batch at a time. The daemon serves meanwhile; the volume is out of
   * the namespace already. A failure is logged and the mark stays for the
   * next start. Returns the removals (tests and the offline CLI await them).
   */
  resumeDeletes(): Promise<void> {
    const recs = this.meta.listDeletingVolumes();
    if (recs.length > 0) log.info('finishing deletes a stop or crash cut short', { volumes: recs.map((r) => `${r.name}(${r.id})`).join(',') });
    return Promise.all(
      recs.map((rec) => {
        this.removeVolumeFiles(rec);
        return this.removeChunkMap(rec, { resumed: true }).catch((err: Error) => log.error('finishing a volume delete failed; the next start tries again', { volume: rec.name, id: rec.id, err: err.message }));
      }),
    ).then(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    // The destager stopped first, in this turn: a pass waiting for a volume's open (given up
    // below at its next slice) then ends it as a stop, not as a volume that cannot be opened.
    const destagerStopped = this.cold?.destager.stop() ?? Promise.resolve();
    destagerStopped.catch(() => undefined); // awaited below; handled meanwhile
    // Each stops before its next batch; the mark stays for the next start.
    await Promise.allSettled([...this.removals.values()]);
    // Their next slice gives up: none reads the index after it closes, none opens a file after the loop below.
    await Promise.allSettled([...this.opening.values()]);
    if (this.cold) {
      await this.cold.reconstructor.stop();
      await destagerStopped;
    }
    for (const v of this.open.values()) {
      if (!v.failed) await v.flush().catch(() => undefined);
      await v.close();
    }
    this.open.clear();
    this.pinned.clear();
    if (this.cold) {
      await this.cold.journal.close();
      await this.cold.stripes.close();
      log.debug('cold tier closed');
    }
    await this.meta.close();
  }
}

/**
 * Opens a volume file, creating it if missing with its name made durable
 * before anything is written to it (syncNewEntrySync: openVolume is
 * synchronous). createVolume makes the placement file, so a create here is
 * rare: a volume made before createVolume did. A missing file the index
 * has chunks in (`holdsChunks` says which) is PoolOffline, never made again
 * empty. One directory fsync per file created, none for a file that exists.
 */
function openOrCreate(file: string, holdsChunks: string | null): number {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDWR);
    // What the page cache holds of the file is made durable first: a
    // truncate (a RELEASE's) or writes a killed earlier process left there
    // only would otherwise be what the volume trusts (its size is
    // staleBelowBytes; regionHoldsData reads the page cache) while a power
    // cut could still undo them, bringing back stale bytes around a fresh
    // chunk's first write (test review-release-truncate-power-cut). One
    // fdatasync per file opened (~0.1 ms for a clean one here).
    try {
      fs.fdatasyncSync(fd);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return fd;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (holdsChunks) throw new PoolOffline(`volume file ${file} is missing but ${holdsChunks} (disk replaced or file removed outside the daemon?): not made again empty`, { cause: err });
  }
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  try {
    syncNewEntrySync(file, fd);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

function validateSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VOLUME_SIZE_BYTES) {
    throw new InvalidArgument(`volume size must be a whole number of bytes between 1 and ${MAX_VOLUME_SIZE_BYTES}`);
  }
  if (sizeBytes % 512 !== 0) throw new InvalidArgument('volume size must be a multiple of 512 bytes');
}

/** A chunk entry that openRecord loads into the volume's `stripes` (coldStripeCount counts them without opening it). */
function isColdChunk(chunkIndex: number, entry: ChunkEntry, chunkCount: number): boolean {
  return chunkIndex < chunkCount && entry.state === ChunkState.Cold && entry.stripe !== undefined;
}

/** What an open reads from a volume's chunk map before it opens its files (VolumeManager.loadChunkEntries). */
interface ChunkMapLoad {
  states: Uint8Array;
  /** Index in filePools of every Allocated chunk's file. */
  chunkFile: Uint8Array;
  dataPerGroup: Uint32Array;
  /** The placement pool's first, then each other pool an Allocated chunk is in. */
  filePools: Pool[];
  /** Whether an Allocated chunk is in the placement pool's file (never made again empty then: openOrCreate). */
  placementHoldsChunks: boolean;
  stripes: Map<number, StripeRef>;
  preserved: Map<number, StripeRef>;
  /** The last chunk entry's index read so far; -1 before the first. */
  lastChunk: number;
}

/**
 * After entries were read again (VolumeManager.reloadChunkEntry), the files
 * `load` names as holding Allocated chunks, from its states: a pool none is
 * in any more is dropped (its file, maybe gone with a finished move, is not
 * opened), and whether the placement pool's file holds one. One pass over
 * the chunks (~1-3 ms for 1M), only when an entry was read again.
 */
function recountFiles(load: ChunkMapLoad): void {
  const { states, chunkFile } = load;
  const used = new Uint8Array(load.filePools.length);
  let placement = false;
  for (let c = 0; c < states.length; c++) {
    if (states[c] !== ChunkState.Allocated) continue;
    const i = chunkFile[c]!;
    used[i] = 1;
    if (i === 0) placement = true;
  }
  load.placementHoldsChunks = placement;
  if (load.filePools.length === 1 || used.indexOf(0, 1) < 0) return;
  const to = new Uint8Array(load.filePools.length);
  const kept: Pool[] = [load.filePools[0]!];
  for (let i = 1; i < load.filePools.length; i++) {
    if (used[i] === 0) continue;
    to[i] = kept.length;
    kept.push(load.filePools[i]!);
  }
  for (let c = 0; c < states.length; c++) if (states[c] === ChunkState.Allocated && chunkFile[c] !== 0) chunkFile[c] = to[chunkFile[c]!]!;
  load.filePools = kept;
}

/**
 * An open reading a chunk map a slice at a time (openSliced) reads ranges of
 * OPEN_SLICE_ENTRIES entries until OPEN_SLICE_MS of the event loop is spent,
 * then yields; ~0.5-1 us per entry, so one range is ~0.5-1 ms and a slice
 * ~5 ms. 1M entries: ~100 slices, the open ~0.5 s (unloaded), the longest
 * hold ~10-25 ms (a GC's); with 2,048 and 8 ms, 20-35 ms.
 */
const OPEN_SLICE_ENTRIES = 1024;
const OPEN_SLICE_MS = 4;
/** tryOpenNow tries a volume of at most this many chunks in one go (~1.4 ms per 1,000 entries read); a bigger one a slice at a time. */
const TRY_NOW_MAX_CHUNKS = 4096;
/** Reads of a chunk map that changed under them before the open reads it in one go (openSliced). */
const OPEN_SLICED_ATTEMPTS = 3;
/** Rounds of entries written during a sliced read read again (openSliced) before the map is read again whole. */
const OPEN_REREAD_ROUNDS = 20;
