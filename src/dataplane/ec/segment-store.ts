// Per-pool append-only segment files holding shard records (shard-record.ts),
// with group commit, verified reads, a crash-tolerant scan for fsck, and
// segment compaction. One SegmentStore per cold pool directory.
//
// On-disk: <poolDir>/seg-<12-digit number>.cseg, records back to back, no
// segment header (every record describes itself). The highest-numbered
// segment is the head that appends go to; it rolls when the next record would
// take it past segmentSizeBytes. A segment whose tail is not a clean chain of
// records after a crash is never appended to again (nor truncated: the bad
// tail could hide bit-rot before durable records): open() starts a new head.
// A write that found the disk full (ENOSPC/EDQUOT) fails the store as any
// write failure does, until the next append or sync finds room: then the head
// is sealed as it is and a new one started, as open() after a restart would
// (reopenAfterNoSpace); a failed fdatasync stays failed until a new store.
// One SegmentStore per directory at a time (not locked here: the caller owns
// its pools); two would interleave records.
import { open as fsOpen, readdir, stat, statfs, unlink, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { PoolOffline as StoragePoolOffline, StorageError, isNoSpaceErrno } from "../errors.js";
import { startWriteback } from "./codec.js";
import {
  CorruptShard,
  decodeShardHeader,
  decodeShardRecord,
  recordLengthBytes,
  SHARD_HEADER_BYTES,
  type DecodedShardRecord,
  type ShardHeader,
} from "./shard-record.js";

export const DEFAULT_SEGMENT_SIZE_BYTES = 256 * 1024 * 1024;
/** Bytes accepted by append() but not yet durable; beyond it append() waits (backpressure). */
export const DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024;
/**
 * Read handles kept open (one per segment, least recently used closed first).
 * Opening and closing a file for every shard read cost a visible share of
 * migration and rebuild time; 64 segments of 256 MiB cover 16 GiB per pool.
 */
export const MAX_CACHED_READ_HANDLES = 64;
/** Buffers per writev call; libuv clamps at IOV_MAX (1024) anyway. */
const MAX_IOV = 512;
const SEGMENT_NAME = /^seg-(\d{12})\.cseg$/;

export interface SegmentLocation {
  readonly segment: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export interface Relocation {
  readonly from: SegmentLocation;
  readonly to: SegmentLocation;
}

export interface SegmentInfo {
  readonly segment: number;
  readonly sizeBytes: number;
  /** Bytes passed to markFree() since open() (not persisted: re-mark after a restart, or compact by predicate). */
  readonly freedBytes: number;
  /** The head segment receives appends and cannot be compacted or removed. */
  readonly head: boolean;
}

/** Decides during compaction whether a record is still referenced (e.g. the index's stripe for header.ownerId/chunkIndex points here). */
export type LivenessCheck = (location: SegmentLocation, header: ShardHeader) => boolean | Promise<boolean>;

export interface CompactionResult {
  /** Live records now also at `to`; flip the index, then removeSegment(). */
  readonly relocations: Relocation[];
  /**
   * Records that fail verification and so were not copied (for a predicate,
   * every corrupt record, whose header cannot be trusted to ask). If the index
   * points at one, rebuild that shard from its stripe before removeSegment().
   */
  readonly corrupt: SegmentLocation[];
}

export type ScanEntry =
  | { readonly kind: "record"; readonly location: SegmentLocation; readonly header: ShardHeader }
  /** A record whose header parses but whose bytes fail verification; skipped by its declared length. */
  | { readonly kind: "corrupt"; readonly location: SegmentLocation; readonly reason: string }
  /** Bytes from offsetBytes to the segment's end that are not a whole record (torn write); the scan moves to the next segment. */
  | { readonly kind: "torn-tail"; readonly segment: number; readonly offsetBytes: number; readonly lengthBytes: number; readonly reason: string };

export interface SegmentStoreStats {
  /** fdatasync calls that made appends durable (group commits). */
  readonly commits: number;
  readonly recordsAppended: number;
  readonly bytesAppended: number;
  /** Segment read handles held open now (at most MAX_CACHED_READ_HANDLES). */
  readonly readHandles: number;
  /** Times a store failed by a full disk started a new head once there was room (reopenAfterNoSpace). */
  readonly reopensAfterNoSpace: number;
}

export interface SegmentStoreOptions {
  /**
   * For fsck and tools next to a running daemon: never creates, writes or
   * removes a file (a writable open may start a new head segment), so it
   * cannot collide with the daemon's appends. append/compact/remove throw.
   */
  readOnly?: boolean;
  segmentSizeBytes?: number;
  maxPendingBytes?: number;
  /**
   * The caller has just created `poolDir` (mkdir). No longer needed: the
   * first commit after every writable open syncs `poolDir` and its parent
   * (a directory or head created by a process that died before its first
   * commit looks like any existing one).
   */
  createdDir?: boolean;
}

/** The pool directory is missing, not a directory, or failed I/O; the pool must be treated as offline. Is-a errors.ts PoolOffline. */
export class PoolOffline extends StoragePoolOffline {
  override name = "PoolOffline";
  constructor(
    readonly poolDir: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`pool ${poolDir} is offline: ${reason}`, options);
  }
}

/** A location that names no segment in this pool (removed, or never existed). */
export class ShardNotFound extends StorageError {
  override name = "ShardNotFound";
}

/** Caller bug: bad record bytes, bad location, or an operation on the head / a closed store. */
export class SegmentStoreMisuse extends Error {
  override name = "SegmentStoreMisuse";
}

/** A cached read handle; closed once retired (evicted, segment removed, store closed) and unused. */
interface ReadHandle {
  readonly fh: Promise<FileHandle>;
  users: number;
  retired: boolean;
}

interface PendingAppend {
  readonly records: Buffer[];
  readonly bytes: number;
  /** Resolve only once durable (fdatasync); false: once written (see append's `durable`). */
  readonly sync: boolean;
  readonly resolve: (locations: SegmentLocation[]) => void;
  readonly reject: (error: unknown) => void;
}

const OFFLINE_CODES = new Set(["ENOENT", "ENOTDIR", "EIO", "ENXIO", "ENODEV", "EROFS", "ENOSPC", "EACCES", "EPERM", "ESTALE"]);

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Errors of a write (writev) or a segment creation that found the disk full:
 * nothing of the failed batch was acknowledged and the page cache holds what
 * was written, so the store may start a new head once there is room (see
 * reopenAfterNoSpace). Not an fdatasync's: after one fails the state of the
 * written pages is unknown and the store stays failed until it is reopened.
 */
const noSpaceWrites = new WeakSet<object>();
function markIfNoSpace(error: unknown): void {
  if (isNoSpaceErrno(error) && typeof error === "object" && error !== null) {
    noSpaceWrites.add(error);
    const e = error as NodeJS.ErrnoException;
    // Said as such in the store's failure (/readyz, the log) and seen by the front ends' ENOSPC mapping.
    if (e.code !== "ENOSPC" && e.code !== "EDQUOT") {
      e.code = "EDQUOT";
      e.message = `EDQUOT: disk quota exceeded${e.syscall ? `, ${e.syscall}` : ""}`;
    }
  }
}

function segmentFileName(segment: number): string {
  return `seg-${String(segment).padStart(12, "0")}.cseg`;
}

/** Reads into `into` (a caller's reusable buffer) when it is big enough, else into a new buffer. */
async function readExactlyAt(fh: FileHandle, length: number, position: number, into?: Buffer): Promise<Buffer> {
  const buffer = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) return buffer.subarray(0, done);
    done += bytesRead;
  }
  return buffer;
}

