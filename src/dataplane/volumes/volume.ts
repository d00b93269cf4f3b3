// One open volume: the hot path for block I/O on hot/warm data. Data lives in
// a sparse file per volume on its pool (chunk i at offset i * chunkSize); the
// chunk map in LMDB records which chunks hold data and on which pool's file
// (a volume between hot and warm pools has chunks in two files). All
// connections to a volume share this object, so a FLUSH on one covers writes
// completed on all.
import fs from 'node:fs';
import { InvalidArgument, OutOfRange, PoolOffline, ReadOnly, VolumeFailed } from '../errors.js';
import { ChunkState, type ChunkEntry, type MetaStore, type VolumeRecord } from '../meta/store.js';
import type { Pool } from '../pools/pool.js';
import type { StripeRef, StripeStore } from '../ec/stripe-store.js';
import { RecordType, type Journal } from '../journal/journal.js';
import { GroupCommit } from '../group-commit.js';
import { syncNewEntry } from '../dir-sync.js';
import { log } from '../../log.js';
import { firstDataOffset, punchHole } from './seek-data.js';

/** What a volume needs to keep chunks on the cold tier. */
export interface ColdTier {
  journal: Journal;
  stripes: StripeStore;
}

export type DoneCb = (err: Error | null) => void;

export interface Extent {
  lengthBytes: number;
  /** NBD base:allocation flags: 1 = hole, 2 = reads as zero. */
  flags: number;
}

export interface VolumeCounters {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
}

/** One data file of the volume (volumes/<id>.dat on a hot or warm pool). */
interface VolumeFile {
  pool: Pool;
  fd: number;
  /**
   * The file's size when this process opened it (set by the constructor;
   * files opened later are created empty). Below it, an Unallocated chunk
   * may hold bytes of a write whose chunk entry a crash lost (the pwrite
   * landed, the LMDB commit did not): such a chunk reads as zeros, and is
   * zeroed like a Discarded one before its first allocation.
   */
  staleBelowBytes?: number;
  /**
   * Mutations of the file (client writes and zeroes, chunk zeroing and
   * copies, truncates, hole punches), counted as each completes, failed ones
   * too (a failed write may have changed some of the range). Starts at 1: a
   * file is dirty when opened (a previous process's writes may be in the page
   * cache only; a fresh file's O_TRUNC).
   */
  mutations: number;
  /**
   * `mutations` as read just before the last fdatasync of the file that
   * succeeded: everything counted up to it had completed before that sync
   * began, so it is durable. Equal to `mutations`: nothing landed since, and
   * a FLUSH skips the file's fdatasync (a cold volume's writes go to the
   * journal, so its file is clean: that sync was one of two per FLUSH).
   * A failed sync never advances it; it sets the volume's failure instead,
   * which every later FLUSH reports (fsyncgate: never retried).
   */
  syncedMutations: number;
  /**
   * fdatasyncs of the file issued and not yet returned (FLUSH's, chunk
   * copies'), each settling as its call returns: see syncFd. Bounded by the
   * copies in flight plus one FLUSH.
   */
  syncing: Set<Promise<void>>;
  /**
   * Set while a RELEASE's ftruncate of the file (releaseFile) may not be
   * durable: the `mutations` value counting it. A power cut can undo it and
   * bring back the bytes it cut off, so the page cache's "hole here" (a
   * fresh chunk's, staleBelowBytes' check) holds only once a sync covered
   * it: allocate syncs the file first (shrinkDurable; once, at the first
   * allocation of a fresh chunk after the truncate, unless a FLUSH synced
   * the file since).
   */
  shrunkAt?: number;
  /** shrinkDurable's fdatasync in flight, shared by the chunks allocated meanwhile. */
  shrinkSync?: Promise<void>;
}

/**
 * Data files a volume may have open at once: its placement pool's, plus the
 * ones an interrupted hot <-> warm move left chunks in. Bounds `files` and
 * keeps a file index in a byte (chunkFile).
 */
export const MAX_VOLUME_FILES = 16;

export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

/**
 * blockStatus's summary of the chunk map: chunks per group (2^12), each
 * group's count of chunks that hold data (Allocated or Cold). A group with
 * none (and no journaled chunk) or with all is answered as one run, so a
 * BLOCK_STATUS over a mostly-empty or fully-written range costs its groups,
 * not its chunks.
 */
export const STATUS_GROUP_SHIFT = 12;
const STATUS_GROUP_CHUNKS = 1 << STATUS_GROUP_SHIFT;
/**
 * Chunks of mixed groups blockStatus looks at one by one per request, at
 * most (~1 ms of event loop): past it the reply covers less than asked, as
 * the NBD spec allows (the client asks again from where it ends).
 */
const STATUS_CHUNK_BUDGET = 65_536;

/** Chunks in these states hold data (blockStatus: not a hole). */
export function holdsData(st: number): boolean {
  return st === ChunkState.Allocated || st === ChunkState.Cold;
}

/** An empty data-per-group summary for `chunkCount` chunks (see STATUS_GROUP_SHIFT). */
export function statusGroupsFor(chunkCount: number): Uint32Array {
  return new Uint32Array((chunkCount >> STATUS_GROUP_SHIFT) + 1);
}

/** Zeros used to overwrite stale chunk regions; never written to. */
let zeroBuf = Buffer.alloc(0);
function zeros(lengthBytes: number): Buffer {
  if (zeroBuf.length < lengthBytes) zeroBuf = Buffer.alloc(lengthBytes);
  return zeroBuf.subarray(0, lengthBytes);
}

export class Volume {
  chunkState: Uint8Array;
  readonly counters: VolumeCounters = { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 };
  /** Set once an fdatasync (or other unrecoverable) error happened. */
  private failure: Error | null = null;
  private closed = false;
  /** Chunks whose stale region is being zeroed before first use. */
  private readonly preparing = new Map<number, Promise<void>>();
  private metaDirty = false;
  /**
   * Chunk-map writes (indexWrite) not yet committed: lmdb-js applies a put
   * at its commit, so until then a read of the index (a later open of this
   * volume) sees the entry as it was. metaDirty does not cover them: a
   * FLUSH clears it as it starts. quiet() waits for both.
   */
  private indexWritesPending = 0;
  private readonly commit = new GroupCommit(() => this.syncOnce());
  /**
   * Open data files; files[allocIdx] is the placement pool's (rec.poolName),
   * where new chunks are allocated and migrations to hot/warm copy to.
   */
  private files: VolumeFile[];
  private allocIdx = 0;
  /** Index into `files` of the file holding each Allocated chunk. */
  private chunkFile: Uint8Array;
  /**
   * File writes in flight per chunk, from issue to completion: a chunk copy
   * (promote, hot <-> warm move) waits for them, since a write that passed
   * allocate() before the copy registered does not wait for the copy.
   */
  private chunkWrites: Int32Array;
  /** Copies waiting for a chunk's writes in flight to land (at most one list per chunk). */
  private readonly chunkWritesDrained = new Map<number, (() => void)[]>();
  private readonly chunkShift: number;
  /** Data chunks per group of 2^STATUS_GROUP_SHIFT (see statusGroups): counted by the open; null, built at the first blockStatus. */
  private dataPerGroup: Uint32Array | null = null;
  /** Stripe of every chunk in state Cold. */
  readonly stripes: Map<number, StripeRef>;
  /**
   * Old stripes kept by a cold -> hot migration in preservation mode (the
   * index entry's `preserved`), per chunk: at most one per chunk, so bounded
   * by the chunk count. Freed by releasePreserved() or a volume delete.
   */
  readonly preserved: Map<number, StripeRef>;
  /** Wall time its open took in ms (VolumeManager: the chunk map's read, the files' opens), set by the manager. */
  openCostMs = 0;
  /** Set by a preserving migration while it runs: a SWITCH keeps the chunk's old stripe. */
  preserveOnSwitch = false;
  private readonly destaging = new Map<number, Promise<boolean>>();
  /** Requests in flight, and the tier-switch gate new requests wait at. */
  private ops = 0;
  private readonly opsDrained: (() => void)[] = [];
  private gate: Promise<void> | null = null;
  /** Writes/zeroes/trims on the file path in flight (see drainFileMutations). */
  private fileMutations = 0;
  private readonly fileMutationsDrained: (() => void)[] = [];
  /**
   * Pools whose file RELEASE took out of `files` and has yet to close and
   * delete (after the gate opens): openFile waits, or its fresh file at the
   * same path would be the one deleted. At most MAX_VOLUME_FILES entries.
   */
  private readonly unlinking = new Map<string, Promise<void>>();
  /** File reads in flight: RELEASE must not truncate under them. */
  private fileReads = 0;
  /**
   * Waiters for fileReads to reach 0: close() and releaseFile() (one slot
   * let the later overwrite the earlier, which then waited for good). One
   * per caller waiting: close() once, and each RELEASE in progress.
   */
  private readonly fileReadsDrained: (() => void)[] = [];
  /**
   * RELEASE's ftruncate of the placement file, or the hole punches of an
   * aborted move to cold (punchDeadRanges), issued after its gate opened
   * (a large file's takes a while; clients do not wait for it). A setTier,
   * which lets copies into that file start, and close(), which closes its
   * descriptor, wait for it: ordered by the code, not by the threadpool.
   */
  private truncating: Promise<void> | null = null;

  /**
   * `files[0]` is the placement pool's file (rec.poolName); `chunkFile` indexes `files` for
   * every Allocated chunk (chunks in another pool's file after an interrupted
   * hot <-> warm move).
   */
  constructor(
    public rec: VolumeRecord,
    files: { pool: Pool; fd: number }[],
    private readonly meta: MetaStore,
    chunkState: Uint8Array,
    chunkFile: Uint8Array,
    private readonly cold: ColdTier | null,
    dataPerGroup: Uint32Array | null = null,
    /** Its Cold chunks' stripes and the preserved ones, as the open read them from the index (taken, not copied). */
    maps: { stripes: Map<number, StripeRef>; preserved: Map<number, StripeRef> } | null = null,
  ) {
    this.stripes = maps?.stripes ?? new Map();
    this.preserved = maps?.preserved ?? new Map();
    if (files.length === 0 || files.length > MAX_VOLUME_FILES || files[0]!.pool.name !== rec.poolName) throw new InvalidArgument(`volume ${rec.name}: bad file set`);
    this.files = files.map((f) => ({ pool: f.pool, fd: f.fd, staleBelowBytes: fs.fstatSync(f.fd).size, mutations: 1, syncedMutations: 0, syncing: new Set() }));
    this.chunkState = chunkState;
    this.chunkFile = chunkFile;
    this.chunkWrites = new Int32Array(chunkState.length);
    this.dataPerGroup = dataPerGroup;
    this.chunkShift = Math.log2(rec.chunkSizeBytes);
    if (!Number.isInteger(this.chunkShift)) throw new InvalidArgument('chunk size must be a power of two');
  }

  get name(): string {
    return this.rec.name;
  }

  /** The placement pool: new chunks go to its file, and migrations to hot/warm copy there. */
  get pool(): Pool {
    return this.files[this.allocIdx]!.pool;
  }

