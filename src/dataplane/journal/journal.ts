// The write-ahead journal for cold volumes: writes are appended to journal
// files on the hot pool and acknowledged; FLUSH/FUA share one fdatasync
// (group commit). Reads overlay journal extents (newest last) on the stripe
// until the destager has merged them into a new stripe generation.
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { NoSpace, StorageError, VolumeFailed } from '../errors.js';
import { log } from '../../log.js';
import { GroupCommit } from '../group-commit.js';
import { ensureDurableDir, syncDirSync, syncNewEntry } from '../dir-sync.js';

export const JOURNAL_MAGIC = 0x4e524a43; // "CJRN" little-endian
const VERSION = 1;
export const JOURNAL_HEADER_BYTES = 40;
const CRC_OFFSET = 32;
export const DEFAULT_JOURNAL_FILE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_JOURNAL_CAPACITY_BYTES = 256 * 1024 * 1024;
/** How long a write waits for journal space before failing with ENOSPC. */
export const JOURNAL_FULL_TIMEOUT_MS = 30_000;

export const enum RecordType {
  Write = 1,
  Zero = 2,
}

/** One journaled extent, kept in memory until destaged. */
export interface JournalExtent {
  seq: number;
  type: RecordType;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
  /** Payload of a Write (null for Zero). */
  data: Buffer | null;
  fileNo: number;
  recordBytes: number;
}

interface JournalFile {
  no: number;
  fd: number;
  tailBytes: number;
  /** Bytes of records not yet destaged. */
  liveBytes: number;
  dirty: boolean;
  /**
   * Whether the file's directory entry is known durable. fdatasync does not
   * cover it: a file created since the last sync (at start, at a rotation)
   * needs its directory synced before a FLUSH counts its records durable.
   */
  named: boolean;
}

const FILE_RE = /^journal-(\d{10})\.log$/;

export class Journal {
  private readonly files = new Map<number, JournalFile>();
  private head!: JournalFile;
  private nextSeq = 1;
  private liveBytes = 0;
  /** volumeId -> chunkIndex -> extents in seq order. */
  private readonly index = new Map<number, Map<number, JournalExtent[]>>();
  private readonly pendingWrites = new Set<Promise<void>>();
  private readonly commit = new GroupCommit(() => this.syncOnce());
  private failure: Error | null = null;
  private spaceWaiters: (() => void)[] = [];
  /** Why destaging last failed (shown in the ENOSPC message of a full journal). */
  stalledReason: string | null = null;
  /** Called when live bytes cross the destage threshold. */
  onPressure: (() => void) | null = null;

  private constructor(
    readonly dir: string,
    readonly chunkSizeBytes: number,
    readonly fileBytes: number,
    readonly capacityBytes: number,
  ) {}