async function writeAllAt(fh: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let index = 0;
  let skip = 0; // bytes of buffers[index] already written
  while (index < buffers.length) {
    const first = buffers[index]!;
    const iov = [skip === 0 ? first : first.subarray(skip), ...buffers.slice(index + 1, index + MAX_IOV)];
    let { bytesWritten } = await fh.writev(iov, position);
    position += bytesWritten;
    // Advance over fully written buffers; a partial write resumes mid-buffer.
    while (bytesWritten > 0) {
      const remaining = buffers[index]!.length - skip;
      if (bytesWritten >= remaining) {
        bytesWritten -= remaining;
        index++;
        skip = 0;
      } else {
        skip += bytesWritten;
        bytesWritten = 0;
      }
    }
  }
}

/**
 * The bytes of a pool's segment files (`segmentsDir` = the pool's segments/),
 * one stat per file, 64 at a time; 0 when the directory is not there (a file
 * gone between the listing and its stat counts 0). A cold
 * pool's usedBytes: set from this by the daemon at the cold tier's start and
 * by offline `pools list` (compaction passes set it from an open store's
 * segments(), the same sizes).
 */
export async function segmentFilesBytes(segmentsDir: string): Promise<number> {
  let names: string[];
  try {
    names = (await readdir(segmentsDir)).filter((n) => SEGMENT_NAME.test(n));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  let total = 0;
  for (let i = 0; i < names.length; i += 64) {
    const sizes = await Promise.all(names.slice(i, i + 64).map((n) => stat(join(segmentsDir, n)).then((st) => st.size, (error: NodeJS.ErrnoException) => (error.code === "ENOENT" ? 0 : Promise.reject(error)))));
    for (const size of sizes) total += size;
  }
  return total;
}

/**
 * Walk record headers from the start to find where the clean chain of records
 * ends. CRCs are not checked: a record with a valid header and bad payload is
 * kept (scan and read report it), so nothing durable is ever cut off.
 */
async function chainEndBytes(fh: FileHandle, sizeBytes: number): Promise<number> {
  let pos = 0;
  while (pos + SHARD_HEADER_BYTES <= sizeBytes) {
    const headerBytes = await readExactlyAt(fh, SHARD_HEADER_BYTES, pos);
    let header: ShardHeader;
    try {
      header = decodeShardHeader(headerBytes);
    } catch {
      return pos;
    }
    const length = recordLengthBytes(header);
    if (pos + length > sizeBytes) return pos;
    pos += length;
  }
  return pos;
}

export class SegmentStore {
  private readonly sizes: Map<number, number>;
  private readonly freedBytes = new Map<number, number>();
  /** undefined for a read-only store. */
  private headFh: FileHandle | undefined;
  /** -1 for a read-only store: no segment is being appended to. */
  private head: number;
  /** Bytes of the head that are durable (fdatasync returned); scan never reads past it. */
  private headDurableBytes: number;
  /** Bytes of the head written (the next append's offset); above headDurableBytes while unsynced appends wait for sync(). */
  private headWrittenBytes: number;
  private pending: PendingAppend[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  private drainWaiters: Array<() => void> = [];
  private failure: Error | undefined;
  /** The failure was a full disk on a write (noSpaceWrites): the next append or sync tries reopenAfterNoSpace. */
  private failureIsNoSpace = false;
  /** The reopen in progress; the appends and syncs that arrive meanwhile wait for it. */
  private reopening: Promise<void> | undefined;
  private closed = false;
  private commits = 0;
  private reopens = 0;
  private recordsAppended = 0;
  private bytesAppended = 0;
  /** Directories whose new entries (a created head segment, a created pool directory) the next commit must make durable. */
  private readonly namesToSync = new Set<string>();
  /** Writebacks started on the head (unsynced appends); awaited before its handle closes. Bounded by unsynced groups in flight. */
  private readonly writebacks = new Set<Promise<void>>();
  /** Insertion order is recency (a hit re-inserts); bounded by MAX_CACHED_READ_HANDLES. */
  private readonly readHandles = new Map<number, ReadHandle>();

  private constructor(
    readonly poolDir: string,
    private readonly segmentSizeBytes: number,
    private readonly maxPendingBytes: number,
    head: number,
    headFh: FileHandle | undefined,
    headSizeBytes: number,
    sizes: Map<number, number>,
  ) {
    this.head = head;
    this.headFh = headFh;
    this.headDurableBytes = headSizeBytes;
    this.headWrittenBytes = headSizeBytes;
    this.sizes = sizes;
    if (headFh !== undefined) this.sizes.set(head, headSizeBytes);
  }

  /** Open (or initialise) the segment store of one pool. PoolOffline if the directory is unusable. */
  static async open(poolDir: string, options: SegmentStoreOptions = {}): Promise<SegmentStore> {
    const segmentSizeBytes = options.segmentSizeBytes ?? DEFAULT_SEGMENT_SIZE_BYTES;
    const maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    if (!Number.isSafeInteger(segmentSizeBytes) || segmentSizeBytes < SHARD_HEADER_BYTES) {
      throw new SegmentStoreMisuse(`segmentSizeBytes must be an integer >= ${SHARD_HEADER_BYTES}, got ${segmentSizeBytes}`);
    }
    try {
      const info = await stat(poolDir);
      if (!info.isDirectory()) throw new PoolOffline(poolDir, "not a directory");
      const sizes = new Map<number, number>();
      for (const name of await readdir(poolDir)) {
        const match = SEGMENT_NAME.exec(name);
        if (match === null) continue;
        sizes.set(Number(match[1]), (await stat(join(poolDir, name))).size);
      }
      const numbers = [...sizes.keys()].sort((a, b) => a - b);
      const last = numbers.at(-1);
      if (options.readOnly === true) {
        return new SegmentStore(poolDir, segmentSizeBytes, maxPendingBytes, -1, undefined, 0, sizes);
      }
      if (last !== undefined) {
        const fh = await fsOpen(join(poolDir, segmentFileName(last)), "r+");
        try {
          // The last segment was the head of an earlier process, which may have died
          // with unsynced appends (a pool rebuild's) in it, or before the commit that
          // would have synced its name or segments/'s. From here on its bytes count as
          // durable (contains(), scan): a stale index reference to a replaced pool can
          // name a record there without any commit of ours, so make them durable now.
          await Promise.all([fh.datasync(), SegmentStore.syncDir(poolDir), SegmentStore.syncDir(dirname(poolDir))]);
          const sizeBytes = (await fh.stat()).size;
          if ((await chainEndBytes(fh, sizeBytes)) === sizeBytes && sizeBytes < segmentSizeBytes) {
            return new SegmentStore(poolDir, segmentSizeBytes, maxPendingBytes, last, fh, sizeBytes, sizes);
          }
        } catch (error) {
          await fh.close();
          throw error;
        }
        await fh.close();
      }
      const head = (last ?? 0) + 1;
      const fh = await SegmentStore.createSegment(poolDir, head);
      const store = new SegmentStore(poolDir, segmentSizeBytes, maxPendingBytes, head, fh, 0, sizes);
      store.namesToSync.add(poolDir);
      // Always, not only with createdDir: segments/ may have been created by a
      // process that died before its first commit (mkdir then reports nothing new).
      store.namesToSync.add(dirname(poolDir));
      // And the pool directory's own name: at start-up putPool made it durable
      // (dir-sync.ts ensureDurableDir), but a pool directory an operator
      // replaced while the daemon runs (before `couchestor rebuild`) was
      // never synced into its parent, and a rebuild's shards land in it.
      store.namesToSync.add(dirname(dirname(poolDir)));
      return store;
    } catch (error) {
      if (error instanceof PoolOffline) throw error;
      const code = errorCode(error);
      if (code !== undefined && OFFLINE_CODES.has(code)) {
        throw new PoolOffline(poolDir, `${code} while opening`, { cause: error });
      }
      throw error;
    }
  }

  /**
   * The new name must survive a crash before any record in it is
   * acknowledged: the caller adds poolDir to namesToSync, and the next commit
   * syncs it beside its fdatasync (not here: a replaced pool's first store
   * open is on a rebuild's critical path, and nothing in the file counts
   * before that commit).
   */
  private static async createSegment(poolDir: string, segment: number): Promise<FileHandle> {
    return fsOpen(join(poolDir, segmentFileName(segment)), "wx+");
  }

  /**
   * By path, not a held fd (see src/dataplane/dir-sync.ts): after a pool
   * directory is replaced a held fd would sync the removed directory for
   * good. A store whose directory was replaced is not reused: StripeStore
   * compares the pool directory's inode on every use and opens a new store,
   * and a rebuild checks each window's identity before its flips.
   */
  private static async syncDir(poolDir: string): Promise<void> {
    const dir = await fsOpen(poolDir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /**
   * Append whole shard records (encodeShardRecord output). Resolves, in input
   * order, with each record's location once all of them are durable.
   * Concurrent calls share one writev + fdatasync per batch.
   *
   * `durable: false` (a pool rebuild's bulk writes): resolves once the
   * records are written, NOT durable; the caller must not reference them
   * (flip an index) before a later sync() resolved. A durable append or a
   * segment roll in between makes them durable too. After a crash such
   * records may be partly on disk: unreferenced, so dead space, and a torn
   * tail ends the segment cleanly (open() starts a new head).
   */
  async append(records: Buffer[], opts: { durable?: boolean } = {}): Promise<SegmentLocation[]> {
    if (this.failureIsNoSpace) await this.reopenIfRoom(records.reduce((sum, r) => sum + r.length, 0));
    this.assertUsable();
    let bytes = 0;
    for (const [i, record] of records.entries()) {
      let header: ShardHeader;
      try {
        header = decodeShardHeader(record);
      } catch (error) {
        throw new SegmentStoreMisuse(`records[${i}] is not a shard record: ${(error as Error).message}`);
      }
      if (recordLengthBytes(header) !== record.length) {
        throw new SegmentStoreMisuse(`records[${i}] is ${record.length} bytes, its header says ${recordLengthBytes(header)}`);
      }
      if (record.length > this.segmentSizeBytes) {
        throw new SegmentStoreMisuse(`records[${i}] (${record.length} bytes) exceeds the segment size ${this.segmentSizeBytes}`);
      }
      bytes += record.length;
    }
    if (records.length === 0) return [];
    while (this.pendingBytes > 0 && this.pendingBytes + bytes > this.maxPendingBytes) {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
      this.assertUsable();
    }
    const done = new Promise<SegmentLocation[]>((resolve, reject) => {
      this.pending.push({ records, bytes, sync: opts.durable !== false, resolve, reject });
    });
    this.pendingBytes += bytes;
    this.flushing ??= this.flushLoop();
    return done;
  }

  /** Resolves once every record appended (written) before the call is durable. */
  async sync(): Promise<void> {
    if (this.failureIsNoSpace) await this.reopenIfRoom(0);
    this.assertUsable();
    await new Promise<SegmentLocation[]>((resolve, reject) => {
      this.pending.push({ records: [], bytes: 0, sync: true, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  private assertUsable(): void {
    if (this.closed) throw new SegmentStoreMisuse(`segment store ${this.poolDir} is closed`);
    if (this.headFh === undefined) throw new SegmentStoreMisuse(`segment store ${this.poolDir} was opened read-only`);
    if (this.failure !== undefined) {
      const next = this.failureIsNoSpace ? "retried on the next write once the disk has room" : "reopen the store (restart the daemon)";
      throw new PoolOffline(this.poolDir, `an earlier write failed (${this.failure.message}); ${next}`, {
        cause: this.failure,
      });
    }
  }

  /**
   * The write failure that stops this store's appends, if any (latched: see
   * flushLoop). A full disk's (ENOSPC/EDQUOT on a write) clears itself at the
   * next append or sync once the disk has room; any other needs a new store.
   */
  get writeFailure(): { error: Error; clearsWithRoom: boolean } | undefined {
    return this.failure === undefined ? undefined : { error: this.failure, clearsWithRoom: this.failureIsNoSpace };
  }

  private async reopenIfRoom(needBytes: number): Promise<void> {
    this.reopening ??= this.reopenAfterNoSpace(needBytes).finally(() => {
      this.reopening = undefined;
    });
    await this.reopening;
  }

  /**
   * After a write found the disk full, what open() after a restart does, in
   * place: the head (holding whatever part of the failed batch landed, never
   * acknowledged nor referenced) is made durable as it is and sealed, and a
   * new segment becomes the head. Made durable because earlier unsynced
   * appends (a rebuild's, resolved as written) are in it and their caller's
   * sync() must cover them; if that fdatasync fails the store stays failed
   * for good. Tried only once the disk has room for the append that asks
   * (statfs), so a full disk does not get a new empty segment per attempt.
   * statfs does not see a quota (EDQUOT: it shows the disk's room), so a
   * head that holds nothing of the failed write (its size is what was
   * written before it) is not sealed but kept, as it is clean: a pool over
   * its quota gets no new segment per attempt either (before, one each).
   */
  private async reopenAfterNoSpace(needBytes: number): Promise<void> {
    while (this.flushing !== undefined) await this.flushing;
    if (!this.failureIsNoSpace || this.closed) return;
    try {
      const disk = await statfs(this.poolDir);
      if (disk.bavail * disk.bsize < Math.max(needBytes, disk.bsize)) return;
    } catch {
      return; // the directory's trouble is the next attempt's to report
    }
    const old = this.headFh!;
    let sealedBytes: number;
    try {
      await Promise.all(this.writebacks);
      // The names too (a segment a roll created for those appends): sync() on
      // the new, empty head returns at once, so this is what covers them.
      const dirs = [...this.namesToSync];
      await Promise.all([old.datasync(), ...dirs.map((dir) => SegmentStore.syncDir(dir))]);
      for (const dir of dirs) this.namesToSync.delete(dir);
      sealedBytes = (await old.stat()).size;
    } catch (error) {
      this.failure = error as Error;
      this.failureIsNoSpace = false;
      return;
    }
    if (sealedBytes === this.headWrittenBytes) {
      // Nothing of the failed write landed: the head ends with a whole record and stays the head.
      this.headDurableBytes = this.headWrittenBytes;
      this.sizes.set(this.head, sealedBytes);
      this.failure = undefined;
      this.failureIsNoSpace = false;
      this.reopens++;
      return;
    }
    let fh: FileHandle;
    try {
      fh = await SegmentStore.createSegment(this.poolDir, this.head + 1);
    } catch {
      return; // still no room for a new file: stays failed, tried again next time
    }
    if (this.closed) {
      await fh.close();
      return;
    }
    await old.close().catch(() => undefined);
    this.sizes.set(this.head, sealedBytes);
    this.head += 1;
    this.headFh = fh;
    this.headDurableBytes = 0;
    this.headWrittenBytes = 0;
    this.sizes.set(this.head, 0);
    this.namesToSync.add(this.poolDir);
    this.failure = undefined;
    this.failureIsNoSpace = false;
    this.reopens++;
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      try {
        const locations = await this.writeBatch(
          batch.flatMap((p) => p.records),
          batch.some((p) => p.sync),
        );
        let next = 0;
        for (const p of batch) {
          p.resolve(locations.slice(next, next + p.records.length));
          next += p.records.length;
        }
      } catch (error) {
        // After a failed write or fdatasync the file contents are unknown and a
        // retried fsync can falsely succeed, so the store refuses further writes
        // (a full disk's write until there is room: reopenAfterNoSpace).
        this.failure = error as Error;
        this.failureIsNoSpace = noSpaceWrites.has(error as object);
        const retry = this.failureIsNoSpace ? "; retried on the next write once the disk has room" : "";
        const offline = new PoolOffline(this.poolDir, `write failed: ${(error as Error).message}${retry}`, { cause: error });
        for (const p of this.pending) {
          this.pendingBytes -= p.bytes;
          p.reject(offline);
        }
        this.pending = [];
        for (const p of batch) p.reject(offline);
      }
      for (const p of batch) this.pendingBytes -= p.bytes;
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const wake of waiters) wake();
    }
    this.flushing = undefined;
  }

  /**
   * Write records at the head (rolling as needed) and return their
   * locations; with `sync`, fdatasync so that they and every earlier
   * unsynced write are durable. A segment is always synced before it rolls.
   */
  private async writeBatch(records: Buffer[], sync: boolean): Promise<SegmentLocation[]> {
    const locations: SegmentLocation[] = [];
    let group: Buffer[] = [];
    let groupStart = this.headWrittenBytes;
    let end = this.headWrittenBytes;
    for (const record of records) {
      if (end > 0 && end + record.length > this.segmentSizeBytes) {
        await this.commitGroup(group, groupStart, end, true);
        await this.roll();
        group = [];
        groupStart = end = 0;
      }
      locations.push({ segment: this.head, offsetBytes: end, lengthBytes: record.length });
      group.push(record);
      end += record.length;
    }
    await this.commitGroup(group, groupStart, end, sync);
    return locations;
  }

  private async commitGroup(group: Buffer[], startBytes: number, endBytes: number, sync: boolean): Promise<void> {
    const fh = this.headFh!; // assertUsable() admitted this write
    if (group.length > 0) {
      await writeAllAt(fh, group, startBytes).catch((error: unknown) => {
        markIfNoSpace(error);
        throw error;
      });
      this.headWrittenBytes = endBytes;
      this.recordsAppended += group.length;
      this.bytesAppended += endBytes - startBytes;
      if (!sync) {
        // Unsynced bulk writes (a pool rebuild): the disk starts on them now,
        // so the sync that follows waits for little instead of all of them.
        // A failed writeback is only a lost head start: sync() reports real errors.
        const started: Promise<void> = startWriteback(fh.fd, startBytes, endBytes - startBytes)
          .catch(() => undefined)
          .finally(() => this.writebacks.delete(started));
        this.writebacks.add(started);
      }
    }
    if (!sync || this.headDurableBytes === this.headWrittenBytes) return;
    const dirs = [...this.namesToSync];
    this.namesToSync.clear(); // a failure below fails the store: nothing is acknowledged after it
    await Promise.all([fh.datasync(), ...dirs.map((dir) => SegmentStore.syncDir(dir))]);
    this.commits++;
    this.headDurableBytes = this.headWrittenBytes;
    this.sizes.set(this.head, this.headDurableBytes);
  }

  private async roll(): Promise<void> {
    const next = this.head + 1;
    const fh = await SegmentStore.createSegment(this.poolDir, next).catch((error: unknown) => {
      markIfNoSpace(error);
      throw error;
    });
    this.namesToSync.add(this.poolDir);
    await Promise.all(this.writebacks); // they name the old head's descriptor
    await this.headFh!.close();
    this.headFh = fh;
    this.head = next;
    this.headDurableBytes = 0;
    this.headWrittenBytes = 0;
    this.sizes.set(next, 0);
  }

  private async openSegmentForRead(segment: number): Promise<FileHandle> {
    try {
      return await fsOpen(join(this.poolDir, segmentFileName(segment)), "r");
    } catch (error) {
      if (errorCode(error) === "ENOENT") {
        const dirExists = await stat(this.poolDir).then(
          (s) => s.isDirectory(),
          () => false,
        );
        if (!dirExists) throw new PoolOffline(this.poolDir, "directory missing", { cause: error });
        throw new ShardNotFound(`segment ${segment} does not exist in ${this.poolDir}`);
      }
      const code = errorCode(error);
      if (code !== undefined && OFFLINE_CODES.has(code)) {
        throw new PoolOffline(this.poolDir, `${code} opening segment ${segment}`, { cause: error });
      }
      throw error;
    }
  }

  /** A shared read handle on `segment`; pair with releaseRead(). */
  private async acquireRead(segment: number): Promise<ReadHandle> {
    let h = this.readHandles.get(segment);
    if (h !== undefined) {
      this.readHandles.delete(segment);
      this.readHandles.set(segment, h);
    } else {
      const handle: ReadHandle = { fh: this.openSegmentForRead(segment), users: 0, retired: false };
      h = handle;
      this.readHandles.set(segment, handle);
      // A failed open is not cached: the next read retries (and reports) it.
      handle.fh.catch(() => {
        handle.retired = true;
        if (this.readHandles.get(segment) === handle) this.readHandles.delete(segment);
      });
      for (const [oldest] of this.readHandles) {
        if (this.readHandles.size <= MAX_CACHED_READ_HANDLES) break;
        void this.retireRead(oldest);
      }
    }
    h.users++;
    try {
      await h.fh;
    } catch (error) {
      h.users--;
      throw error;
    }
    return h;
  }

  private releaseRead(h: ReadHandle): void {
    h.users--;
    if (h.retired && h.users === 0) void h.fh.then((fh) => fh.close()).catch(() => undefined);
  }

  /** Forget a segment's read handle; it closes now if idle (the promise), else when its last in-flight read ends. */
  private retireRead(segment: number): Promise<void> {
    const h = this.readHandles.get(segment);
    if (h === undefined) return Promise.resolve();
    this.readHandles.delete(segment);
    h.retired = true;
    return h.users === 0 ? h.fh.then((fh) => fh.close()).catch(() => undefined) : Promise.resolve();
  }

  /** The record's bytes as stored, unverified (read() verifies; readBackMatches() compares). */
  private async readRecordBytes(location: SegmentLocation, into?: Buffer): Promise<Buffer> {
    if (this.closed) throw new SegmentStoreMisuse(`segment store ${this.poolDir} is closed`);
    const { segment, offsetBytes, lengthBytes } = location;
    if (
      !Number.isSafeInteger(segment) ||
      !Number.isSafeInteger(offsetBytes) ||
      offsetBytes < 0 ||
      !Number.isSafeInteger(lengthBytes) ||
      lengthBytes < SHARD_HEADER_BYTES ||
      lengthBytes > this.segmentSizeBytes
    ) {
      throw new SegmentStoreMisuse(`bad location ${JSON.stringify(location)}`);
    }
    const h = await this.acquireRead(segment);
    let bytes: Buffer;
    try {
      bytes = await readExactlyAt(await h.fh, lengthBytes, offsetBytes, into);
    } catch (error) {
      const code = errorCode(error);
      if (code !== undefined && OFFLINE_CODES.has(code)) {
        throw new PoolOffline(this.poolDir, `${code} reading segment ${segment}`, { cause: error });
      }
      throw error;
    } finally {
      this.releaseRead(h);
    }
    if (bytes.length !== lengthBytes) {
      throw new CorruptShard(`segment ${segment} ends ${lengthBytes - bytes.length} bytes before the record at ${offsetBytes} does`);
    }
    return bytes;
  }

  /**
   * Read and verify one record. CorruptShard if its bytes fail verification.
   * With `into` (at least the record's length), the record is read there and
   * an uncompressed shard is a view of it: valid until the caller reuses
   * `into`. Saves allocating a buffer per read on scans of many stripes.
   */
  async read(location: SegmentLocation, into?: Buffer): Promise<DecodedShardRecord> {
    return decodeShardRecord(await this.readRecordBytes(location, into));
  }

  /**
   * The bytes of records stored back to back, `run` spanning them all
   * (within one segment), in one read: unverified, the caller checks each
   * record (decodeShardRecord). A scan of many stripes (scrub, rebuild) reads
   * a pool's records this way instead of one read per 256 KiB record. `into`:
   * as for read(). CorruptShard if the segment ends inside the run.
   */
  async readRun(run: SegmentLocation, into?: Buffer): Promise<Buffer> {
    return this.readRecordBytes(run, into);
  }

  /**
   * Keeps `segment`'s read descriptor open until release() (call it exactly
   * once): for native code that preads records itself (the pool-rebuild
   * kernel). Same errors as read(): ShardNotFound, PoolOffline.
   */
  async pinRead(segment: number): Promise<{ fd: number; release: () => void }> {
    if (this.closed) throw new SegmentStoreMisuse(`segment store ${this.poolDir} is closed`);
    if (!Number.isSafeInteger(segment)) throw new SegmentStoreMisuse(`bad segment ${segment}`);
    const h = await this.acquireRead(segment);
    let released = false;
    return {
      fd: (await h.fh).fd,
      release: () => {
        if (released) return;
        released = true;
        this.releaseRead(h);
      },
    };
  }

  /**
   * Whether `location` lies inside a segment this store has, up to its
   * durable end. Says nothing about what is there: a replaced pool reuses
   * segment numbers, so a caller that needs its record checks the header.
   */
  contains(location: SegmentLocation): boolean {
    const sizeBytes = this.sizes.get(location.segment);
    if (sizeBytes === undefined) return false;
    const end = location.segment === this.head ? this.headDurableBytes : sizeBytes;
    return location.offsetBytes >= 0 && location.offsetBytes + location.lengthBytes <= end;
  }

  /**
   * Whether `location` lies inside the bytes written to a segment this
   * store has, durable or not (contains() stops at the durable end). What
   * is there is not checked.
   */
  written(location: SegmentLocation): boolean {
    const sizeBytes = location.segment === this.head ? this.headWrittenBytes : this.sizes.get(location.segment);
    if (sizeBytes === undefined) return false;
    return location.offsetBytes >= 0 && location.offsetBytes + location.lengthBytes <= sizeBytes;
  }

  /**
   * Read back a record this store appended and say whether the stored bytes
   * are exactly `written` (so its CRC holds without recomputing it). Returns
   * the stored bytes when they match, undefined when they do not.
   */
  async readBackMatches(location: SegmentLocation, written: Buffer): Promise<Buffer | undefined> {
    if (location.lengthBytes !== written.length) return undefined;
    const stored = await this.readRecordBytes(location);
    return stored.equals(written) ? stored : undefined;
  }

  /**
   * Every record of every segment in segment then offset order, each verified
   * (CRC included), for rebuilding the index. Torn tails end a segment's scan
   * cleanly. Appends made after the scan starts may or may not be seen.
   */
  async *scan(): AsyncGenerator<ScanEntry> {
    for (const segment of [...this.sizes.keys()].sort((a, b) => a - b)) {
      yield* this.scanSegment(segment);
    }
  }

  private async *scanSegment(segment: number): AsyncGenerator<ScanEntry> {
    let fh: FileHandle;
    try {
      fh = await this.openSegmentForRead(segment);
    } catch (error) {
      if (error instanceof ShardNotFound) return; // removed by compaction since the listing
      throw error;
    }
    try {
      // The head is read only up to its durable end: bytes beyond are an in-flight batch.
      const sizeBytes = segment === this.head ? this.headDurableBytes : (await fh.stat()).size;
      let pos = 0;
      while (pos < sizeBytes) {
        const torn = (reason: string): ScanEntry => ({
          kind: "torn-tail",
          segment,
          offsetBytes: pos,
          lengthBytes: sizeBytes - pos,
          reason,
        });
        if (sizeBytes - pos < SHARD_HEADER_BYTES) {
          yield torn("partial header");
          return;
        }
        let header: ShardHeader;
        try {
          header = decodeShardHeader(await readExactlyAt(fh, SHARD_HEADER_BYTES, pos));
        } catch (error) {
          if (!(error instanceof CorruptShard)) throw error;
          yield torn(error.reason);
          return;
        }
        const lengthBytes = recordLengthBytes(header);
        if (pos + lengthBytes > sizeBytes) {
          yield torn(`record of ${lengthBytes} bytes runs ${pos + lengthBytes - sizeBytes} bytes past the end`);
          return;
        }
        const location = { segment, offsetBytes: pos, lengthBytes };
        try {
          const decoded = decodeShardRecord(await readExactlyAt(fh, lengthBytes, pos));
          yield { kind: "record", location, header: decoded.header };
        } catch (error) {
          if (!(error instanceof CorruptShard)) throw error;
          yield { kind: "corrupt", location, reason: error.reason };
        }
        pos += lengthBytes;
      }
    } finally {
      await fh.close();
    }
  }

  /**
   * The header of every record of a sealed segment, in order, unverified (a
   * 64-byte read per record, no payload): enough to say whose records a
   * segment holds. Stops at a torn tail. Segment compaction's last check.
   */
  async *headers(segment: number): AsyncGenerator<{ location: SegmentLocation; header: ShardHeader }> {
    if (!this.sizes.has(segment)) return;
    let fh: FileHandle;
    try {
      fh = await this.openSegmentForRead(segment);
    } catch (error) {
      if (error instanceof ShardNotFound) return;
      throw error;
    }
    try {
      const sizeBytes = segment === this.head ? this.headDurableBytes : (await fh.stat()).size;
      let pos = 0;
      while (pos + SHARD_HEADER_BYTES <= sizeBytes) {
        let header: ShardHeader;
        try {
          header = decodeShardHeader(await readExactlyAt(fh, SHARD_HEADER_BYTES, pos));
        } catch (error) {
          if (error instanceof CorruptShard) return;
          throw error;
        }
        const lengthBytes = recordLengthBytes(header);
        if (pos + lengthBytes > sizeBytes) return;
        yield { location: { segment, offsetBytes: pos, lengthBytes }, header };
        pos += lengthBytes;
      }
    } finally {
      await fh.close();
    }
  }

  /** Counters since open(), for metrics. */
  stats(): SegmentStoreStats {
    return { commits: this.commits, recordsAppended: this.recordsAppended, bytesAppended: this.bytesAppended, readHandles: this.readHandles.size, reopensAfterNoSpace: this.reopens };
  }

  /** Segments with their sizes, oldest first; the last one is the head. */
  segments(): SegmentInfo[] {
    return [...this.sizes.entries()]
      .sort(([a], [b]) => a - b)
      .map(([segment, sizeBytes]) => ({
        segment,
        sizeBytes,
        freedBytes: this.freedBytes.get(segment) ?? 0,
        head: segment === this.head,
      }));
  }

  /**
   * Note that the record at `location` is no longer referenced, to choose
   * segments worth compacting (segments()[i].freedBytes). Its bytes stay
   * readable until its segment is compacted and removed.
   */
  markFree(location: SegmentLocation): void {
    const sizeBytes = this.sizes.get(location.segment);
    if (sizeBytes === undefined) return; // segment already removed
    const freed = (this.freedBytes.get(location.segment) ?? 0) + location.lengthBytes;
    this.freedBytes.set(location.segment, Math.min(freed, sizeBytes));
  }

  /**
   * Copy the live records of a sealed segment to the head (verified on the
   * way, durable on return) and say where each went. `live` is either the
   * list of live locations in that segment or a LivenessCheck asked for every
   * valid record. The caller flips its index to the new locations and only
   * then calls removeSegment(): old bytes are freed only after the flip.
   */
  async compactSegment(segment: number, live: SegmentLocation[] | LivenessCheck): Promise<CompactionResult> {
    if (this.failureIsNoSpace) await this.reopenIfRoom(0); // a write like append's
    this.assertUsable();
    if (segment === this.head) throw new SegmentStoreMisuse(`segment ${segment} is the head; it cannot be compacted`);
    if (!this.sizes.has(segment)) throw new ShardNotFound(`segment ${segment} does not exist in ${this.poolDir}`);
    const relocations: Relocation[] = [];
    const corrupt: SegmentLocation[] = [];
    // Batches bounded by maxPendingBytes so compaction holds little memory.
    let batch: { from: SegmentLocation; record: Buffer }[] = [];
    let batchBytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const to = await this.append(batch.map((b) => b.record));
      batch.forEach((b, i) => relocations.push({ from: b.from, to: to[i]! }));
      batch = [];
      batchBytes = 0;
    };
    const copy = async (from: SegmentLocation) => {
      let record: Buffer;
      try {
        record = await this.readRecordBytes(from);
      } catch (error) {
        if (!(error instanceof CorruptShard)) throw error;
        corrupt.push(from); // the segment ends inside this record
        return;
      }
      try {
        decodeShardRecord(record); // never copy bad bytes as if they were good
      } catch (error) {
        if (!(error instanceof CorruptShard)) throw error;
        corrupt.push(from);
        return;
      }
      if (batchBytes > 0 && batchBytes + record.length > this.maxPendingBytes) await flush();
      batch.push({ from, record });
      batchBytes += record.length;
    };
    if (Array.isArray(live)) {
      for (const from of live) {
        if (from.segment !== segment) {
          throw new SegmentStoreMisuse(`live location ${JSON.stringify(from)} is not in segment ${segment}`);
        }
        await copy(from);
      }
    } else {
      for await (const entry of this.scanSegment(segment)) {
        if (entry.kind === "corrupt") corrupt.push(entry.location);
        else if (entry.kind === "record" && (await live(entry.location, entry.header))) await copy(entry.location);
      }
    }
    await flush();
    return { relocations, corrupt };
  }

  /** Delete a sealed segment (after the index no longer points into it). */
  async removeSegment(segment: number): Promise<void> {
    // Writes nothing to the head, so a store failed by a full disk still
    // takes it: compaction removing dead segments is how that disk gets room.
    if (!this.failureIsNoSpace) this.assertUsable();
    else if (this.closed) throw new SegmentStoreMisuse(`segment store ${this.poolDir} is closed`);
    if (segment === this.head) throw new SegmentStoreMisuse(`segment ${segment} is the head; it cannot be removed`);
    if (!this.sizes.has(segment)) throw new ShardNotFound(`segment ${segment} does not exist in ${this.poolDir}`);
    void this.retireRead(segment);
    await unlink(join(this.poolDir, segmentFileName(segment)));
    this.sizes.delete(segment);
    this.freedBytes.delete(segment);
    await SegmentStore.syncDir(this.poolDir);
  }

  /** Wait for in-flight appends, then release the head file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true; // new appends are refused; queued ones still complete
    while (this.flushing !== undefined) await this.flushing;
    await this.reopening?.catch(() => undefined); // it may be swapping the head
    await Promise.all([...this.readHandles.keys()].map((segment) => this.retireRead(segment)));
    await Promise.all(this.writebacks);
    await this.headFh?.close();
  }
}