  /** Pools whose file holds at least one Allocated chunk (more than one while a hot <-> warm move is under way or was interrupted). */
  poolsInUse(): Pool[] {
    const used = new Set<number>();
    for (let c = 0; c < this.chunkState.length; c++) if (this.chunkState[c] === ChunkState.Allocated) used.add(this.chunkFile[c]!);
    return [...used].map((i) => this.files[i]!.pool);
  }

  /** Pool whose file holds Allocated chunk c. */
  chunkPool(c: number): Pool {
    return this.files[this.chunkFile[c]!]!.pool;
  }

  get sizeBytes(): number {
    return this.rec.sizeBytes;
  }

  get failed(): Error | null {
    return this.failure;
  }

  static chunkCount(sizeBytes: number, chunkSizeBytes: number): number {
    return Math.ceil(sizeBytes / chunkSizeBytes);
  }

  /** Throws OutOfRange unless [offset, offset+length) lies inside the volume. */
  checkRange(offsetBytes: number, lengthBytes: number): void {
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.rec.sizeBytes) {
      throw new OutOfRange(`range ${offsetBytes}+${lengthBytes} is outside volume ${this.name} (${this.rec.sizeBytes} bytes)`);
    }
  }

  private usable(write: boolean): Error | null {
    if (this.failure) return this.failure;
    if (this.closed) return new VolumeFailed(`volume ${this.name} was closed`);
    if (write && this.rec.readOnly) return new ReadOnly(`volume ${this.name} is read-only`);
    return null;
  }

  // ---- the tier-switch gate ---------------------------------------------
  // A switch of tier (migration) is a brief quiesce point: new requests wait
  // at the gate, requests in flight and chunk moves finish, the tier flips,
  // the gate opens. Every request then runs wholly under one tier, which
  // rules out the races of a write or a chunk move straddling the switch.

  /** Reads [offset, offset+length) into dst[dstOffset..]. */
  read(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number, cb: DoneCb): void {
    if (this.gate) {
      this.gate.then(() => this.read(offsetBytes, lengthBytes, dst, dstOffset, cb));
      return;
    }
    this.ops++;
    this.readNow(offsetBytes, lengthBytes, dst, dstOffset, (err) => {
      this.opDone();
      cb(err);
    });
  }

  /**
   * Writes data at offset; with fua the reply waits until it is durable.
   * `data` is not referenced after `cb` runs (callers may recycle it).
   */
  write(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    if (this.gate) {
      this.gate.then(() => this.write(offsetBytes, data, fua, cb));
      return;
    }
    this.ops++;
    this.writeNow(offsetBytes, data, fua, (err) => {
      this.opDone();
      cb(err);
    });
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, opts: { noHole: boolean; fua: boolean; fastZero: boolean }): Promise<void> {
    return this.gated(() => this.writeZeroesNow(offsetBytes, lengthBytes, opts));
  }

  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.gated(() => this.trimNow(offsetBytes, lengthBytes, fua));
  }

  /** Runs an async op as one of `ops`: it waits at the tier-switch gate, and setTier waits for it. */
  private async gated(op: () => Promise<void>): Promise<void> {
    while (this.gate) await this.gate;
    this.ops++;
    try {
      await op();
    } finally {
      this.opDone();
    }
  }

  private opDone(): void {
    if (--this.ops === 0) for (const w of this.opsDrained.splice(0)) w();
  }

  /**
   * Persists a new tier for the volume at a quiesce point (see the gate
   * above). With `placement` (a hot or warm pool), new chunks are allocated
   * in that pool's file from now on and a migration copies chunks there; its
   * file is created (or, when no chunk is in it, emptied of what an earlier
   * move left) and its directory entry made durable first.
   */
  async setTier(tier: VolumeRecord['tier'], placement?: Pool, keptFilePools?: readonly string[]): Promise<void> {
    await this.quiesced(async () => {
      // A RELEASE truncating the placement file: a copy into it (a move to
      // hot/warm) must not be issued before the truncate has landed.
      while (this.truncating) await this.truncating;
      let idx = this.allocIdx;
      const fresh = placement !== undefined && placement.name !== this.pool.name && !this.files.some((f) => f.pool.name === placement.name);
      if (placement && placement.name !== this.pool.name) idx = await this.openFile(placement);
      // Closed (deleted) while openFile waited: this put would land after
      // the delete's and bring the volume record back.
      if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
      const poolName = this.files[idx]!.pool.name;
      // In the same record (one commit) as the tier: which files no chunk is
      // in are kept on purpose (see VolumeRecord.keptFilePools). Never a hot/
      // warm volume's placement file (it is live), nor one openFile has just
      // emptied; an absent list (an old record) stays absent unless given.
      const kept = keptFilePools ?? this.rec.keptFilePools;
      const next: VolumeRecord = { ...this.rec, tier, poolName };
      if (kept !== undefined) next.keptFilePools = [...new Set(kept)].filter((p) => !((tier !== 'cold' || fresh) && p === poolName)).sort();
      this.rec = next;
      this.allocIdx = idx;
      await this.meta.volumes.put(this.rec.name, this.rec);
      await this.meta.durable();
    });
  }

  /** Runs fn with no request, chunk copy or destage in flight, and new requests held at the gate. */
  private async quiesced<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    // A closed volume's record and files are no longer its own (a migration
    // reverting its tier after the volume was deleted would write it back).
    if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
    let open!: () => void;
    this.gate = new Promise<void>((r) => (open = r));
    try {
      if (this.ops > 0) await new Promise<void>((r) => this.opsDrained.push(r));
      await Promise.allSettled([...this.preparing.values(), ...this.destaging.values()]);
      // Closed while we waited: close() may already be closing `files`, and
      // a file list changed now (RELEASE, or an aborted move dropping its
      // target) would have a descriptor closed twice, the second time
      // perhaps another file's by then.
      if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
      return await fn();
    } finally {
      this.gate = null;
      open();
    }
  }

  /** Index in `files` of pool's file, opening it if needed (see setTier). */
  private async openFile(pool: Pool): Promise<number> {
    const have = this.files.findIndex((f) => f.pool.name === pool.name);
    if (have >= 0) return have;
    if (this.files.length >= MAX_VOLUME_FILES) throw new InvalidArgument(`volume ${this.name} already has ${this.files.length} data files open`);
    // A RELEASE still deleting this pool's old file would delete the new one
    // (same path) instead: every chunk copied into it lost at the next start.
    await this.unlinking.get(pool.name);
    // A delete may have run meanwhile: a file made now would outlive it.
    if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
    pool.ensureDirs();
    // Two pool names for one directory (a pool renamed or relabelled in the
    // configuration keeps its old record; a link): the "new" file is one we
    // have open, and the truncate below would empty it under its chunks.
    const existing = fs.statSync(pool.volumeFile(this.rec.id), { throwIfNoEntry: false });
    const same = existing && this.files.find((f) => {
      const st = fs.fstatSync(f.fd);
      return st.dev === existing.dev && st.ino === existing.ino;
    });
    if (same) throw new InvalidArgument(`volume ${this.name}: pool ${pool.name}'s file is the same file as pool ${same.pool.name}'s (the two pools name the same directory)`);
    // Not open = no chunk is in it: whatever it holds (a file kept by
    // preservation mode, or left by a crash before RELEASE) is stale, and a
    // partial write to a fresh chunk must find zeros around it.
    const fd = fs.openSync(pool.volumeFile(this.rec.id), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      // Emptied on the threadpool, not by O_TRUNC in openSync: freeing a
      // kept file's extents held the event loop (every client) ~0.12-0.18 s
      // per 512 MiB here, as RELEASE's delete did (see releaseOtherFiles).
      if (fs.fstatSync(fd).size > 0) await new Promise<void>((resolve, reject) => fs.ftruncate(fd, 0, (err) => (err ? reject(err) : resolve())));
      // The file's name must survive a crash before the first chunk lands in
      // it (before the SWITCH that names this pool). By path, checked against
      // a replaced pool directory: dir-sync.ts says why not a held fd.
      await syncNewEntry(pool.volumeFile(this.rec.id), fd);
      // The emptying too, before the record naming this pool: a chunk
      // allocated in the file from then on is not zeroed first (the file is
      // not stale: staleBelowBytes), and its entry is durable at its commit,
      // before any FLUSH syncs the file. A power cut undoing the truncate
      // would have that chunk read the old bytes around its write (a kept
      // file's, a leftover's, or a write an earlier crash lost the entry of:
      // test volume-power-loss-hot-warm). Every time, not only when the file
      // had bytes: a truncate by an earlier process (killed, the page cache
      // kept) may be undurable too. One fdatasync per file opened, never per I/O.
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
      // Closed while the fsync ran: close() has closed the files it saw,
      // so this descriptor would stay open for good.
      if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    this.files.push({ pool, fd, mutations: 1, syncedMutations: 0, syncing: new Set() });
    return this.files.length - 1;
  }

  /**
   * RELEASE after a move between hot/warm pools (or to cold), and the end of
   * an aborted or failed one (its target file, when no chunk was switched
   * into it): closes every data file, other than the placement pool's, that
   * no chunk is in any more, and unless `keep` (preservation mode) deletes
   * it. The file list changes at a quiesce point, so no read, write or copy
   * still uses a dropped file; a FLUSH, not held at the gate, is waited for
   * before the descriptors close; the close and delete come after the gate
   * opens (clients do not wait for them). Returns the pools whose files were
   * closed.
   */
  async releaseOtherFiles(keep: boolean): Promise<Pool[]> {
    let unlinked!: () => void;
    const gone = new Promise<void>((r) => (unlinked = r));
    const dropped = await this.quiesced(async () => {
      const used = new Set<number>();
      for (let c = 0; c < this.chunkState.length; c++) if (this.chunkState[c] === ChunkState.Allocated) used.add(this.chunkFile[c]!);
      const keepIdx = this.files.map((_, i) => i === this.allocIdx || used.has(i));
      if (keepIdx.every(Boolean)) return [] as VolumeFile[];
      // Never delete a file whose chunks were copied to one that is no longer
      // on disk (its pool directory removed after the last SWITCH).
      for (let i = 0; i < this.files.length; i++) if (keepIdx[i]) assertLinked(this.files[i]!);
      const remap = new Uint8Array(this.files.length);
      const next: VolumeFile[] = [];
      const dropped: VolumeFile[] = [];
      this.files.forEach((f, i) => {
        if (keepIdx[i]) {
          remap[i] = next.length;
          next.push(f);
        } else dropped.push(f);
      });
      // Only non-Allocated chunks can point at a dropped file; their index is never used.
      for (let c = 0; c < this.chunkFile.length; c++) this.chunkFile[c] = remap[this.chunkFile[c]!]!;
      this.allocIdx = remap[this.allocIdx]!;
      this.files = next;
      // Set before the gate opens: a setTier queued behind it must see them.
      for (const f of dropped) this.unlinking.set(f.pool.name, gone);
      return dropped;
    });
    if (dropped.length === 0) return [];
    try {
      // A FLUSH is not held at the gate: let any fdatasync that took the old
      // file list finish before its descriptors close (the next sync takes the
      // new list).
      await this.commit.run().catch(() => undefined);
      // A RELEASE's truncate or hole punch still running may be on one of
      // these descriptors: closed under it, the number could name another
      // file by the time the call is issued.
      while (this.truncating) await this.truncating;
      for (const f of dropped) {
        await new Promise<void>((resolve) => fs.close(f.fd, () => resolve()));
        // On the threadpool: freeing a large file's extents took ~0.2 s per
        // 512 MiB here, too long to hold the event loop (and every client).
        if (!keep) await fs.promises.rm(f.pool.volumeFile(this.rec.id), { force: true });
      }
    } finally {
      for (const f of dropped) if (this.unlinking.get(f.pool.name) === gone) this.unlinking.delete(f.pool.name);
      unlinked();
    }
    return dropped.map((f) => f.pool);
  }

  /**
   * `volumes release`: deletes this volume's file on each of `pools` that it
   * does not have open (ones a preserving hot <-> warm move kept). A file
   * still open may hold no chunk yet still be used: the target of an aborted
   * move that chunks were switched into (and out of again since, by a trim)
   * stays open, and a later move to that pool copies into it; deleted,
   * those chunks would live in an unlinked file and read as zeros after a
   * restart. At the gate, so no setTier opens one meanwhile. Returns how
   * many files were deleted.
   */
  async removeKeptFiles(pools: readonly Pool[]): Promise<number> {
    return this.removeClosedFiles(pools, true);
  }

  /**
   * A restart finishing a RELEASE a kill cut short (manager.ts
   * finishInterruptedReleases): deletes this volume's file on each of
   * `pools` that it does not have open, as removeKeptFiles does, but leaves
   * the record alone (the caller passes only pools it does not list as kept).
   */
  async removeLeftoverFiles(pools: readonly Pool[]): Promise<number> {
    return this.removeClosedFiles(pools, false);
  }

  /** Pools whose file of this volume is open (the placement pool's among them), for a migration's record of what it keeps. */
  openFilePools(): string[] {
    return this.files.map((f) => f.pool.name);
  }

  private async removeClosedFiles(pools: readonly Pool[], clearKept: boolean): Promise<number> {
    await Promise.all([...this.unlinking.values()]);
    return this.quiesced(async () => {
      if (clearKept && (this.rec.keptFilePools === undefined || this.rec.keptFilePools.length > 0)) {
        // Index first: after `volumes release` no file is kept on purpose,
        // so one a crash leaves before its delete below is a leftover the
        // next start deletes (an old record without the list gets one too).
        const next: VolumeRecord = { ...this.rec, keptFilePools: [] };
        await this.meta.volumes.put(next.name, next);
        await this.meta.durable();
        this.rec = next;
      }
      let removed = 0;
      // By inode too, not only by pool name: a pool renamed in the
      // configuration keeps its old record, and a link reaches the same
      // directory, so another name may lead to a file that is open and live.
      const open = this.files.map((f) => fs.fstatSync(f.fd));
      for (const p of pools) {
        if (this.files.some((f) => f.pool.name === p.name)) continue;
        const file = p.volumeFile(this.rec.id);
        const st = fs.statSync(file, { throwIfNoEntry: false });
        if (st === undefined || open.some((o) => o.dev === st.dev && o.ino === st.ino)) continue;
        fs.rmSync(file, { force: true });
        removed++;
      }
      return removed;
    });
  }

  /** Reads [offset, offset+length) into dst[0..length). */
  private readNow(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number, cb: DoneCb): void {
    const bad = this.usable(false);
    if (bad) return cb(bad);
    this.counters.readOps++;
    this.counters.readBytes += lengthBytes;
    if (this.files.length > 1 || this.stripes.size > 0 || (this.cold && this.cold.journal.hasVolume(this.rec.id))) {
      this.readMixed(offsetBytes, lengthBytes, dst, dstOffset).then(() => cb(null), cb);
      return;
    }
    this.fileReads++;
    fs.read(this.files[0]!.fd, dst, dstOffset, lengthBytes, offsetBytes, (err, n) => {
      this.fileReadDone();
      if (err) return cb(err);
      if (n < lengthBytes) dst.fill(0, dstOffset + n, dstOffset + lengthBytes);
      this.zeroDiscarded(offsetBytes, lengthBytes, dst, dstOffset);
      cb(null);
    });
  }

  /**
   * read() done on the calling thread, for the NBD front end's idle fast
   * path (the rule and its numbers are in nbd/connection.ts). Returns false,
   * having done nothing, when the range needs the async path (cold tier,
   * journal overlays, a failed or closed volume); throws what readSync throws.
   */
  readSync(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number): boolean {
    if (this.gate || this.usable(false) || this.files.length > 1 || this.stripes.size > 0 || (this.cold && this.cold.journal.hasVolume(this.rec.id))) return false;
    this.counters.readOps++;
    this.counters.readBytes += lengthBytes;
    this.fileReads++;
    let n: number;
    try {
      n = fs.readSync(this.files[0]!.fd, dst, dstOffset, lengthBytes, offsetBytes);
    } finally {
      this.fileReadDone();
    }
    if (n < lengthBytes) dst.fill(0, dstOffset + n, dstOffset + lengthBytes);
    this.zeroDiscarded(offsetBytes, lengthBytes, dst, dstOffset);
    return true;
  }

  private fileReadDone(): void {
    if (--this.fileReads === 0) for (const w of this.fileReadsDrained.splice(0)) w();
  }

  /** Read path when some chunks are on stripes or in the journal: chunk by chunk. */
  private async readMixed(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number): Promise<void> {
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const pieces: Promise<void>[] = [];
    for (let pos = offsetBytes; pos < end; ) {
      const c = Math.floor(pos / cs);
      const pieceEnd = Math.min(end, (c + 1) * cs);
      pieces.push(this.readPiece(c, pos, pieceEnd, dst, dstOffset + pos - offsetBytes));
      pos = pieceEnd;
    }
    await Promise.all(pieces);
  }

  /** Base contents (file, stripe or zeros) of [start, end) in chunk c, then journal overlays. */
  private async readPiece(c: number, start: number, end: number, dst: Buffer, at: number): Promise<void> {
    // Snapshot state, stripe and overlays together before any await: a
    // destage finishing meanwhile leaves the old stripe readable.
    const extents = this.cold?.journal.extents(this.rec.id, c)?.slice();
    const st = this.chunkState[c];
    const ref = this.stripes.get(c);
    const file = this.files[this.chunkFile[c]!]!;
    const chunkStart = c * this.rec.chunkSizeBytes;
    if (st === ChunkState.Cold && ref) {
      const data = await this.cold!.stripes.readStripe(ref, { volumeId: this.rec.id, chunkIndex: c });
      const from = start - chunkStart;
      const n = Math.max(0, Math.min(end - start, data.length - from));
      data.copy(dst, at, from, from + n);
      if (n < end - start) dst.fill(0, at + n, at + end - start);
    } else if (st === ChunkState.Allocated) {
      this.fileReads++;
      try {
        await readAll(file.fd, dst, at, end - start, start);
      } finally {
        this.fileReadDone();
      }
    } else {
      dst.fill(0, at, at + end - start);
    }
    if (extents) applyExtents(extents, start, end, dst, at);
  }

  /**
   * Discarded chunks may still hold stale bytes in the file, and so may
   * Unallocated ones after a crash (see staleBelowBytes): hide them, as
   * readPiece does, so a range reads the same on every path.
   */
  private zeroDiscarded(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number): void {
    const first = Math.floor(offsetBytes / this.rec.chunkSizeBytes);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / this.rec.chunkSizeBytes);
    for (let c = first; c <= last; c++) {
      const st = this.chunkState[c];
      if (st !== ChunkState.Discarded && st !== ChunkState.Unallocated) continue;
      const start = Math.max(offsetBytes, c * this.rec.chunkSizeBytes);
      const end = Math.min(offsetBytes + lengthBytes, (c + 1) * this.rec.chunkSizeBytes);
      dst.fill(0, dstOffset + start - offsetBytes, dstOffset + end - offsetBytes);
    }
  }

  /**
   * write() once past the gate; the journal copies what it keeps, so `data`
   * is never referenced after `cb`.
   */
  private writeNow(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    const bad = this.usable(true);
    if (bad) return cb(bad);
    this.counters.writeOps++;
    this.counters.writeBytes += data.length;
    if (this.rec.tier === 'cold' && this.cold) {
      this.journalWrite(RecordType.Write, offsetBytes, data.length, data, fua).then(() => cb(null), cb);
      return;
    }
    this.fileMutations++;
    const done: DoneCb = (err) => {
      this.fileMutationDone();
      cb(err);
    };
    this.writeFile(offsetBytes, data, fua, done);
  }

  /**
   * allocate(), again after every wait, until nothing is pending, then the
   * pwrite in the same turn: a chunk copy (promote, hot <-> warm move) that
   * registered while this write waited is waited for too, and each chunk's
   * file is the one it is in when the write is issued.
   */
  private writeFile(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    const ready = this.allocate(offsetBytes, data.length);
    if (ready === null) return this.pwrite(offsetBytes, data, fua, cb);
    ready.then(
      () => {
        // The volume may have failed (a copy's fdatasync) or closed meanwhile.
        const bad = this.usable(true);
        if (bad) return cb(bad);
        this.writeFile(offsetBytes, data, fua, cb);
      },
      (err: Error) => cb(err),
    );
  }

  /**
   * write() without FUA done on the calling thread, for the NBD front end's
   * idle fast path. Returns false, having done nothing, unless every chunk
   * touched is already Allocated in the file with nothing pending on it (the
   * case where allocate() would return null without side effects); throws
   * what writeSync throws. Counted as a file mutation like write().
   */
  writeSync(offsetBytes: number, data: Buffer): boolean {
    if (this.gate || this.usable(true) || this.rec.tier === 'cold' || this.files.length > 1 || !this.allocatedInFile(offsetBytes, data.length)) return false;
    this.counters.writeOps++;
    this.counters.writeBytes += data.length;
    this.fileMutations++;
    const file = this.files[0]!;
    try {
      // A short write is retried for the rest: on a full disk the retry fails with ENOSPC, which the client is told.
      for (let done = 0; done < data.length; ) {
        const n = fs.writeSync(file.fd, data, done, data.length - done, offsetBytes + done);
        if (n === 0) throw new Error(`write returned 0 of ${data.length - done} bytes`);
        done += n;
      }
    } finally {
      file.mutations++;
      this.fileMutationDone();
    }
    return true;
  }

  /** True when allocate() would skip every chunk of the range (see its loop). */
  private allocatedInFile(offsetBytes: number, lengthBytes: number): boolean {
    const cs = this.rec.chunkSizeBytes;
    const first = Math.floor(offsetBytes / cs);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / cs);
    for (let c = first; c <= last; c++) {
      if (this.chunkState[c] !== ChunkState.Allocated || this.preparing.has(c) || this.destaging.has(c)) return false;
      if (this.cold !== null && this.cold.journal.extents(this.rec.id, c) !== undefined) return false;
    }
    return true;
  }

  private fileMutationDone(): void {
    if (--this.fileMutations === 0) for (const w of this.fileMutationsDrained.splice(0)) w();
  }

  /**
   * Resolves once no write, zero or trim that took the file path is in
   * flight. Called right after a switch to the cold tier: a write queued
   * before the switch must land in the file before its chunk is destaged,
   * or the stripe would be built from the bytes it replaced.
   */
  drainFileMutations(): Promise<void> {
    if (this.fileMutations === 0) return Promise.resolve();
    return new Promise((r) => this.fileMutationsDrained.push(r));
  }

  /** Runs a file-path mutation, counted for drainFileMutations(). */
  private async counted<T>(fn: () => Promise<T>): Promise<T> {
    this.fileMutations++;
    try {
      return await fn();
    } finally {
      this.fileMutationDone();
    }
  }

  /** Appends one record per chunk piece (records never span chunks). */
  private async journalWrite(type: RecordType, offsetBytes: number, lengthBytes: number, data: Buffer | null, fua: boolean): Promise<void> {
    const journal = this.cold!.journal;
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const appends: Promise<void>[] = [];
    for (let pos = offsetBytes; pos < end; ) {
      const pieceEnd = Math.min(end, (Math.floor(pos / cs) + 1) * cs);
      const piece = data ? data.subarray(pos - offsetBytes, pieceEnd - offsetBytes) : null;
      appends.push(journal.append(type, this.rec.id, pos, pieceEnd - pos, piece));
      pos = pieceEnd;
    }
    await Promise.all(appends);
    if (fua) await this.flush();
  }

  /**
   * Writes data into the file(s) holding its chunks; counted in chunkWrites
   * from issue to completion. Called in the turn allocate() returned null.
   */
  private pwrite(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    const cs = this.rec.chunkSizeBytes;
    const first = Math.floor(offsetBytes / cs);
    const last = Math.floor((offsetBytes + data.length - 1) / cs);
    for (let c = first; c <= last; c++) this.chunkWrites[c]!++;
    const landed = () => {
      for (let c = first; c <= last; c++) if (--this.chunkWrites[c]! === 0) this.chunkWritesIdleNow(c);
    };
    const fileIdx = this.chunkFile[first]!;
    let oneFile = true;
    for (let c = first + 1; c <= last; c++) if (this.chunkFile[c] !== fileIdx) oneFile = false;
    if (oneFile) {
      const file = this.files[fileIdx]!;
      writeFully(file.fd, data, offsetBytes, (err) => {
        // Before the callback: a FLUSH it leads to must see the file dirty.
        file.mutations++;
        landed();
        if (err) return cb(err);
        if (!fua) return cb(null);
        this.flush().then(() => cb(null), cb);
      });
      return;
    }
    // Chunks in different files (during or after an interrupted hot <-> warm move): one write per chunk.
    const pieces: Promise<void>[] = [];
    for (let c = first; c <= last; c++) {
      const s = Math.max(offsetBytes, c * cs);
      const e = Math.min(offsetBytes + data.length, (c + 1) * cs);
      pieces.push(writeAll(this.files[this.chunkFile[c]!]!, data.subarray(s - offsetBytes, e - offsetBytes), s));
    }
    Promise.allSettled(pieces).then((rs) => {
      landed();
      const bad = rs.find((r) => r.status === 'rejected');
      if (bad) return cb((bad as PromiseRejectedResult).reason as Error);
      if (!fua) return cb(null);
      this.flush().then(() => cb(null), cb);
    });
  }

  private chunkWritesIdleNow(c: number): void {
    const waiters = this.chunkWritesDrained.get(c);
    if (!waiters) return;
    this.chunkWritesDrained.delete(c);
    for (const w of waiters) w();
  }

  /** Resolves once no file write to chunk c is in flight. */
  private chunkWritesIdle(c: number): Promise<void> | null {
    if (this.chunkWrites[c] === 0) return null;
    return new Promise((r) => {
      const list = this.chunkWritesDrained.get(c);
      if (list) list.push(r);
      else this.chunkWritesDrained.set(c, [r]);
    });
  }

  /**
   * Makes every chunk touched by [offset, offset+length) Allocated. Returns
   * null when nothing async was needed (the common case), else a promise that
   * settles once stale regions are zeroed. Throws NoSpace via the promise.
   */
  private allocate(offsetBytes: number, lengthBytes: number): Promise<void> | null {
    const cs = this.rec.chunkSizeBytes;
    const first = Math.floor(offsetBytes / cs);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / cs);
    let waits: Promise<void>[] | null = null;
    for (let c = first; c <= last; c++) {
      const st = this.chunkState[c];
      // After a cold -> hot switch, journaled bytes must be merged into the file first.
      const journaled = this.cold !== null && this.cold.journal.extents(this.rec.id, c) !== undefined;
      // A destage begun before a switch to hot may still flip this chunk to a
      // stripe built from older file bytes: wait for it and promote after.
      const destaging = this.destaging.has(c);
      const pending = this.preparing.get(c);
      if (pending) {
        // A hot <-> warm move of an Allocated chunk that fails (target full,
        // its pool gone) leaves the chunk in its source file, where this
        // write then goes: the move's error is not the client's. (Moves only:
        // the re-run starts no copy of its own for such a chunk, so this
        // cannot retry forever.)
        const move = st === ChunkState.Allocated && !journaled && !destaging;
        (waits ??= []).push(move ? pending.catch(() => undefined) : pending);
        continue;
      }
      if (st === ChunkState.Allocated && !journaled && !destaging) continue;
      if (st === ChunkState.Cold || journaled || destaging) {
        (waits ??= []).push(this.ensurePromoted(c));
        continue;
      }
      try {
        this.pool.reserve(cs);
      } catch (err) {
        return Promise.reject(err);
      }
      const fileIdx = this.allocIdx;
      const file = this.files[fileIdx]!;
      // Below the size the file had when this process opened it, a chunk
      // never allocated may still hold a write whose entry a crash lost.
      const maybeStale = st === ChunkState.Unallocated && c * cs < (file.staleBelowBytes ?? 0);
      // A fresh chunk where a shrink of the file may be undone by a power
      // cut (shrunkAt): the old bytes would come back around the write.
      const shrunk = st === ChunkState.Unallocated && file.shrunkAt !== undefined;
      if (st === ChunkState.Discarded || maybeStale || shrunk) {
        // The region still holds old bytes (or may); zero it before the
        // chunk becomes readable as data again.
        const chunkStart = c * cs;
        // The zeros must be durable before the index calls the chunk data,
        // or a power cut could bring back bytes a flushed trim removed.
        // syncFile: a failed fdatasync takes the volume offline (the error
        // may be another write's lost pages, reported once per file).
        // A maybe-stale chunk is checked first: almost always a hole, which
        // lseek(SEEK_DATA) tells without reading it; one with any extent is
        // read, and zeroed only if it holds a byte (regionHoldsData).
        // The whole chunk, the write's own range included: the Allocated
        // entry is an LMDB commit, durable on its own before the write's
        // pwrite is (that waits for a FLUSH), so a power cut between them
        // must find zeros there, not the bytes a flushed TRIM removed (test
        // review-discarded-rewrite-order).
        // A region the page cache says is a hole (or zeros) after a shrink
        // is one on disk only once the shrink is durable (shrinkDurable:
        // test review-release-truncate-power-cut).
        const p = (st === ChunkState.Discarded ? Promise.resolve(true) : maybeStale ? regionHoldsData(file.fd, chunkStart, cs) : Promise.resolve(false))
          .then((holdsData) => (holdsData ? this.zeroRegion(file, chunkStart, cs).then(() => this.syncFile(file)) : this.shrinkDurable(file)))
          .then(() => {
            this.preparing.delete(c);
            this.setChunk(c, ChunkState.Allocated, 0, fileIdx);
          });
        p.catch(() => {
          this.preparing.delete(c);
          file.pool.release(cs);
        });
        this.preparing.set(c, p);
        (waits ??= []).push(p);
      } else {
        this.setChunk(c, ChunkState.Allocated);
      }
    }
    return waits ? Promise.all(waits).then(() => undefined) : null;
  }

  /**
   * Makes a shrink of the file (shrunkAt) durable: one fdatasync, shared by
   * the chunks first allocated while it runs, unless a sync issued after the
   * shrink (a FLUSH's) already succeeded.
   */
  private shrinkDurable(file: VolumeFile): Promise<void> | undefined {
    const at = file.shrunkAt;
    if (at === undefined) return undefined;
    if (file.syncedMutations >= at) {
      file.shrunkAt = undefined;
      return undefined;
    }
    return (file.shrinkSync ??= this.syncFile(file)
      .then(() => {
        if (file.shrunkAt === at) file.shrunkAt = undefined;
      })
      .finally(() => (file.shrinkSync = undefined)));
  }

  /**
   * Writes zeros over the whole chunk [chunkStart, chunkStart+cs), the range
   * the caller is about to write included (see allocate: never skipped).
   */
  private async zeroRegion(file: VolumeFile, chunkStart: number, cs: number): Promise<void> {
    await writeAll(file, zeros(cs), chunkStart);
  }

  /**
   * `absorbedSeq`: journal records of chunk c up to this seq are merged into
   * (promote) or superseded by (discard) the new state. The entry keeps the
   * highest such seq as destagedSeq so a replay after a crash skips them:
   * replayed, they would land on top of newer bytes in the file.
   */
  private setChunk(c: number, state: ChunkState, absorbedSeq = 0, fileIdx = this.allocIdx): void {
    this.setState(c, state);
    this.chunkFile[c] = fileIdx;
    this.metaDirty = true;
    const old = this.stripes.get(c);
    this.stripes.delete(c);
    const prev = this.meta.chunks.get([this.rec.id, c]);
    const destagedSeq = Math.max(prev?.destagedSeq ?? 0, absorbedSeq);
    const lastGeneration = Math.max(lastGenerationOf(prev), old?.generation ?? 0);
    // Preservation mode: the stripe being replaced stays referenced from the
    // entry instead of being freed; one kept before it (an earlier preserving
    // migration) is superseded by this newer old copy and freed instead.
    let toFree = old;
    if (old && this.preserveOnSwitch) {
      toFree = this.preserved.get(c);
      this.preserved.set(c, old);
    }
    const preserved = this.preserved.get(c);
    if (state === ChunkState.Unallocated && !preserved) this.indexWrite(this.meta.chunks.remove([this.rec.id, c]));
    else {
      this.indexWrite(
        this.meta.chunks.put([this.rec.id, c], {
          state,
          pool: this.files[fileIdx]!.pool.name,
          ...(destagedSeq > 0 ? { destagedSeq } : {}),
          ...(lastGeneration > 0 ? { lastGeneration } : {}),
          ...(preserved ? { preserved } : {}),
        }),
      );
    }
    if (toFree) this.cold?.stripes.free(toFree);
  }

  /**
   * A chunk-map write nobody awaits (the next FLUSH asks meta.durable()).
   * Left unhandled, its failure crashed the daemon (an unhandled rejection);
   * it takes the volume offline instead, as a failed durable() does: the
   * in-memory chunk map no longer matches the index, so the next FLUSH (and
   * every later one) fails rather than report the chunk's writes durable.
   */
  private indexWrite(p: Promise<unknown>): void {
    this.indexWritesPending++;
    p.then(
      () => void this.indexWritesPending--,
      (err: Error) => {
        this.indexWritesPending--;
        this.failure ??= new VolumeFailed(`volume ${this.name}: writing its chunk map failed (${err.message}); volume taken offline`);
        log.error('volume: chunk map write failed; volume taken offline', { volume: this.name, err: err.message });
      },
    );
  }

  /**
   * Copies chunk c (stripe or file, plus journal records) into the volume
   * file and makes it Allocated. Writes to the chunk wait for it.
   */
  ensurePromoted(c: number, verify = false): Promise<void> {
    const pending = this.preparing.get(c);
    if (pending) return pending;
    // close() waits only for the copies registered when it looked; one
    // started after (a migration worker's next chunk while the volume is
    // deleted) would read and write descriptor numbers that another file
    // may have been given since.
    if (this.closed) return Promise.reject(new VolumeFailed(`volume ${this.name} was closed`));
    const p = this.promote(c, verify).finally(() => this.preparing.delete(c));
    this.preparing.set(c, p);
    return p;
  }

  /**
   * COPY + VERIFY + SWITCH of chunk c into the placement pool's file: from a
   * stripe and/or journal records (cold -> hot/warm), or from another pool's
   * file (hot <-> warm). Runs registered in `preparing`, so writes to the
   * chunk wait for it; the source stays authoritative until the SWITCH.
   */
  private async promote(c: number, verify: boolean): Promise<void> {
    await this.destaging.get(c)?.catch(() => undefined);
    // Writes issued before this copy registered (they passed allocate())
    // must land in the source before it is read: they do not wait for us.
    await this.chunkWritesIdle(c);
    const cs = this.rec.chunkSizeBytes;
    const st = this.chunkState[c];
    const srcIdx = this.chunkFile[c]!;
    const src = this.files[srcIdx]!;
    const dstIdx = this.allocIdx;
    const dst = this.files[dstIdx]!;
    const moving = st === ChunkState.Allocated && srcIdx !== dstIdx;
    // Already in the file with nothing journaled on top (promoted by a
    // migration or a write since the caller looked, e.g. a destager pass
    // listing chunks before a cold -> hot switch): nothing to merge. Copying
    // the file onto itself anyway is a read-modify-write that puts back the
    // old bytes of any pwrite in flight.
    if (st === ChunkState.Allocated && !moving && this.lastSeq(c) === 0) return;
    const reserve = st !== ChunkState.Allocated || moving;
    if (reserve) dst.pool.reserve(cs);
    const buf = takeCopyBuffer(cs);
    const back = verify ? takeCopyBuffer(cs) : null;
    try {
      const upto = this.lastSeq(c);
      await this.readPiece(c, c * cs, (c + 1) * cs, buf, 0);
      await writeAll(dst, buf, c * cs);
      // The index must never point at bytes a power cut can take back.
      await this.syncFile(dst);
      if (back) {
        await readAll(dst.fd, back, 0, cs, c * cs);
        // Byte for byte: stricter than comparing checksums, and a memcmp costs
        // a tenth of two CRC32C passes on the event loop (12 vs 113 ms per
        // 512 MiB here), which was a fifth of a hot <-> warm move.
        if (!back.equals(buf)) throw new VerifyFailed(`volume ${this.name} chunk ${c}: file copy does not match its source`);
      }
      if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
      // The target pool's directory removed mid-move (the pool went away)
      // leaves our descriptor writable, but the copy would be gone at the
      // next start, and RELEASE would then delete the source too.
      // (fstat on the event loop: a microsecond call, where a threadpool
      // round trip would queue behind the copies' fdatasyncs.)
      assertLinked(dst);
      // A trim or zero that discarded the chunk while it was copied wins: a
      // SWITCH now would bring back the bytes it removed.
      if (this.chunkState[c] !== st || (st === ChunkState.Allocated && this.files[this.chunkFile[c]!] !== src)) {
        if (reserve) dst.pool.release(cs);
        return;
      }
      // By the file, not the index read at the start: RELEASE, or the close
      // of an aborted move's empty target, may have renumbered `files` since
      // (a copy the destager registered after their quiesce point). The
      // file itself stays: it was the placement pool's, or a chunk is in it.
      const dstNow = this.files.indexOf(dst);
      if (dstNow < 0) throw new VolumeFailed(`volume ${this.name} chunk ${c}: the copy's target file on pool ${dst.pool.name} was closed under it`);
      // SWITCH: one index write; the stripe is released after it (setChunk).
      this.setChunk(c, ChunkState.Allocated, upto, dstNow);
      if (moving) src.pool.release(cs);
      await this.meta.durable();
      if (upto > 0) this.cold?.journal.release(this.rec.id, c, upto);
    } catch (err) {
      if (reserve) dst.pool.release(cs);
      throw err;
    } finally {
      // Every read and write into them has settled (each was awaited).
      giveCopyBuffer(buf);
      if (back) giveCopyBuffer(back);
    }
  }

  /**
   * fdatasync of a chunk copy's target. One per chunk: sharing one sync
   * among the copies in flight (group commit) measured no faster (in-process
   * 512 MiB moves, 3 interleaved runs: 645/622 MiB/s per chunk vs 622/605
   * shared).
   */
  private syncFile(f: VolumeFile): Promise<void> {
    return this.syncFd(f);
  }

  /**
   * fdatasync of one of the volume's files. A failure takes the volume
   * offline (never retried: the kernel may have dropped dirty pages of client
   * writes to this file too, and reports that only once). A success counts
   * only once every other fdatasync of the file that was still running when
   * this one returned has returned too, and none failed: overlapping calls on
   * one open file share its writeback error, which the kernel reports to one
   * of them only (errseq, once per open file), so a call that returned 0 may
   * have waited for pages whose write failed (a FLUSH beside a chunk copy's
   * sync; two copies into one move target). Without this a FLUSH resolved,
   * or a copy SWITCHed its chunk to bytes never written, before the other's
   * EIO arrived (test review-volume-flush-overlapping-sync-error).
   */
  private syncFd(f: VolumeFile): Promise<void> {
    let returned!: () => void;
    const mine = new Promise<void>((r) => (returned = r));
    f.syncing.add(mine);
    const done = () => {
      f.syncing.delete(mine);
      returned();
    };
    return new Promise<void>((resolve, reject) => {
      const onReturn = (err: NodeJS.ErrnoException | null) => {
        done();
        if (err) {
          this.failure ??= new VolumeFailed(`volume ${this.name}: fdatasync of its file on pool ${f.pool.name} failed (${err.message}); volume taken offline`);
          return reject(this.failure);
        }
        // Success, but another fdatasync of the volume's files failed (or
        // fails, for one still running on this file): this one's "success"
        // may cover pages the kernel dropped.
        const settle = () => (this.failure ? reject(this.failure) : resolve());
        if (f.syncing.size === 0) return settle();
        void Promise.all(f.syncing).then(settle);
      };
      // A call that throws before issuing anything (a bad argument) leaves no waiter behind.
      try {
        fs.fdatasync(f.fd, onReturn);
      } catch (err) {
        done();
        throw err;
      }
    });
  }

  /**
   * Chunks not (only) in the placement pool's file: on a stripe, in the
   * journal, or in another pool's file. A migration to hot/warm copies them.
   */
  chunksOffFile(): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.chunkState.length; c++) if (this.offPlacement(c)) out.push(c);
    return out;
  }

  /**
   * Whether a move to this volume's own tier has chunks to copy: a hot/warm
   * volume left split by an interrupted or aborted move (chunks in another
   * pool's file, in stripes, or journaled). Cheap when there is nothing: one
   * file, no stripes and no journal mean nothing is off placement.
   */
  hasChunksOffPlacement(): boolean {
    if (this.rec.tier === 'cold') return false;
    if (this.files.length === 1 && this.stripes.size === 0 && !(this.cold?.journal.hasVolume(this.rec.id) ?? false)) return false;
    for (let c = 0; c < this.chunkState.length; c++) if (this.offPlacement(c)) return true;
    return false;
  }

  /** Chunks with data that a move into `pool`'s file would copy (the room it needs). */
  chunksNotIn(pool: Pool): number {
    let n = 0;
    for (let c = 0; c < this.chunkState.length; c++) {
      const st = this.chunkState[c];
      if (st === ChunkState.Cold || (st === ChunkState.Allocated && this.files[this.chunkFile[c]!]!.pool !== pool)) n++;
      else if (this.cold !== null && this.cold.journal.extents(this.rec.id, c) !== undefined && st !== ChunkState.Allocated) n++;
    }
    return n;
  }

  /** See chunksOffFile. */
  offPlacement(c: number): boolean {
    const st = this.chunkState[c];
    if (st === ChunkState.Cold) return true;
    if (st === ChunkState.Allocated && this.chunkFile[c] !== this.allocIdx) return true;
    return this.cold !== null && this.cold.journal.extents(this.rec.id, c) !== undefined;
  }

  /** Chunks whose bytes live in the volume file. */
  chunksOnFile(): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.chunkState.length; c++) if (this.chunkState[c] === ChunkState.Allocated) out.push(c);
    return out;
  }


  /**
   * `volumes release`: frees every stripe kept by a preserving cold -> hot
   * migration, and for a cold volume the file kept by a preserving hot ->
   * cold one (truncated only if no chunk is in it). Index first, bytes
   * second: the entries lose `preserved` in one transaction (read inside it,
   * so a destage or compaction flip queued before is not undone), then the
   * stripes are freed.
   */
  async releasePreserved(): Promise<{ stripesFreed: number; fileReleased: boolean }> {
    const chunks = [...this.preserved.keys()];
    // A promote or destage of one of these chunks in flight writes its entry from the map: let it land first.
    await Promise.allSettled(chunks.flatMap((c) => [this.preparing.get(c), this.destaging.get(c)]).filter((p) => p !== undefined));
    const refs: StripeRef[] = [];
    await this.meta.transaction(() => {
      for (const c of chunks) {
        const ref = this.preserved.get(c);
        if (!ref) continue;
        this.preserved.delete(c);
        refs.push(ref);
        const key: [number, number] = [this.rec.id, c];
        const e = this.meta.chunks.get(key);
        if (e?.preserved) {
          const { preserved: _dropped, ...rest } = e;
          if (rest.state === ChunkState.Unallocated) void this.meta.chunks.remove(key);
          else void this.meta.chunks.put(key, rest);
        }
      }
    });
    await this.meta.durable();
    for (const ref of refs) this.cold?.stripes.free(ref);
    let fileReleased = false;
    if (this.rec.tier === 'cold' && this.chunksOnFile().length === 0) {
      fileReleased = await this.releaseFile();
    }
    return { stripesFreed: refs.length, fileReleased };
  }

  /**
   * RELEASE after hot -> cold (the move's last step, or `volumes release`):
   * the file holds no live chunk any more; give its space back. Decided at
   * the quiesce gate (closed volumes refused there): the volume still cold,
   * no chunk in the file, no request, copy or destage running, no file read
   * in flight. Only a setTier can then let a copy into the file, and it
   * waits for the truncate (`truncating`); so does close(). The truncate
   * itself runs after the gate opens. Returns whether it truncated.
   */
  async releaseFile(): Promise<boolean> {
    if (this.chunksOnFile().length > 0) return false;
    let landed!: () => void;
    let mine: Promise<void> | null = null;
    const truncate = await this.quiesced(async () => {
      // Another RELEASE's truncate (the move's and `volumes release`): one at a time, so `truncating` names the one in flight.
      while (this.truncating) await this.truncating;
      // A move to hot/warm flipped the tier since the caller looked: its
      // copies may be in the file already, not yet switched.
      if (this.rec.tier !== 'cold' || this.chunksOnFile().length > 0) return null;
      // Reads of chunks switched out just before (a move to cold's last
      // destages) must not see the file cut under them.
      if (this.fileReads > 0) await new Promise<void>((r) => this.fileReadsDrained.push(r));
      if (this.closed) throw new VolumeFailed(`volume ${this.name} was closed`);
      const file = this.files[this.allocIdx]!;
      this.truncating = mine = new Promise<void>((r) => (landed = r));
      return file;
    });
    if (truncate === null) return false;
    try {
      await new Promise<void>((resolve, reject) =>
        fs.ftruncate(truncate.fd, 0, (err) => {
          truncate.mutations++;
          // Not synced here (a RELEASE of a file that stays cold needs no
          // sync): a chunk first allocated in it later syncs it first.
          truncate.shrunkAt = truncate.mutations;
          return err ? reject(err) : resolve();
        }),
      );
    } finally {
      if (this.truncating === mine) this.truncating = null;
      landed();
    }
    // Files of other pools (a split hot/warm volume that went cold) go too.
    await this.releaseOtherFiles(false);
    return true;
  }

  /**
   * After a move to cold stopped with chunks left in the file(s) (so
   * releaseFile could not truncate): frees the blocks of every chunk range
   * no chunk's bytes are in any more, with fallocate(PUNCH_HOLE), before the
   * tier reverts. Called by the migration only when not preserving (a kept
   * file is never punched: none of the record's keptFilePools either).
   *
   * Which ranges are dead, and why nothing can need them: chosen at the
   * quiesce gate (no request, copy or destage in flight) while the volume is
   * cold, they are the ranges of chunks whose state is Cold (bytes in a
   * stripe) or Discarded (reads as zeros), in every open file. Those states
   * are set in memory only after their index entry is durable (destage), or
   * were made durable by the switch to cold (a discard before it; the
   * durable() below makes sure), so after a crash the index never sends a
   * read to such a range either. While the volume is cold, no path reads or
   * writes a Cold or Discarded chunk's range in a file: reads take the
   * stripe or zeros (a whole-file read of a single-file volume zero-fills
   * Discarded chunks), writes go to the journal, a destage reads the stripe;
   * only an Allocated chunk's range is read (never punched). A chunk comes
   * back into a file only by a promote or a first write, both after a
   * switch to hot/warm (setTier), which waits for this punch (`truncating`),
   * and both write the whole chunk (a promote its bytes, a Discarded chunk's
   * first write zeros) before the index points at it. close() and
   * releaseOtherFiles wait for it too, so a descriptor is never closed
   * under it. Clients are not held: the punches run after the gate opens.
   *
   * Returns what it punched: only chunks whose range still held data
   * (dataRuns), so a range already a hole is not counted again; `supported`
   * false when the file system cannot punch holes (EOPNOTSUPP: nothing
   * freed, nothing else changes), with the pool whose file refused (the
   * caller logs it and remembers it: migration.ts punchCounted). Another
   * error stops it (logged, thrown): the space stays used, as without it.
   */
  async punchDeadRanges(): Promise<{ rangesPunched: number; bytesPunched: number; supported: boolean; refusedPool?: string }> {
    let landed!: () => void;
    let mine: Promise<void> | null = null;
    const cs = this.rec.chunkSizeBytes;
    const plan = await this.quiesced(async () => {
      while (this.truncating) await this.truncating;
      if (this.rec.tier !== 'cold') return null;
      const kept = new Set(this.rec.keptFilePools ?? []);
      const ranges: { file: VolumeFile; offsetBytes: number; lengthBytes: number }[] = [];
      for (const f of this.files) {
        if (kept.has(f.pool.name)) continue;
        for (let c = 0; c < this.chunkState.length; c++) {
          const st = this.chunkState[c];
          if (st !== ChunkState.Cold && st !== ChunkState.Discarded) continue;
          const last = ranges[ranges.length - 1];
          if (last !== undefined && last.file === f && last.offsetBytes + last.lengthBytes === c * cs) last.lengthBytes += cs;
          else ranges.push({ file: f, offsetBytes: c * cs, lengthBytes: cs });
        }
      }
      if (ranges.length === 0) return null;
      this.truncating = mine = new Promise<void>((r) => (landed = r));
      return ranges;
    });
    if (plan === null) return { rangesPunched: 0, bytesPunched: 0, supported: true };
    let rangesPunched = 0;
    let bytesPunched = 0;
    try {
      // Every Cold/Discarded state above is in the durable index before a byte goes.
      await this.meta.durable();
      for (const planned of plan) {
        for (const r of await this.dataRuns(planned, cs)) {
          // Counted whatever the outcome: a punch that failed part way may have freed some blocks.
          const punched = await punchHole(r.file.fd, r.offsetBytes, r.lengthBytes).finally(() => r.file.mutations++);
          if (!punched) return { rangesPunched, bytesPunched, supported: false, refusedPool: r.file.pool.name };
          rangesPunched++;
          bytesPunched += r.lengthBytes;
        }
      }
    } catch (err) {
      log.warn('volume: punching dead ranges failed; their space stays used until the file is released', { volume: this.name, err: (err as Error).message });
      throw err;
    } finally {
      if (this.truncating === mine) this.truncating = null;
      landed();
    }
    return { rangesPunched, bytesPunched, supported: true };
  }

  /**
   * The chunks of a dead range (chunk-aligned, whole chunks) that still hold
   * a data extent, adjacent ones merged: what punchDeadRanges punches and
   * counts. A range already a hole (a second abort in a row, a punch a kill
   * cut short and a start finished) frees nothing, so it is neither punched
   * again nor counted (before, two aborts reported twice the bytes freed).
   * lseek SEEK_DATA, at most one per chunk holding data: each answer skips
   * the holes before it. A file system without hole tracking answers "data"
   * everywhere: every chunk is punched (or refused) and counted, as before.
   */
  private async dataRuns(r: { file: VolumeFile; offsetBytes: number; lengthBytes: number }, chunkSizeBytes: number): Promise<{ file: VolumeFile; offsetBytes: number; lengthBytes: number }[]> {
    const out: { file: VolumeFile; offsetBytes: number; lengthBytes: number }[] = [];
    const end = r.offsetBytes + r.lengthBytes;
    let pos = r.offsetBytes;
    while (pos < end) {
      const dataAt = await firstDataOffset(r.file.fd, pos);
      if (dataAt === -1 || dataAt >= end) break; // holes only, up to the range's end
      // The chunk holding dataAt (ranges are chunk-aligned, so it starts at or after pos).
      const chunkStart = Math.max(pos, dataAt - ((dataAt - r.offsetBytes) % chunkSizeBytes));
      const last = out[out.length - 1];
      if (last !== undefined && last.offsetBytes + last.lengthBytes === chunkStart) last.lengthBytes += chunkSizeBytes;
      else out.push({ file: r.file, offsetBytes: chunkStart, lengthBytes: chunkSizeBytes });
      pos = chunkStart + chunkSizeBytes;
    }
    return out;
  }

  private lastSeq(c: number): number {
    const ext = this.cold?.journal.extents(this.rec.id, c);
    return ext && ext.length ? ext[ext.length - 1]!.seq : 0;
  }

  /**
   * Merges chunk c (file or old stripe, plus journal records) into a new
   * stripe generation, flips the index in one transaction, then frees the
   * journal records and the old copy. Also moves Allocated chunks of a cold
   * volume off the hot pool. No-op when there is nothing to do.
   */
  destageChunk(c: number, verify = false): Promise<boolean> {
    const cold = this.cold;
    // Already being destaged (by the destager or a migration): share that run.
    const running = this.destaging.get(c);
    if (running) return running;
    if (!cold || this.preparing.has(c) || this.failure || this.closed) return Promise.resolve(false);
    const p = this.destage(cold, c, verify).finally(() => this.destaging.delete(c));
    this.destaging.set(c, p);
    return p;
  }

  /**
   * Empties chunk c's journal records toward the volume's tier: into a new
   * stripe for cold volumes, into the file for hot/warm ones (after a
   * cold -> hot switch).
   */
  async drainJournalChunk(c: number): Promise<boolean> {
    if (this.rec.tier === 'cold') return this.destageChunk(c);
    // The destager's list is made when its pass starts; a migration or a
    // write may have merged the chunk into the file since.
    if (this.lastSeq(c) === 0) return false;
    await this.ensurePromoted(c);
    return true;
  }

  private async destage(cold: ColdTier, c: number, verify: boolean): Promise<boolean> {
    // A file write queued before the switch to cold may still be in flight:
    // the copy must include it (no new file write starts once tier is cold).
    if (this.chunkState[c] === ChunkState.Allocated) await this.drainFileMutations();
    const st = this.chunkState[c];
    const upto = this.lastSeq(c);
    if (upto === 0 && st !== ChunkState.Allocated) return false;
    const srcPool = st === ChunkState.Allocated ? this.chunkPool(c) : null;
    {
      const cs = this.rec.chunkSizeBytes;
      const data = Buffer.allocUnsafe(cs);
      const oldRef = this.stripes.get(c);
      // Above every stripe the chunk ever had, also those before a promote:
      // (owner, chunk, generation) then names one stripe only, so a shard
      // record of a superseded stripe is never taken for the live one (and
      // fsck does not report the live stripe as older than dead records).
      const lastGeneration = Math.max(lastGenerationOf(this.meta.chunks.get([this.rec.id, c])), oldRef?.generation ?? 0);
      await this.readPiece(c, c * cs, (c + 1) * cs, data, 0);
      let entry: ChunkEntry;
      if (isZero(data)) {
        entry = { state: ChunkState.Discarded, pool: this.pool.name, ...(lastGeneration > 0 ? { lastGeneration } : {}) };
      } else {
        // VERIFY (read-back compare) happens inside writeStripe: no decode, no cache fill.
        const ref = await cold.stripes.writeStripe(volumeOwnerId(this.rec.id), c, lastGeneration + 1, data, { verify });
        entry = { state: ChunkState.Cold, pool: '', stripe: ref };
      }
      if (this.closed) return false;
      // Never lower destagedSeq: a promote merged the chunk's journal records
      // up to it into the file and released them, but the journal files
      // still hold them (the head file is replayed at every start), and
      // `upto` is 0 for a chunk destaged from the file: replayed, they would
      // land on top of everything written since (test destage-after-promote-restart).
      const destagedSeq = Math.max(this.meta.chunks.get([this.rec.id, c])?.destagedSeq ?? 0, upto);
      if (destagedSeq > 0) entry.destagedSeq = destagedSeq;
      // A stripe kept by a preserving migration stays referenced (read from
      // the in-memory map right before the put: releasePreserved() may have
      // freed it while the new stripe was written).
      const kept = this.preserved.get(c);
      if (kept) entry.preserved = kept;
      await this.meta.chunks.put([this.rec.id, c], entry);
      await this.meta.durable();
      srcPool?.release(cs);
      this.setState(c, entry.state);
      if (entry.stripe) this.stripes.set(c, entry.stripe);
      else this.stripes.delete(c);
      if (upto > 0) cold.journal.release(this.rec.id, c, upto);
      if (oldRef) cold.stripes.free(oldRef);
      return true;
    }
  }

  /**
   * Replaces the stripe of a Cold chunk after reconstruction (same data, new
   * shard places). The check and the write are one transaction (a put after
   * a check outside it could land after a destage's flip, or after segment
   * compaction moved the stripe, and point the index at a stale copy).
   */
  async replaceStripe(c: number, expected: StripeRef, next: StripeRef): Promise<boolean> {
    // Closed (deleted, or closed once nothing held it): a flip in the index now would be behind
    // the back of a copy opened since, whose next destage would free the rebuilt stripe.
    if (this.closed || this.stripes.get(c) !== expected) {
      // Superseded meanwhile (rewritten, discarded, promoted, moved by
      // compaction, or the volume deleted): no flip, so the records the
      // rebuild just wrote are referenced by nothing and are dead, counted
      // as by a flip that lost below. Never twice: next is this rebuild's
      // own, and a next shard at the very place `expected` names is left
      // out (its writer's free(expected) counted that place; see
      // StripeStore.releaseReplaced). Never a live record: only a flip to
      // `next` would reference them, and none is made.
      this.cold?.stripes.releaseReplaced(expected, next, false);
      return false;
    }
    const key: [number, number] = [this.rec.id, c];
    const flipped = await this.meta.transaction(() => {
      const prev = this.meta.chunks.get(key);
      if (prev?.state !== ChunkState.Cold || !sameStripe(prev.stripe, expected)) return false;
      void this.meta.chunks.put(key, { ...prev, stripe: next });
      return true;
    });
    if (flipped) await this.meta.durable();
    this.cold?.stripes.releaseReplaced(expected, next, flipped);
    if (!flipped) return false;
    const cur = this.stripes.get(c);
    if (cur === expected) this.stripes.set(c, next);
    else if (cur !== undefined && cur.generation === expected.generation) {
      // Segment compaction moved this stripe after our commit (same generation,
      // other places): the committed entry carries both its move and ours.
      const committed = this.meta.chunks.get(key)?.stripe;
      if (committed !== undefined && committed.generation === expected.generation) this.stripes.set(c, committed);
    }
    return true;
  }

  /**
   * Zeroes a range. Whole chunks are discarded (metadata only) unless noHole;
   * partial chunks get real zeros. With fastZero, fails with `SlowZero`
   * instead of writing zeros.
   */
  private async writeZeroesNow(offsetBytes: number, lengthBytes: number, opts: { noHole: boolean; fua: boolean; fastZero: boolean }): Promise<void> {
    const bad = this.usable(true);
    if (bad) throw bad;
    this.counters.writeOps++;
    if (this.rec.tier === 'cold' && this.cold) return this.journalWrite(RecordType.Zero, offsetBytes, lengthBytes, null, opts.fua);
    return this.counted(() => this.zeroFile(offsetBytes, lengthBytes, opts));
  }

  private async zeroFile(offsetBytes: number, lengthBytes: number, opts: { noHole: boolean; fua: boolean; fastZero: boolean }): Promise<void> {
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const work: [number, number][] = [];
    const discards: number[] = [];
    for (let pos = offsetBytes; pos < end; ) {
      const c = Math.floor(pos / cs);
      const pieceEnd = Math.min(end, (c + 1) * cs);
      const whole = pos === c * cs && pieceEnd === (c + 1) * cs;
      const st = this.chunkState[c];
      // Journal records of a chunk not yet promoted after a cold -> hot
      // switch overlay it: it reads as their bytes, not as zeros.
      const journaled = this.cold !== null && this.cold.journal.extents(this.rec.id, c) !== undefined;
      if ((st === ChunkState.Unallocated || st === ChunkState.Discarded) && !opts.noHole && !this.preparing.has(c) && !journaled) {
        // Already reads as zeros.
      } else if (whole && !opts.noHole) {
        discards.push(c);
      } else {
        work.push([pos, pieceEnd]);
      }
      pos = pieceEnd;
    }
    // Decide FAST_ZERO before changing anything: the NBD spec says a refused
    // fast zero SHOULD NOT alter the export.
    if (work.length > 0 && opts.fastZero) throw new SlowZero('zeroing this range needs data writes');
    for (const c of discards) {
      // A copy of the chunk that failed left it as it was: discard that.
      await this.preparing.get(c)?.catch(() => undefined);
      await this.destaging.get(c)?.catch(() => undefined);
      this.discard(c);
    }
    for (const [s, e] of work) {
      await new Promise<void>((resolve, reject) => this.writeFile(s, zeros(e - s), false, (err) => (err ? reject(err) : resolve())));
    }
    if (opts.fua) await this.flush();
  }

  /** Discards whole chunks inside the range; partial chunks are left as they are (TRIM is advisory). */
  private async trimNow(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const bad = this.usable(true);
    if (bad) throw bad;
    // On cold volumes a trim is journaled as zeros: it must not leave old stripe data visible.
    if (this.rec.tier === 'cold' && this.cold) return this.journalWrite(RecordType.Zero, offsetBytes, lengthBytes, null, fua);
    return this.counted(() => this.trimFile(offsetBytes, lengthBytes, fua));
  }

  private async trimFile(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const cs = this.rec.chunkSizeBytes;
    const first = Math.ceil(offsetBytes / cs);
    const endChunk = Math.floor((offsetBytes + lengthBytes) / cs);
    const endIsVolumeEnd = offsetBytes + lengthBytes === this.rec.sizeBytes;
    const last = endIsVolumeEnd ? Math.ceil(this.rec.sizeBytes / cs) : endChunk;
    for (let c = first; c < last; c++) {
      // A copy of the chunk that failed left it as it was: discard that.
      await this.preparing.get(c)?.catch(() => undefined);
      await this.destaging.get(c)?.catch(() => undefined);
      this.discard(c);
    }
    if (fua) await this.flush();
  }

  private discard(c: number): void {
    const st = this.chunkState[c];
    const upto = this.lastSeq(c);
    // An Unallocated/Discarded chunk with journal records (a cold -> hot
    // switch before its promote) holds their bytes: discarded too, as
    // Discarded so that the entry keeps destagedSeq for the replay.
    if (st !== ChunkState.Allocated && st !== ChunkState.Cold && upto === 0) return;
    if (st === ChunkState.Allocated) this.chunkPool(c).release(this.rec.chunkSizeBytes);
    // Journal records older than the discard must not resurface (nor be
    // replayed after a crash): released now for reads, their file deleted
    // only once the Discarded entry (its destagedSeq) is durable.
    this.setChunk(c, ChunkState.Discarded, upto);
    if (upto > 0) this.cold?.journal.release(this.rec.id, c, upto, this.meta.durable());
  }

  /** Every change of a chunk's state goes through here: it keeps dataPerGroup. */
  private setState(c: number, state: ChunkState): void {
    const groups = this.dataPerGroup;
    if (groups !== null) groups[c >> STATUS_GROUP_SHIFT]! += (holdsData(state) ? 1 : 0) - (holdsData(this.chunkState[c]!) ? 1 : 0);
    this.chunkState[c] = state;
  }

  /**
   * dataPerGroup: the open counts it from the chunk entries it reads
   * (VolumeManager.openRecord); otherwise built here once from the chunk map.
   */
  private statusGroups(): Uint32Array {
    if (this.dataPerGroup !== null) return this.dataPerGroup;
    const st = this.chunkState;
    const groups = statusGroupsFor(st.length);
    for (let c = 0; c < st.length; c++) if (st[c] === ChunkState.Allocated || st[c] === ChunkState.Cold) groups[c >> STATUS_GROUP_SHIFT]!++;
    this.dataPerGroup = groups;
    return groups;
  }

  /**
   * Extents of base:allocation over the range, merged, in order: at most
   * maxExtents, covering the whole range or (past STATUS_CHUNK_BUDGET
   * chunks looked at one by one) a first part of it. A chunk holds data when
   * Allocated, Cold or journaled; the rest reads as zeros (a hole).
   */
  blockStatus(offsetBytes: number, lengthBytes: number, maxExtents: number): Extent[] {
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const groups = this.statusGroups();
    const st = this.chunkState;
    const id = this.rec.id;
    const journal = this.cold !== null && this.cold.journal.hasVolume(id) ? this.cold.journal : null;
    // A journaled chunk is data where the counts may say none. The groups
    // holding one come from the journal's list when it is short (no longer
    // than one group, nor than the range); else a group the counts call
    // empty is looked at chunk by chunk, as a mixed one (budgeted): a request
    // costs its range, never the volume's whole journal (a TRIM of a cold
    // volume journals a record per chunk: 65,536 for 64 GiB of 1 MiB chunks
    // cost ~1 ms per request, however short: review-nbd-big-block-status-journal).
    let journaledGroups: Set<number> | null = null;
    let scanEmptyGroups = false;
    if (journal !== null) {
      const rangeChunks = Math.ceil(end / cs) - Math.floor(offsetBytes / cs);
      if (journal.dirtyChunkCount(id) <= Math.min(STATUS_GROUP_CHUNKS, rangeChunks)) {
        journaledGroups = new Set();
        for (const c of journal.dirtyChunks(id)) journaledGroups.add(c >> STATUS_GROUP_SHIFT);
      } else scanEmptyGroups = true;
    }
    const dataAt = (c: number): boolean => holdsData(st[c]!) || (journal !== null && journal.extents(id, c) !== undefined);
    const out: Extent[] = [];
    let budget = STATUS_CHUNK_BUDGET;
    for (let pos = offsetBytes; pos < end; ) {
      const c = Math.floor(pos / cs);
      const g = c >> STATUS_GROUP_SHIFT;
      const groupEnd = Math.min((g + 1) * STATUS_GROUP_CHUNKS, st.length);
      const n = groups[g]!;
      let runEnd: number; // chunk index the run of `data` ends at
      let data: boolean;
      if (n === groupEnd - g * STATUS_GROUP_CHUNKS || (n === 0 && !scanEmptyGroups && !journaledGroups?.has(g))) {
        runEnd = groupEnd;
        data = n !== 0;
      } else {
        // A mixed group: the run of chunks like c, within the group and the range.
        if (budget <= 0) break;
        const last = Math.min(groupEnd, Math.ceil(end / cs));
        data = dataAt(c);
        runEnd = c + 1;
        while (runEnd < last && dataAt(runEnd) === data) runEnd++;
        budget -= runEnd - c;
      }
      const pieceEnd = Math.min(end, runEnd * cs);
      const flags = data ? 0 : STATE_HOLE | STATE_ZERO;
      const prev = out[out.length - 1];
      if (prev && prev.flags === flags && prev.lengthBytes + (pieceEnd - pos) <= 0xffffffff) prev.lengthBytes += pieceEnd - pos;
      else {
        if (out.length >= maxExtents) break;
        out.push({ lengthBytes: pieceEnd - pos, flags });
      }
      pos = pieceEnd;
    }
    return out;
  }

  /**
   * Group commit: every write completed before the call is durable when the
   * promise resolves. Callers arriving while a sync runs share the next one.
   */
  flush(): Promise<void> {
    const bad = this.usable(false);
    if (bad) return Promise.reject(bad);
    return this.commit.run();
  }

  private syncOnce(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const metaDirty = this.metaDirty;
    this.metaDirty = false;
    // Every open file a mutation landed in since its last successful sync: a
    // write may have landed in any of them (hot <-> warm moves). A clean one
    // is skipped: everything that completed in it is durable already.
    const syncs: Promise<void>[] = [];
    for (const f of this.files) {
      // Read before the sync is issued: mutations completing from here on
      // may or may not be covered by it, so they leave the file dirty.
      const upto = f.mutations;
      if (upto === f.syncedMutations) continue;
      // Never retried on failure (syncFd): the kernel may have dropped the dirty pages already.
      syncs.push(
        this.syncFd(f).then(() => {
          f.syncedMutations = Math.max(f.syncedMutations, upto);
        }),
      );
    }
    return Promise.all(syncs).then(() => {
      // Every fdatasync succeeded, but one beside them (a chunk copy's, a
      // zeroing's) failed on a file they synced: the error went to that
      // caller only, and these may have synced without the dropped pages.
      if (this.failure) throw this.failure;
      const journal = this.cold && this.cold.journal.hasVolume(this.rec.id) ? this.cold.journal.sync() : null;
      return Promise.all([journal, metaDirty ? this.meta.durable() : null]).then(
        () => undefined,
        (err: Error) => {
          // As for fdatasync: never retried. metaDirty is spent, so the next
          // FLUSH would not even ask again for the entries that failed.
          this.failure ??= new VolumeFailed(`volume ${this.name}: making its chunk map or journal durable failed (${err.message}); volume taken offline`);
          throw this.failure;
        },
      );
    });
  }

  /**
   * Grows the volume and persists its record at the quiesce gate, like
   * setTier: both write the whole record, and one computed outside the gate
   * could land after the other's and undo it (a move starting during a
   * resize put back the old size, losing flushed writes past it at the next
   * start: test review-hot-warm-races).
   */
  async resize(newSizeBytes: number): Promise<VolumeRecord> {
    return this.quiesced(async () => {
      if (newSizeBytes < this.rec.sizeBytes) throw new InvalidArgument(`shrinking volume ${this.name} is not supported`);
      const next = { ...this.rec, sizeBytes: newSizeBytes };
      await this.meta.volumes.put(next.name, next);
      await this.meta.durable();
      this.grow(newSizeBytes);
      return this.rec;
    });
  }

  /** Grows the volume in memory (shrinking is refused: it would drop data). */
  grow(newSizeBytes: number): void {
    if (newSizeBytes < this.rec.sizeBytes) throw new InvalidArgument(`shrinking volume ${this.name} is not supported`);
    const chunks = Volume.chunkCount(newSizeBytes, this.rec.chunkSizeBytes);
    if (chunks > this.chunkState.length) {
      const next = new Uint8Array(chunks);
      next.set(this.chunkState);
      this.chunkState = next;
      const files = new Uint8Array(chunks);
      files.set(this.chunkFile);
      this.chunkFile = files;
      const writes = new Int32Array(chunks);
      writes.set(this.chunkWrites);
      this.chunkWrites = writes;
      if (this.dataPerGroup !== null) {
        const groups = statusGroupsFor(chunks);
        groups.set(this.dataPerGroup);
        this.dataPerGroup = groups;
      }
    }
    this.rec = { ...this.rec, sizeBytes: newSizeBytes };
  }

  /**
   * Nothing in flight (requests, chunk copies and zeroing, destages,
   * RELEASE's truncate or file removals, a tier switch) and nothing written
   * that is not durable (every file synced since its last mutation, the chunk
   * map committed durably: no change since the last FLUSH, and every write
   * of it committed, indexWritesPending): a close now waits for nothing and
   * loses nothing, and a later open sees what this one saw. The manager closes a volume
   * nothing holds only then (VolumeManager.closeIfUnheld). A file's first
   * mutation is its open (openOrCreate synced it just before).
   */
  quiet(): boolean {
    if (this.closed || this.ops > 0 || this.gate !== null || this.fileMutations > 0 || this.fileReads > 0 || this.metaDirty || this.indexWritesPending > 0 || this.preserveOnSwitch) return false;
    if (this.preparing.size > 0 || this.destaging.size > 0 || this.truncating !== null || this.unlinking.size > 0) return false;
    return this.files.every((f) => f.syncing.size === 0 && f.shrinkSync === undefined && (f.mutations === f.syncedMutations || f.mutations === 1));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Requests already past usable() may still have I/O queued on this fd:
    // closing under them would let a reused descriptor receive their bytes.
    await this.drainFileMutations();
    if (this.fileReads > 0) await new Promise<void>((r) => this.fileReadsDrained.push(r));
    await Promise.allSettled([...this.preparing.values(), ...this.destaging.values()]);
    // A RELEASE's ftruncate still in flight holds the descriptor number.
    while (this.truncating) await this.truncating;
    for (const f of this.files) await new Promise<void>((resolve) => fs.close(f.fd, () => resolve()));
  }
}