  /**
   * Opens the journal and replays it. `destagedSeq(volumeId, chunk)` tells
   * which records are already merged into a stripe and must not be replayed.
   */
  static open(opts: {
    dir: string;
    chunkSizeBytes: number;
    fileBytes?: number;
    capacityBytes?: number;
    destagedSeq: (volumeId: number, chunkIndex: number) => number;
    volumeExists: (volumeId: number) => boolean;
    /**
     * The highest destagedSeq in the index. New records must be numbered
     * above it: once every journal file is destaged and removed, the files
     * alone no longer remember how far the numbering went, and a record
     * numbered at or below its chunk's destagedSeq would be skipped by the
     * next replay (a flushed write lost after a crash).
     */
    highestDestagedSeq?: number;
  }): Journal {
    // The directory's own name: syncNewEntry on each journal file covers
    // the file's name in it, not the directory's in the pool.
    ensureDurableDir(opts.dir);
    const j = new Journal(opts.dir, opts.chunkSizeBytes, opts.fileBytes ?? DEFAULT_JOURNAL_FILE_BYTES, opts.capacityBytes ?? DEFAULT_JOURNAL_CAPACITY_BYTES);
    const nos = fs
      .readdirSync(opts.dir)
      .map((n) => FILE_RE.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    j.nextSeq = Math.max(j.nextSeq, (opts.highestDestagedSeq ?? 0) + 1);
    let replayed = 0;
    // Torn tails are cut only once every file has been scanned: a refusal
    // (mid-file damage in any file) must leave every file as it found it.
    const tornTails: { file: string; fd: number; offsetBytes: number; lengthBytes: number }[] = [];
    for (const no of nos) {
      const file = path.join(opts.dir, fileName(no));
      const bytes = fs.readFileSync(file);
      const scan = scanJournalBytes(bytes);
      if (scan.damaged.length > 0) {
        for (const f of j.files.values()) fs.closeSync(f.fd);
        j.files.clear();
        throw JournalCorrupt.of(file, scan);
      }
      const fd = fs.openSync(file, 'r+');
      // named: the head created below shares the directory, and its first
      // sync persists every entry in it, these included.
      const f: JournalFile = { no, fd, tailBytes: scan.endBytes, liveBytes: 0, dirty: false, named: true };
      j.files.set(no, f);
      for (const { rec } of scan.records) {
        j.nextSeq = Math.max(j.nextSeq, rec.seq + 1);
        const ext: JournalExtent = { ...rec, fileNo: no };
        if (opts.volumeExists(rec.volumeId) && rec.seq > opts.destagedSeq(rec.volumeId, Math.floor(rec.offsetBytes / opts.chunkSizeBytes))) {
          j.insert(ext);
          f.liveBytes += ext.recordBytes;
          j.liveBytes += ext.recordBytes;
          replayed++;
        }
      }
      if (scan.endBytes < bytes.length) tornTails.push({ file, fd, offsetBytes: scan.endBytes, lengthBytes: bytes.length - scan.endBytes });
    }
    for (const t of tornTails) {
      // No intact record after it (scanJournalBytes looked): the last
      // appends, cut by a crash before any FLUSH covered them.
      log.warn('journal: dropping torn tail', { file: t.file, offsetBytes: t.offsetBytes, lengthBytes: t.lengthBytes });
      fs.ftruncateSync(t.fd, t.offsetBytes);
    }
    // Always start a fresh head file: appends never go after a repaired tail.
    const headNo = (nos.length ? nos[nos.length - 1]! : 0) + 1;
    j.head = j.createFile(headNo);
    for (const f of [...j.files.values()]) j.maybeRemove(f);
    if (replayed > 0) log.info('journal: replayed records', { records: replayed, liveBytes: j.liveBytes });
    return j;
  }

  private createFile(no: number): JournalFile {
    const fd = fs.openSync(path.join(this.dir, fileName(no)), fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    const f: JournalFile = { no, fd, tailBytes: 0, liveBytes: 0, dirty: true, named: false };
    this.files.set(no, f);
    return f;
  }

  get bytesLive(): number {
    return this.liveBytes;
  }

  get failed(): Error | null {
    return this.failure;
  }

  /** Extents of one chunk (seq order), or undefined when it has none. */
  extents(volumeId: number, chunkIndex: number): readonly JournalExtent[] | undefined {
    return this.index.get(volumeId)?.get(chunkIndex);
  }

  /** Chunks of a volume with journaled data. */
  dirtyChunks(volumeId: number): number[] {
    return [...(this.index.get(volumeId)?.keys() ?? [])];
  }

  dirtyVolumes(): number[] {
    return [...this.index.keys()];
  }

  hasVolume(volumeId: number): boolean {
    return this.index.has(volumeId);
  }

  private insert(ext: JournalExtent): void {
    let chunks = this.index.get(ext.volumeId);
    if (!chunks) this.index.set(ext.volumeId, (chunks = new Map()));
    const c = Math.floor(ext.offsetBytes / this.chunkSizeBytes);
    const list = chunks.get(c);
    if (list) list.push(ext);
    else chunks.set(c, [ext]);
  }

  /**
   * Appends a record; resolves once written (not yet durable: call sync()).
   * Extents never cross a chunk boundary: callers split.
   */
  async append(type: RecordType, volumeId: number, offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void> {
    if (this.failure) throw this.failure;
    const recordBytes = JOURNAL_HEADER_BYTES + (data ? data.length : 0);
    if (recordBytes > this.capacityBytes) throw new NoSpace('record larger than the journal');
    const deadlineMs = Date.now() + JOURNAL_FULL_TIMEOUT_MS;
    while (this.liveBytes + recordBytes > this.capacityBytes) {
      this.onPressure?.();
      const leftMs = deadlineMs - Date.now();
      // Destaging may be impossible (too many cold pools lost): the client gets
      // ENOSPC after a bound instead of a write that never completes.
      if (leftMs <= 0) throw new NoSpace(`journal full (${this.liveBytes} of ${this.capacityBytes} bytes) and destaging is not freeing space${this.stalledReason ? `: ${this.stalledReason}` : ''}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, leftMs);
        this.spaceWaiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
      if (this.failure) throw this.failure;
    }
    if (this.head.tailBytes + recordBytes > this.fileBytes && this.head.tailBytes > 0) {
      const old = this.head;
      this.head = this.createFile(old.no + 1);
      this.maybeRemove(old);
    }
    // Held in memory until destaged, so the journal owns its own copy: the
    // caller's buffer (a recycled NBD payload, a slice of a socket buffer)
    // is free for reuse once the write is acknowledged.
    if (data) data = Buffer.from(data);
    const f = this.head;
    const seq = this.nextSeq++;
    const header = Buffer.alloc(JOURNAL_HEADER_BYTES);
    header.writeUInt32LE(JOURNAL_MAGIC, 0);
    header.writeUInt8(VERSION, 4);
    header.writeUInt8(type, 5);
    header.writeUInt32LE(volumeId, 8);
    header.writeUInt32LE(lengthBytes, 12);
    writeU64(header, seq, 16);
    writeU64(header, offsetBytes, 24);
    let crc = crc32c(header.subarray(0, CRC_OFFSET));
    if (data) crc = crc32c(data, crc);
    header.writeUInt32LE(crc, CRC_OFFSET);
    const pos = f.tailBytes;
    f.tailBytes += recordBytes;
    f.liveBytes += recordBytes;
    f.dirty = true;
    this.liveBytes += recordBytes;
    const ext: JournalExtent = { seq, type, volumeId, offsetBytes, lengthBytes, data, fileNo: f.no, recordBytes };
    // Visible to reads at once: the data is in memory, and a read racing
    // with an unacknowledged write may see either version.
    this.insert(ext);
    if (this.liveBytes > this.capacityBytes / 2) this.onPressure?.();
    const w = new Promise<void>((resolve, reject) => {
      const bufs = data ? [header, data] : [header];
      fs.writev(f.fd, bufs, pos, (err) => {
        if (err) {
          this.fail(err);
          return reject(this.failure);
        }
        resolve();
      });
    });
    this.pendingWrites.add(w);
    w.then(
      () => this.pendingWrites.delete(w),
      () => this.pendingWrites.delete(w),
    );
    return w;
  }

  private fail(err: Error): void {
    if (!this.failure) {
      this.failure = new VolumeFailed(`journal I/O failed (${err.message}); cold volumes are offline`);
      log.error('journal failed', { err: err.message });
    }
    for (const w of this.spaceWaiters.splice(0)) w();
  }

  /** Group commit: every append that resolved before the call is durable afterwards. */
  sync(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return this.commit.run();
  }

  private async syncOnce(): Promise<void> {
    // A sync queued behind one that failed: its callers' records may be in
    // pages the kernel dropped, and the error is reported only once.
    if (this.failure) throw this.failure;
    // Writes in flight and dirty flags are taken together: a record appended
    // after this point sets its file's flag again for the next sync; one
    // appended before is awaited here, so it lands before the fdatasync.
    // (Taking the flags after the wait cleared those of records appended
    // meanwhile whose writev had not landed: the next FLUSH then synced
    // nothing.)
    const inFlight = [...this.pendingWrites];
    const dirty = [...this.files.values()].filter((f) => f.dirty);
    for (const f of dirty) f.dirty = false;
    await Promise.all(inFlight);
    if (this.failure) throw this.failure;
    // A file removed meanwhile (every record in it destaged) is closed or
    // closing: nothing in it is needed any more.
    const live = dirty.filter((f) => this.files.get(f.no) === f);
    await Promise.all([
      ...live.map(
        (f) =>
          new Promise<void>((resolve, reject) =>
            fs.fdatasync(f.fd, (err) => {
              if (err) {
                this.fail(err);
                return reject(this.failure);
              }
              resolve();
            }),
          ),
      ),
      ...live
        .filter((f) => !f.named)
        .map((f) =>
          syncNewEntry(path.join(this.dir, fileName(f.no)), f.fd).then(
            () => {
              f.named = true;
            },
            (err: Error) => {
              // Removed meanwhile (all its records destaged): its name is not needed.
              if (this.files.get(f.no) !== f) return;
              this.fail(err);
              throw this.failure;
            },
          ),
        ),
    ]);
  }

  /**
   * Drops the extents of a chunk with seq <= uptoSeq (they are in a stripe
   * now). A caller whose index entry superseding them is not yet durable
   * passes that durability as `removeAfter`: a journal file left with no
   * live record is deleted only once it has resolved (deleted first, a
   * power cut would keep the old entry and lose the records).
   */
  release(volumeId: number, chunkIndex: number, uptoSeq: number, removeAfter?: Promise<unknown>): void {
    // Its failure is the caller's to report; here it only keeps the files.
    removeAfter?.then(undefined, () => undefined);
    const chunks = this.index.get(volumeId);
    const list = chunks?.get(chunkIndex);
    if (!chunks || !list) return;
    const keep: JournalExtent[] = [];
    for (const e of list) {
      if (e.seq > uptoSeq) {
        keep.push(e);
        continue;
      }
      const f = this.files.get(e.fileNo);
      this.liveBytes -= e.recordBytes;
      if (f) {
        f.liveBytes -= e.recordBytes;
        if (removeAfter) removeAfter.then(() => this.maybeRemove(f), () => undefined);
        else this.maybeRemove(f);
      }
    }
    if (keep.length) chunks.set(chunkIndex, keep);
    else chunks.delete(chunkIndex);
    if (chunks.size === 0) this.index.delete(volumeId);
    const waiters = this.spaceWaiters.splice(0);
    for (const w of waiters) w();
  }

  /** Forgets every extent of a deleted volume. */
  dropVolume(volumeId: number): void {
    for (const c of this.dirtyChunks(volumeId)) this.release(volumeId, c, Number.MAX_SAFE_INTEGER);
  }

  private maybeRemove(f: JournalFile): void {
    // Not ours any more (removed already, or the journal closed): its descriptor number may be another file's.
    if (this.files.get(f.no) !== f) return;
    if (f === this.head || f.liveBytes > 0) return;
    this.files.delete(f.no);
    fs.close(f.fd, () => undefined);
    fs.rm(path.join(this.dir, fileName(f.no)), { force: true }, () => undefined);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.pendingWrites]);
    for (const f of this.files.values()) fs.closeSync(f.fd);
    this.files.clear();
  }
}

function fileName(no: number): string {
  return `journal-${String(no).padStart(10, '0')}.log`;
}

function writeU64(buf: Buffer, v: number, pos: number): void {
  buf.writeUInt32LE(v >>> 0, pos);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), pos + 4);
}

function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32LE(pos) + buf.readUInt32LE(pos + 4) * 0x100000000;
}

/** Parses and verifies one record; null when it is torn or corrupt. */
function parseRecord(bytes: Buffer, pos: number): Omit<JournalExtent, 'fileNo'> | null {
  if (bytes.readUInt32LE(pos) !== JOURNAL_MAGIC || bytes.readUInt8(pos + 4) !== VERSION) return null;
  const type = bytes.readUInt8(pos + 5) as RecordType;
  if (type !== RecordType.Write && type !== RecordType.Zero) return null;
  const lengthBytes = bytes.readUInt32LE(pos + 12);
  const payloadBytes = type === RecordType.Write ? lengthBytes : 0;
  if (pos + JOURNAL_HEADER_BYTES + payloadBytes > bytes.length) return null;
  let crc = crc32c(bytes.subarray(pos, pos + CRC_OFFSET));
  const data = payloadBytes ? Buffer.from(bytes.subarray(pos + JOURNAL_HEADER_BYTES, pos + JOURNAL_HEADER_BYTES + payloadBytes)) : null;
  if (data) crc = crc32c(data, crc);
  if (crc !== bytes.readUInt32LE(pos + CRC_OFFSET)) return null;
  return {
    seq: readU64(bytes, pos + 16),
    type,
    volumeId: bytes.readUInt32LE(pos + 8),
    offsetBytes: readU64(bytes, pos + 24),
    lengthBytes,
    data,
    recordBytes: JOURNAL_HEADER_BYTES + payloadBytes,
  };
}

/** Where a journal file's bytes fail to parse, up to the next intact record. */
export interface JournalDamage {
  offsetBytes: number;
  lengthBytes: number;
}

export interface JournalScan {
  /** Intact records in file order (each verified by its CRC). */
  records: { posBytes: number; rec: Omit<JournalExtent, 'fileNo'> }[];
  /** Damaged ranges with an intact record after them: not a torn tail. */
  damaged: JournalDamage[];
  /** Where the intact records end; bytes after it are a torn tail (nothing intact follows). */
  endBytes: number;
}

/**
 * Splits a journal file into intact records, damaged ranges and a torn tail.
 * A record that fails to parse ends the file (a torn tail: the last appends,
 * cut by a crash, never acknowledged as durable) only when no intact record
 * follows it; otherwise it is damage in the middle (media corruption), and
 * the records after it may be flushed writes.
 * Known ambiguity: appends run concurrently (a write split at a chunk
 * boundary, several clients), so a crash can also leave a record cut or never
 * written (zeros) with a later one intact. Then none of them was flushed (a
 * FLUSH waits for every earlier append's writev before its fdatasync), and
 * cutting there would be correct, but the file alone cannot tell that from
 * media damage to flushed records, so it is refused too: the operator's
 * salvage then drops only the cut write.
 */
export function scanJournalBytes(bytes: Buffer): JournalScan {
  const records: JournalScan['records'] = [];
  const damaged: JournalDamage[] = [];
  let pos = 0;
  let lastSeq = 0;
  while (pos + JOURNAL_HEADER_BYTES <= bytes.length) {
    const rec = parseRecord(bytes, pos);
    if (rec) {
      records.push({ posBytes: pos, rec });
      lastSeq = Math.max(lastSeq, rec.seq);
      pos += rec.recordBytes;
      continue;
    }
    const next = nextIntactRecord(bytes, pos + 1, lastSeq);
    if (next < 0) break;
    damaged.push({ offsetBytes: pos, lengthBytes: next - pos });
    pos = next;
  }
  return { records, damaged, endBytes: pos };
}

const MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  return b;
})();

/**
 * The offset of the next record from `fromBytes` on that verifies, or -1.
 * Appends number records in file order, so a real successor has a higher
 * seq than the last intact record before the damage (a record image inside
 * some payload almost never does).
 */
function nextIntactRecord(bytes: Buffer, fromBytes: number, afterSeq: number): number {
  for (let at = bytes.indexOf(MAGIC_BYTES, fromBytes); at >= 0 && at + JOURNAL_HEADER_BYTES <= bytes.length; at = bytes.indexOf(MAGIC_BYTES, at + 1)) {
    const rec = parseRecord(bytes, at);
    if (rec && rec.seq > afterSeq) return at;
  }
  return -1;
}

/**
 * The journal holds a damaged record with intact records after it. Replaying
 * around it would serve older bytes for its range; truncating would destroy
 * the records after it. The journal refuses to open until an operator runs
 * `couchestor journal salvage` (daemon stopped).
 */
export class JournalCorrupt extends StorageError {
  override name = 'JournalCorrupt';
  constructor(
    readonly file: string,
    readonly offsetBytes: number,
    readonly damagedRanges: number,
    readonly intactRecordsAfter: number,
  ) {
    super(
      `journal file ${file} has a damaged record at byte offset ${offsetBytes}` +
        (damagedRanges > 1 ? ` (and ${damagedRanges - 1} more damaged range(s))` : '') +
        ` with ${intactRecordsAfter} intact record(s) after it: this is not a torn tail, and replaying around it would read older data. ` +
        'Nothing was changed. With the daemon stopped, run `couchestor fsck` to list the damaged journal records, then ' +
        '`couchestor journal salvage` (same --data-dir) to drop them (their writes are lost) and keep every intact record. ' +
        '(Right after a crash or power cut while writes were in flight, zeroed or partly written damaged bytes can also be a write the crash cut, ' +
        'never flushed: salvage then drops only that write.)',
    );
  }

  static of(file: string, scan: JournalScan): JournalCorrupt {
    const first = scan.damaged[0]!;
    return new JournalCorrupt(file, first.offsetBytes, scan.damaged.length, scan.records.filter((r) => r.posBytes > first.offsetBytes).length);
  }
}

export interface JournalFileDamage {
  file: string;
  offsetBytes: number;
  lengthBytes: number;
  /** Intact records after this range in the same file. */
  intactRecordsAfter: number;
  /** What the damaged bytes' header claims, when its magic is there (unverified: the CRC failed). */
  claimed?: { volumeId: number; offsetBytes: number; lengthBytes: number; seq: number };
}

function journalFileNames(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((n) => FILE_RE.test(n))
    .sort();
}

function damageOf(file: string, bytes: Buffer, scan: JournalScan): JournalFileDamage[] {
  return scan.damaged.map((d) => {
    const out: JournalFileDamage = { file, offsetBytes: d.offsetBytes, lengthBytes: d.lengthBytes, intactRecordsAfter: scan.records.filter((r) => r.posBytes > d.offsetBytes).length };
    if (bytes.readUInt32LE(d.offsetBytes) === JOURNAL_MAGIC) {
      out.claimed = { volumeId: bytes.readUInt32LE(d.offsetBytes + 8), offsetBytes: readU64(bytes, d.offsetBytes + 24), lengthBytes: bytes.readUInt32LE(d.offsetBytes + 12), seq: readU64(bytes, d.offsetBytes + 16) };
    }
    return out;
  });
}

/** Read-only check of a journal directory (fsck): damaged ranges that are not a torn tail. Changes nothing. */
export function checkJournalDir(dir: string): { filesScanned: number; recordsScanned: number; tornTails: number; damaged: JournalFileDamage[] } {
  const out = { filesScanned: 0, recordsScanned: 0, tornTails: 0, damaged: [] as JournalFileDamage[] };
  for (const name of journalFileNames(dir)) {
    const file = path.join(dir, name);
    const bytes = fs.readFileSync(file);
    const scan = scanJournalBytes(bytes);
    out.filesScanned++;
    out.recordsScanned += scan.records.length;
    if (scan.endBytes < bytes.length) out.tornTails++;
    out.damaged.push(...damageOf(file, bytes, scan));
  }
  return out;
}

/**
 * Operator salvage (daemon stopped): each journal file with damage in the
 * middle is rewritten with its intact records only, in their order and with
 * their seqs (replay order and the destagedSeq comparison are unchanged),
 * through a temporary file that is fsynced and renamed over the original,
 * then the directory is fsynced. The damaged records' writes are lost: their
 * ranges read what the stripe (or an older journal record) holds. Returns
 * what was dropped.
 */
export function salvageJournalDir(dir: string): { filesRewritten: number; recordsKept: number; dropped: JournalFileDamage[] } {
  const out = { filesRewritten: 0, recordsKept: 0, dropped: [] as JournalFileDamage[] };
  for (const name of journalFileNames(dir)) {
    const file = path.join(dir, name);
    const bytes = fs.readFileSync(file);
    const scan = scanJournalBytes(bytes);
    if (scan.damaged.length === 0) continue;
    out.dropped.push(...damageOf(file, bytes, scan));
    const kept = Buffer.concat(scan.records.map(({ posBytes, rec }) => bytes.subarray(posBytes, posBytes + rec.recordBytes)));
    // Not matching FILE_RE: a crash before the rename leaves the original
    // in place and this file ignored (a second salvage overwrites it).
    const tmp = `${file}.salvage`;
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    try {
      for (let done = 0; done < kept.length; ) done += fs.writeSync(fd, kept, done, kept.length - done, done);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    syncDirSync(dir);
    out.filesRewritten++;
    out.recordsKept += scan.records.length;
  }
  return out;
}