/**
 * Chunk-sized buffers reused by chunk copies (promote, hot <-> warm moves).
 * A fresh 1 MiB buffer is new memory that the kernel zeroes page by page when
 * the copy first touches it, and the GC then frees: on this CPU-bound 2-core
 * VM that was a memset per copied byte on top of the copies. Bound: at most
 * COPY_BUFFERS_KEPT buffers (of one size) stay allocated between copies, two
 * per copy of a default migration (DEFAULT_MIGRATION_CONCURRENCY 32) = 64 MiB
 * at 1 MiB chunks.
 */
const COPY_BUFFERS_KEPT = 64;
const copyBuffers: Buffer[] = [];

function takeCopyBuffer(lengthBytes: number): Buffer {
  const b = copyBuffers.pop();
  return b !== undefined && b.length === lengthBytes ? b : Buffer.allocUnsafeSlow(lengthBytes);
}

function giveCopyBuffer(b: Buffer): void {
  if (copyBuffers.length >= COPY_BUFFERS_KEPT) return;
  if (copyBuffers.length > 0 && copyBuffers[0]!.length !== b.length) copyBuffers.length = 0; // another chunk size now
  copyBuffers.push(b);
}

/** A migrated copy did not read back equal to its source (nothing was switched). */
export class VerifyFailed extends Error {
  override name = 'VerifyFailed';
}

/** FAST_ZERO could not be honoured without writing data. */
export class SlowZero extends Error {
  override name = 'SlowZero';
}

/** Same stripe, same shard places (an index entry read back from LMDB is a copy, not the object held in memory). */
function sameStripe(a: StripeRef | undefined, b: StripeRef): boolean {
  if (a === undefined || a.ownerId !== b.ownerId || a.chunkIndex !== b.chunkIndex || a.generation !== b.generation || a.shards.length !== b.shards.length) return false;
  return a.shards.every((s, i) => {
    const t = b.shards[i]!;
    return s.pool === t.pool && s.segment === t.segment && s.offsetBytes === t.offsetBytes;
  });
}

/** Highest stripe generation an index entry records (its stripe's, or the one kept after a promote). */
function lastGenerationOf(entry: ChunkEntry | undefined): number {
  return Math.max(entry?.lastGeneration ?? 0, entry?.stripe?.generation ?? 0, entry?.preserved?.generation ?? 0);
}

/** 16-byte owner id written into every shard record of a volume's stripes. */
export function volumeOwnerId(volumeId: number): Buffer {
  const id = Buffer.alloc(16);
  id.write('CSVOLUME', 0, 'latin1');
  id.writeUInt32BE(volumeId, 12);
  return id;
}

function isZero(buf: Buffer): boolean {
  // Compare 8 bytes at a time; chunks are multiples of 4 KiB.
  const words = new BigUint64Array(buf.buffer, buf.byteOffset, buf.length >>> 3);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = words.length << 3; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Overlays journal extents (seq order) onto dst, which holds [start, end) at `at`. */
function applyExtents(extents: readonly { type: RecordType; offsetBytes: number; lengthBytes: number; data: Buffer | null }[], start: number, end: number, dst: Buffer, at: number): void {
  for (const e of extents) {
    const s = Math.max(start, e.offsetBytes);
    const t = Math.min(end, e.offsetBytes + e.lengthBytes);
    if (s >= t) continue;
    if (e.type === RecordType.Write) e.data!.copy(dst, at + s - start, s - e.offsetBytes, t - e.offsetBytes);
    else dst.fill(0, at + s - start, at + t - start);
  }
}

/** Throws PoolOffline when f's file has no name any more (its pool directory was removed). */
function assertLinked(f: VolumeFile): void {
  if (fs.fstatSync(f.fd).nlink === 0) throw new PoolOffline(`pool ${f.pool.name}: the volume file is gone (pool directory removed?)`);
}

/** Whether [positionBytes, +lengthBytes) of the file holds any non-zero byte. */
async function regionHoldsData(fd: number, positionBytes: number, lengthBytes: number): Promise<boolean> {
  // A range with no data extent (a hole, or past end of file) reads as zeros:
  // answered by the file system's extent map instead of reading 1 MiB (first
  // 4 KiB write to a fresh chunk after a restart: 0.23 vs 0.70 ms, in process,
  // bench/stale-chunk-first-write.ts).
  // Any extent in the range, even of zeros, or an lseek error: read it.
  const dataAtBytes = await firstDataOffset(fd, positionBytes).catch(() => positionBytes);
  if (dataAtBytes < 0 || dataAtBytes >= positionBytes + lengthBytes) return false;
  const buf = takeCopyBuffer(lengthBytes);
  try {
    await readAll(fd, buf, 0, lengthBytes, positionBytes);
    // memcmp against the shared zeros: a BigInt word loop (isZero) cost ~1 ms per MiB here.
    return !buf.equals(zeros(lengthBytes));
  } finally {
    giveCopyBuffer(buf);
  }
}

function readAll(fd: number, dst: Buffer, at: number, lengthBytes: number, positionBytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.read(fd, dst, at, lengthBytes, positionBytes, (err, n) => {
      if (err) return reject(err);
      if (n < lengthBytes) dst.fill(0, at + n, at + lengthBytes);
      resolve();
    });
  });
}

/** Writes buf at positionBytes of the file; counted in its `mutations` when it completes, even failed. */
function writeAll(file: VolumeFile, buf: Buffer, positionBytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    writeFully(file.fd, buf, positionBytes, (err) => {
      file.mutations++;
      if (err) return reject(err);
      resolve();
    });
  });
}

/**
 * Writes all of buf at positionBytes, retrying a short write for the rest.
 * A write that reaches a full disk lands in part and returns its count; only
 * the next one fails, with ENOSPC, which is what the client must be told
 * (NBD_ENOSPC, not EIO).
 */
function writeFully(fd: number, buf: Buffer, positionBytes: number, cb: (err: Error | null) => void, doneBytes = 0): void {
  fs.write(fd, buf, doneBytes, buf.length - doneBytes, positionBytes + doneBytes, (err, n) => {
    if (err) return cb(err);
    if (doneBytes + n === buf.length) return cb(null);
    if (n === 0) return cb(new Error(`write returned 0 of ${buf.length - doneBytes} bytes`));
    writeFully(fd, buf, positionBytes, cb, doneBytes + n);
  });
}
