// The write-ahead journal for cold volumes: writes are appended to journal
// files on the hot pool and acknowledged; FLUSH/FUA share one fdatasync
// (group commit). Reads overlay journal extents (newest last) on the stripe
// until the destager has merged them into a new stripe generation.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { NoSpace, StorageError, VolumeFailed } from '../errors.js';
import { log } from '../../log.js';
import { GroupCommit } from '../group-commit.js';
import { ensureDurableDir, syncDirSync, syncNewEntry } from '../dir-sync.js';

export const JOURNAL_MAGIC = 0x4e524a43; // "CJRN" little-endian
const VERSION = 1;
export const JOURNAL_HEADER_BYTES = 40;
const CRC_OFFSET = 32;
/**
 * Bytes 36-39 of every item: its file's nonce, random per file (never 0),
 * the same in every item of the file. A scan resynchronising after damage
 * searches the following bytes for the next item, and those bytes may be a
 * client's payload holding byte-exact images of journal items (a guest
 * writing a journal file: a VM image of another CoucheStor node, a backup of
 * a hot pool); such an image carries another file's nonce (or none) and is
 * not taken for an item. The file's nonce is in its name
 * (journal-<no>-<nonce hex>.log, fileName), chosen at its creation and made
 * durable with the name by the directory sync every new file gets
 * (syncNewEntry): a scan knows it without reading any item, so damage to the
 * file's first items (or a torn first write whose payload holds an image)
 * never leaves it guessing. Outside the CRC, and files before this have
 * zeros there: builds without it parse these items unchanged (a downgrade
 * replays them, once it is told the new names), and files named before
 * (journal-<no>.log) open as before (scanJournalBytes, nonce null).
 */
const NONCE_OFFSET = 36;
/**
 * A sync marker: a header-only record appended after each group commit,
 * claiming that every write record numbered up to its seq field is durable.
 * Not an extent (never replayed); what lets a scan after a crash tell a write
 * the crash cut (no later marker covers it: never flushed, cut like a torn
 * tail) from damage to a flushed one (a later marker covers it: refused).
 */
const MARKER_TYPE = 3;
/**
 * A seq fence: the first item of a file made by a rotation, saying every
 * write record after it in the file numbers above its fence seq. It gives a
 * damaged range at the start of a file whose older files are all destaged
 * and removed a lower bound (P) for the seqs it can hold: without it P is
 * 0, and a marker from a sync older than the cut write, landed after it,
 * makes the open refuse a plain crash cut. Written synchronously at the
 * rotation, so any later item of the file was issued after it.
 * Written as a sync marker (type 3) claiming the last sync's seq (true),
 * the fence seq in its offset field (bytes 24-31, zero in every other
 * marker): builds from before fences parse it as a plain marker. A type of
 * its own (4, what f99b0d4 wrote, still read) is a damaged range to them,
 * and in a file whose older files are gone, with no marker after it (a
 * crash before the last FLUSH's marker landed), they cut the whole file,
 * flushed writes included.
 */
const FENCE_TYPE = 4;
/**
 * Byte 6 of a sync marker that ends its file: written by the rotation that
 * leaves the file, at its tail, after every record of it, and by a clean
 * close at the head's tail (writeCloseEnd). A recycled file
 * (JOURNAL_SPARE_FILES) holds the items of the file it was past its new
 * end: they carry the old nonce and are no items, but without this end
 * they were a torn tail, and once the files after it are destaged and gone
 * (numbers missing in between) the next file's first seq is no successor of
 * its last record: any later marker made the open refuse the file. Bytes
 * after an end are not scanned. Durable with the file's records: the file
 * is flagged dirty, so any sync after the rotation fdatasyncs it before its
 * marker claims a seq past the file (lost, no later marker claims more than
 * the file held, and the stale bytes are cut as a torn tail). Inside the
 * CRC; builds before it read a plain marker (a true claim).
 */
const END_FLAG_OFFSET = 6;
/** How long a sync marker waits for an append to ride on before it is written alone. */
const MARKER_DELAY_MS = 50;
export const DEFAULT_JOURNAL_FILE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_JOURNAL_CAPACITY_BYTES = 256 * 1024 * 1024;
/** How long a write waits for journal space before failing with ENOSPC (a test may shorten it). */
export const JOURNAL_FULL_TIMEOUT_MS = Number(process.env.COUCHESTOR_TEST_JOURNAL_FULL_TIMEOUT_MS ?? 30_000);
/**
 * Room an append leaves on the journal's file system beyond its own record
 * (a rotation's new file, end record and markers; a tmpfs's page rounding).
 * A write that found the disk full failed the whole journal (every cold
 * volume's writes EIO until a restart); an append that would not leave
 * this much waits, as for a full journal, and then fails alone (ENOSPC).
 */
export const JOURNAL_ROOM_MARGIN_BYTES = 1024 * 1024;
/** How often an append waiting for room on the disk measures it again (freed by others: no event). */
const JOURNAL_ROOM_MEASURE_MS = 1000;
/**
 * The free space is measured again at the next append once the estimate nears
 * this, or after JOURNAL_ROOM_RECHECK_MS (a statfs per append cost ~5 µs of
 * ~23 µs CPU per 4 KiB append in bench/journal-append).
 */
const JOURNAL_ROOM_RECHECK_BYTES = 64 * 1024 * 1024;
const JOURNAL_ROOM_RECHECK_MS = 10;
/**
 * How many destaged journal files are kept as spares (recycled, as
 * PostgreSQL recycles WAL segments) instead of unlinked. A rotation renames
 * a spare to the next number with a fresh nonce and overwrites it from
 * offset 0: a 4 KiB write + fdatasync into blocks the file already has
 * commits no size or extent change (measured 3-4x faster than an append's).
 * Spares are not in `files` (no live bytes, never scanned) but they are in
 * the capacity: live bytes + spare bytes <= capacityBytes at all times, so
 * the hot pool holds no more than the operator configured. A file is kept
 * as a spare only if it fits, and an append that would not fit beside the
 * spares unlinks them first (oldest first) rather than wait for a destage.
 */
export const JOURNAL_SPARE_FILES = 2;
/** A spare's name: the number of the file it was (numbers are never reused, so names never clash); not FILE_RE, so no scan reads it. */
const SPARE_RE = /^journal-spare-(\d{10})\.log$/;
/**
 * A spare being deleted (dropSparesFor): renamed to this at once, unlinked
 * off the event loop (an unlink frees the file's blocks in the call: 17-31
 * ms for a 64 MiB spare on ext4, measured, stalling every I/O of the daemon
 * on the append that needed the room). Not FILE_RE or SPARE_RE: an open
 * removes any a stop or crash left.
 */
const DROP_RE = /^journal-drop-(\d{10})\.log$/;

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
  /** Its name in the directory (fileName, or a name from before nonces); never changes. */
  name: string;
  fd: number;
  /**
   * Stamped into every item written to the file (NONCE_OFFSET): the one in
   * its name. A file found at open is never written to (a fresh head is
   * made), and one named before nonces has 0 here.
   */
  nonce: number;
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
  /** A sync marker's writev in flight: the descriptor is closed only after it (its number could be reused). */
  markerWrite: Promise<void> | null;
  /**
   * The highest claim of the sync markers in this file (0: none). The marker
   * covering a file's last records often sits in the next file; removing a
   * file that holds one first re-writes the claim into the head, or an older
   * file's flushed records would lose their cover and damage to them would
   * be judged a crash cut (and truncated).
   */
  markerClaim: number;
  /**
   * Releases of records in this file whose superseding index entry is not
   * durable yet (release's removeAfter pending): the file stays until none
   * is, whichever release takes its live bytes to zero (a failed one keeps
   * it for good, as the records may still be needed after a restart).
   */
  removeHolds: number;
  /**
   * fdatasyncs of the file issued and not yet returned (a group sync's, its
   * removal's), each settling as its call returns: see fdatasyncFile. At
   * most two (syncs run one at a time, a file is removed once).
   */
  syncing: Set<Promise<void>>;
}

/** A journal file's name: its number, and its nonce in hex (absent in files named before nonces). */
const FILE_RE = /^journal-(\d{10})(?:-([0-9a-f]{8}))?\.log$/;

/**
 * A directory named as journal file 0 (no file takes 0: numbering starts at
 * 1, in every build), made by every open before anything else in the
 * journal directory. Builds before nonces in names (7e96923) do not see the
 * files named since: rolled back onto them, they would start without
 * replaying their writes. They list this entry as their first journal file
 * and, reading it, fail with EISDIR before they create, cut or remove
 * anything in the journal (checked against 7e96923~1 and every earlier
 * journal.ts: each reads all files before changing one), and their start
 * exits with it: the rollback fails loudly. This build never lists it
 * (parseJournalFileName). README: what to do before going back.
 */
export const JOURNAL_DOWNGRADE_GUARD = 'journal-0000000000.log';

/** What a journal file's name says: its number and nonce (null: named before nonces), or null when it is not a journal file's name. */
export function parseJournalFileName(name: string): { no: number; nonce: number | null } | null {
  if (name === JOURNAL_DOWNGRADE_GUARD) return null;
  const m = FILE_RE.exec(name);
  if (!m) return null;
  return { no: Number(m[1]), nonce: m[2] === undefined ? null : parseInt(m[2], 16) };
}

/**
 * Makes the downgrade guard (JOURNAL_DOWNGRADE_GUARD) in `dir` if it is not
 * there, durable (directory fsync) before this open makes any file with a
 * new name. An entry of that name that is not a directory is refused: no
 * build writes one, so it is not this journal's.
 */
function ensureDowngradeGuard(dir: string): void {
  const guard = path.join(dir, JOURNAL_DOWNGRADE_GUARD);
  let made = true;
  try {
    fs.mkdirSync(guard, 0o700);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if (!fs.statSync(guard).isDirectory()) throw new StorageError(`${guard} is not a directory: no build writes a journal file numbered 0; move it away (nothing was changed)`);
    made = false;
  }
  // Not empty, and saying why it is there: an empty directory named like a
  // log file looks like junk to an operator, and backup or copy tools that
  // skip empty directories would drop it. The guard is the directory; this
  // empty file is only its label, by its name (empty: no data block, so a
  // full file system is not asked for room by an open), made best-effort:
  // without it the guard works the same. Synced into the guard like every
  // entry made here (once, when made), so a power cut does not take it back.
  const label = path.join(guard, JOURNAL_DOWNGRADE_GUARD_LABEL);
  if (!fs.existsSync(label)) {
    try {
      fs.closeSync(fs.openSync(label, 'a', 0o600));
      syncDirSync(guard);
    } catch (err) {
      log.warn('journal: the rollback guard directory could not be labelled', { label, err: (err as Error).message });
    }
  }
  if (made) syncDirSync(dir);
}

/** The empty file in the guard directory that says what the directory is (README, "Going back"). */
export const JOURNAL_DOWNGRADE_GUARD_LABEL = 'NOT-A-JOURNAL-FILE-keeps-builds-before-2026-11-off-this-journal-see-README-going-back';

/**
 * The journal files of `dir` (names), by number. Two files with one number
 * (only by hand: a number is never reused, a name never changes) are
 * refused: which one holds the journal's records cannot be told.
 */
export function journalFileEntries(dir: string): { name: string; no: number; nonce: number | null }[] {
  const entries = fs
    .readdirSync(dir)
    .flatMap((name) => {
      const parsed = parseJournalFileName(name);
      return parsed ? [{ name, ...parsed }] : [];
    })
    .sort((a, b) => a.no - b.no);
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.no === entries[i - 1]!.no) throw new JournalDuplicateFile(dir, entries[i - 1]!.name, entries[i]!.name);
  }
  return entries;
}

export class Journal {
  private readonly files = new Map<number, JournalFile>();
  /**
   * Spare files (names in the directory, oldest first): each a destaged
   * file, fdatasynced, renamed to spareName and that rename made durable
   * (directory fsync) before it was put here. At most JOURNAL_SPARE_FILES,
   * with `recycling` (renames not yet durable) counted against the bound.
   */
  private readonly spares: string[] = [];
  /** Sizes of `spares` (name -> bytes, as stat'ed when made or adopted); their sum is spareBytes. */
  private readonly spareSizes = new Map<string, number>();
  private spareBytes = 0;
  private recycling = 0;
  private head!: JournalFile;
  private nextSeq = 1;
  /** The highest write seq the last sync marker claimed durable. */
  private markedSeq = 0;
  /** A marker not written yet: it rides on the next append's writev, or the timer writes it alone. */
  private pendingMarker: Buffer | null = null;
  private markerTimer: NodeJS.Timeout | null = null;
  /** Set once close() starts: no append is taken any more (a sync still is, and close waits for it). */
  private closing = false;
  /** Set once close() has let every sync finish: no sync is taken, no marker queued. */
  private closed = false;
  /**
   * The promise of the latest sync() call. GroupCommit settles its promises
   * in call order (a queued sync starts after the running one), so waiting
   * for the latest waits for all of them (close: a sync still running must
   * land its marker, and no fdatasync may run on a closed descriptor).
   */
  private lastSync: Promise<void> | null = null;
  private closeDone: Promise<void> | null = null;
  private liveBytes = 0;
  /** volumeId -> chunkIndex -> extents in seq order. */
  private readonly index = new Map<number, Map<number, JournalExtent[]>>();
  private readonly pendingWrites = new Set<Promise<void>>();
  /**
   * Files out of `files` (every record destaged) whose removal has not yet
   * fdatasynced them: syncs still take them when dirty (syncOnce).
   */
  private readonly removing = new Set<JournalFile>();
  /**
   * Removals not finished (descriptor closed and, unless kept, the file
   * unlinked): close() waits for them, so an open of the same directory
   * after close() resolves never has a file vanish under it. One per
   * journal file at most (bounded like `files`), and the unlinks of spares
   * dropped for room (dropSparesFor: at most JOURNAL_SPARE_FILES).
   */
  private readonly removals = new Set<Promise<void>>();
  private readonly commit = new GroupCommit(() => this.syncOnce());
  private failure: Error | null = null;
  private spaceWaiters: (() => void)[] = [];
  /** Free bytes of the journal's file system as last measured by roomFor, less the appends in flight then and made since. */
  private roomBytes = 0;
  private roomMeasuredMs = -Infinity;
  /** Bytes of appends whose writev has not returned: not in a statfs yet. */
  private inflightBytes = 0;
  private roomMarginBytes: number | null = JOURNAL_ROOM_MARGIN_BYTES;
  /** Why destaging last failed (shown in the ENOSPC message of a full journal). */
  stalledReason: string | null = null;
  /** Called when live bytes cross the destage threshold, and by each append waiting for room (writersWaitingForRoom > 0 then). */
  onPressure: (() => void) | null = null;
  /** Appends waiting for room (journal full, or its disk): each asks for a pass by onPressure whatever the threshold. */
  private roomWaits = 0;
  /**
   * Told of each journal file whose name became durable (before the sync
   * that made it resolves: before any FLUSH counting its records is
   * answered) and of each file about to be removed or made a spare (before
   * its unlink or rename). The index keeps the set (VolumeManager, LMDB db
   * `journal-files`), so an open can tell a journal whose files were taken
   * away (`rm journal/*.log`, an old backup restored) from one that was
   * destaged: a file recorded and missing held acknowledged writes.
   * Both are synchronous and durable on return; a throw fails the journal.
   */
  fileLog: { named(no: number): void; removing(no: number): void } | null = null;

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
    /** Room an append must leave on the disk (JOURNAL_ROOM_MARGIN_BYTES); null: no check (tests of the short-write path). */
    roomMarginBytes?: number | null;
  }): Journal {
    // The directory's own name: syncNewEntry on each journal file covers
    // the file's name in it, not the directory's in the pool.
    ensureDurableDir(opts.dir);
    ensureDowngradeGuard(opts.dir);
    const j = new Journal(opts.dir, opts.chunkSizeBytes, opts.fileBytes ?? DEFAULT_JOURNAL_FILE_BYTES, opts.capacityBytes ?? DEFAULT_JOURNAL_CAPACITY_BYTES);
    j.roomMarginBytes = opts.roomMarginBytes === undefined ? JOURNAL_ROOM_MARGIN_BYTES : opts.roomMarginBytes;
    const entries = journalFileEntries(opts.dir);
    j.adoptSpares();
    const nos = entries.map((e) => e.no);
    j.nextSeq = Math.max(j.nextSeq, (opts.highestDestagedSeq ?? 0) + 1);
    let replayed = 0;
    // Torn tails are cut only once every file has been scanned: a refusal
    // (mid-file damage in any file) must leave every file as it found it.
    const tornTails: { file: string; fd: number; offsetBytes: number; lengthBytes: number }[] = [];
    const files = entries.map((e) => path.join(opts.dir, e.name));
    const scans = files.map((file, i) => scanJournalBytes(fs.readFileSync(file), entries[i]!.nonce));
    const verdicts = judgeJournal(scans);
    const refused = verdicts.findIndex((v) => v.damaged.length > 0);
    if (refused >= 0) throw JournalCorrupt.of(files[refused]!, scans[refused]!, verdicts[refused]!);
    for (const [i, no] of nos.entries()) {
      const file = files[i]!;
      const scan = scans[i]!;
      const endBytes = verdicts[i]!.cutAtBytes ?? scan.endBytes;
      const fd = fs.openSync(file, 'r+');
      // named: the head created below shares the directory, and its first
      // sync persists every entry in it, these included.
      const f: JournalFile = { no, name: entries[i]!.name, fd, nonce: scan.nonce ?? 0, tailBytes: endBytes, liveBytes: 0, dirty: false, named: true, markerWrite: null, markerClaim: 0, removeHolds: 0, syncing: new Set() };
      j.files.set(no, f);
      for (const m of scan.markers) if (m.posBytes < endBytes) f.markerClaim = Math.max(f.markerClaim, m.syncedSeq);
      j.markedSeq = Math.max(j.markedSeq, f.markerClaim);
      // Numbered above every claim and fence kept too: they outlive the
      // records they speak of (a head holding only markers once its records'
      // files are removed and, their volume deleted or moved off the cold
      // tier, the index holds no destagedSeq of them). Numbered under them,
      // the new run's records were claimed durable by the old markers: no
      // FLUSH wrote a marker (none claimed more than markedSeq) and damage
      // to a flushed record was judged a crash cut, the intact flushed
      // records after it dropped with it.
      j.nextSeq = Math.max(j.nextSeq, f.markerClaim + 1);
      for (const fe of scan.fences) if (fe.posBytes < endBytes) j.nextSeq = Math.max(j.nextSeq, fe.fenceSeq + 1);
      // Read again only if a record is replayed (the scan kept no payload).
      let bytes: Buffer | null = null;
      for (const { posBytes, rec } of scan.records) {
        // Numbered past dropped records too: were one to come back (a cut
        // lost), it must never share a seq with a newer write.
        j.nextSeq = Math.max(j.nextSeq, rec.seq + 1);
        // After a crash cut: writes never flushed, dropped with the cut.
        if (posBytes >= endBytes) continue;
        if (opts.volumeExists(rec.volumeId) && rec.seq > opts.destagedSeq(rec.volumeId, Math.floor(rec.offsetBytes / opts.chunkSizeBytes))) {
          bytes ??= fs.readFileSync(file);
          const data = rec.type === RecordType.Write ? Buffer.from(bytes.subarray(posBytes + JOURNAL_HEADER_BYTES, posBytes + rec.recordBytes)) : null;
          const ext: JournalExtent = { ...rec, data, fileNo: no };
          j.insert(ext);
          f.liveBytes += ext.recordBytes;
          j.liveBytes += ext.recordBytes;
          replayed++;
        }
      }
      // A file with its end keeps what follows it (a recycled file's old bytes: no items).
      if (verdicts[i]!.cutAtBytes !== null || (!scan.ended && endBytes < scan.lengthBytes)) tornTails.push({ file, fd, offsetBytes: endBytes, lengthBytes: scan.lengthBytes - endBytes });
    }
    for (const t of tornTails) {
      // No sync marker after it covers its writes (judgeJournal looked): the
      // last appends, or ones in flight beside them, cut by a crash before
      // any FLUSH covered them.
      log.warn('journal: dropping torn tail', { file: t.file, offsetBytes: t.offsetBytes, lengthBytes: t.lengthBytes });
      fs.ftruncateSync(t.fd, t.offsetBytes);
    }
    // Every record kept, and every cut, durable before any new write: a cut
    // lost in a power cut would bring back never-flushed records behind
    // damage that later sync markers (claiming newer writes) then make the
    // next open refuse; and the head's first marker below claims them all.
    for (const f of j.files.values()) fs.fdatasyncSync(f.fd);
    // Always start a fresh head file: appends never go after a repaired tail.
    const headNo = (nos.length ? nos[nos.length - 1]! : 0) + 1;
    j.head = j.createFile(headNo);
    // Its first item: a marker claiming every seq numbered so far (all in
    // older files, synced above, in stripes, or cut). A damaged range in
    // this file then has a lower bound for the seqs it holds even once the
    // older files are removed (judgeJournal), so a crash cut of a first
    // write after this start is not taken for damage to flushed ones when a
    // FLUSH racing it claims an older seq.
    // Written synchronously: a first append's writev is only issued after
    // it, so no record of this file lands without it. It carries a seq
    // fence too, as a rotation's first item does: a head reused from a spare
    // whose fresh nonce equals the old one (2^-32) then still takes none of
    // the old records past its tail (scanJournalBytes).
    if (j.nextSeq - 1 > 0) {
      j.markedSeq = Math.max(j.markedSeq, j.nextSeq - 1);
      j.head.markerClaim = j.markedSeq;
      try {
        j.writeItemSync(j.head, seqRecord(MARKER_TYPE, j.markedSeq, j.nextSeq - 1));
      } catch {
        // Latched (j.failed): the daemon starts with cold volumes offline and says why, as for any journal write error.
      }
    }
    for (const f of [...j.files.values()]) j.maybeRemove(f);
    // The spares adopted beside what was replayed must fit in the capacity (a smaller one configured since, say).
    j.dropSparesFor(0);
    if (replayed > 0) log.info('journal: replayed records', { records: replayed, liveBytes: j.liveBytes });
    return j;
  }

  /**
   * Takes the spares a previous run left (SPARE_RE), up to the bound; the
   * rest are unlinked. One directory fsync first: a spare seen after a
   * SIGKILL may be a rename the page cache holds but the disk does not, and
   * reused (renamed again, overwritten) before that rename is durable, a
   * power cut could bring the file back under its old journal name with a
   * newer file's items at its start (damage, with its old flushed records
   * after it): the open would refuse.
   */
  private adoptSpares(): void {
    const entries = fs.readdirSync(this.dir);
    for (const dropped of entries.filter((n) => DROP_RE.test(n))) fs.rmSync(path.join(this.dir, dropped), { force: true });
    const names = entries.filter((n) => SPARE_RE.test(n)).sort();
    if (names.length === 0) return;
    for (const extra of names.splice(JOURNAL_SPARE_FILES)) fs.rmSync(path.join(this.dir, extra), { force: true });
    syncDirSync(this.dir);
    for (const name of names) this.addSpare(name, fs.statSync(path.join(this.dir, name)).size);
  }

  private addSpare(name: string, sizeBytes: number): void {
    this.spares.push(name);
    this.spareSizes.set(name, sizeBytes);
    this.spareBytes += sizeBytes;
  }

  /** The oldest spare, out of the list (its name), or undefined. */
  private shiftSpare(): string | undefined {
    const name = this.spares.shift();
    if (name === undefined) return undefined;
    this.spareBytes -= this.spareSizes.get(name) ?? 0;
    this.spareSizes.delete(name);
    return name;
  }

  /**
   * Deletes spares, oldest first, until live bytes + `needBytes` + spare
   * bytes fit in the capacity (or none is left); reached only by a journal
   * within a spare's size of full. Each is renamed out of the spares at
   * once (DROP_RE: a metadata change) and unlinked off the event loop;
   * close() waits for the unlinks. No directory sync: a spare whose rename
   * or unlink a power cut undoes is adopted (or removed) by the next open,
   * and it holds no record anyone needs.
   */
  private dropSparesFor(needBytes: number): void {
    void this.dropSpares(() => this.liveBytes + needBytes + this.spareBytes > this.capacityBytes);
  }

  /** Deletes spares, oldest first, while `more()` (see dropSparesFor); resolves once their unlinks are done. */
  private dropSpares(more: () => boolean): Promise<void> {
    const unlinks: Promise<void>[] = [];
    while (this.spares.length > 0 && more()) {
      const name = this.shiftSpare()!;
      const dropped = path.join(this.dir, name.replace('journal-spare-', 'journal-drop-'));
      try {
        fs.renameSync(path.join(this.dir, name), dropped);
      } catch (err) {
        // Gone already is what was wanted; anything else leaves a file the next open adopts or removes.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('journal: a spare file could not be removed', { spare: name, err: (err as Error).message });
        continue;
      }
      // fs.rm as every removal here (the power-loss model logs it).
      const unlinked = new Promise<void>((resolve) =>
        fs.rm(dropped, { force: true }, (err) => {
          if (err) log.warn('journal: a spare file could not be removed', { spare: name, err: err.message });
          resolve();
        }),
      );
      this.removals.add(unlinked);
      unlinks.push(unlinked);
      void unlinked.then(() => this.removals.delete(unlinked));
    }
    return Promise.all(unlinks).then(() => undefined);
  }

  /** Spare files kept for reuse (names), oldest first. */
  /** Numbers of the live journal files whose names are durable (fileLog's set, as this process knows it). */
  namedFileNos(): number[] {
    return [...this.files.values()].filter((f) => f.named).map((f) => f.no);
  }

  get spareFiles(): readonly string[] {
    return this.spares;
  }

  /** Bytes of the spare files (counted in capacityBytes beside bytesLive). */
  get bytesSpare(): number {
    return this.spareBytes;
  }

  private createFile(no: number): JournalFile {
    // The nonce is chosen here and named in the file's name: the directory
    // sync that makes the name durable (syncNewEntry, before any FLUSH
    // counts the file's records) makes its nonce durable with it.
    const nonce = newFileNonce();
    const name = fileName(no, nonce);
    const fd = this.takeSpare(name) ?? fs.openSync(path.join(this.dir, name), fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    const f: JournalFile = { no, name, fd, nonce, tailBytes: 0, liveBytes: 0, dirty: true, named: false, markerWrite: null, markerClaim: 0, removeHolds: 0, syncing: new Set() };
    this.files.set(no, f);
    return f;
  }

  /**
   * A spare renamed to `name` and opened for overwriting (no truncate: its
   * blocks are what makes its writes cheaper), or null when there is none
   * (or the rename fails: a new file is made instead). Its old items carry
   * the nonce of the file it was: the scan takes them for what lies past a
   * file's end (as zeros), never for items. The new name is durable only
   * after the directory sync every new file gets before a FLUSH counts its
   * records (named: false, syncOnce): lost to a power cut before it, the
   * file is a spare again, holding only records no FLUSH covered.
   */
  private takeSpare(name: string): number | null {
    const spare = this.shiftSpare();
    if (spare === undefined) return null;
    const from = path.join(this.dir, spare);
    const to = path.join(this.dir, name);
    // Opened before the rename: an open that fails (EMFILE) leaves the spare
    // under its own name. Renamed first, it was left under the new number,
    // out of `files`, and the retried rotation made a second file with that
    // number: the next open refused the journal (JournalDuplicateFile).
    let fd: number;
    try {
      fd = fs.openSync(from, fs.constants.O_RDWR);
    } catch (err) {
      log.warn('journal: a spare file could not be reused; creating a new file', { spare, err: (err as Error).message });
      return null;
    }
    try {
      fs.renameSync(from, to);
    } catch (err) {
      fs.closeSync(fd);
      log.warn('journal: a spare file could not be reused; creating a new file', { spare, err: (err as Error).message });
      return null;
    }
    return fd;
  }

  /**
   * Writes a header-only item (a fence, or open's first marker) at the
   * file's tail before anything else can be issued to the file, and
   * fdatasyncs it, so no later item of the file lands without it: not after
   * a SIGKILL (the page cache keeps the order) and not after a power cut
   * (writeback keeps none). Lost to a power cut, with the older files it
   * bounds destaged and their unlinks durable (a directory fsync or the file
   * system's own commit), the seqs a damaged range at the file's start can
   * hold had no bound, and any later marker (the next rotation's fence
   * claims the last sync) made the open refuse a pure power cut. One
   * fdatasync per file created (measured 0.3 ms here). A failure or short
   * count fails the journal, as any journal write does, and throws it.
   */
  private writeItemSync(f: JournalFile, item: Buffer, fdatasync = true): void {
    item.writeUInt32LE(f.nonce, NONCE_OFFSET);
    const pos = f.tailBytes;
    f.tailBytes += item.length;
    let doneBytes = 0;
    try {
      // A short count is finished from where it stopped (see settleWrite).
      while (doneBytes < item.length) {
        const n = fs.writeSync(f.fd, item, doneBytes, item.length - doneBytes, pos + doneBytes);
        if (n <= 0) throw new JournalShortWrite(f.name, pos, doneBytes, item.length, null);
        doneBytes += n;
      }
    } catch (err) {
      this.fail(doneBytes > 0 && !(err instanceof JournalShortWrite) ? new JournalShortWrite(f.name, pos, doneBytes, item.length, err as Error) : (err as Error));
      throw this.failure;
    }
    if (!fdatasync) return;
    try {
      fs.fdatasyncSync(f.fd);
    } catch (err) {
      this.fail(err as Error);
      throw this.failure;
    }
  }

  /**
   * Whether the journal's file system has room for `recordBytes` more and
   * JOURNAL_ROOM_MARGIN_BYTES: an estimate (the last statfs less the appends
   * in flight then and made since), measured again when it nears the edge or
   * is JOURNAL_ROOM_RECHECK_MS old. Measured once a second, another writer of
   * the disk (a hot volume under fio) taking the room within that second
   * passed the check and failed the journal.
   * Spare files are no room: an append goes into the head, past any blocks
   * it holds, never into a spare (counted, a full disk with a spare kept
   * failed the journal); append() gives them back to the disk instead.
   */
  private roomFor(recordBytes: number): boolean {
    if (this.roomMarginBytes === null) return true;
    const nowMs = Date.now();
    if (this.roomBytes - recordBytes < JOURNAL_ROOM_RECHECK_BYTES || nowMs - this.roomMeasuredMs >= JOURNAL_ROOM_RECHECK_MS) {
      let st: fs.StatsFs;
      try {
        st = fs.statfsSync(this.dir);
      } catch {
        return true; // not measurable: the write itself tells (as before this check)
      }
      // A file system that reports no size (ramfs, some FUSE) cannot be judged: the write itself tells.
      this.roomBytes = st.blocks === 0 ? Number.MAX_SAFE_INTEGER : st.bavail * st.bsize - this.inflightBytes;
      this.roomMeasuredMs = nowMs;
    }
    return this.roomBytes - recordBytes >= this.roomMarginBytes;
  }

  get bytesLive(): number {
    return this.liveBytes;
  }

  /** Appends waiting for room now (see onPressure). */
  get writersWaitingForRoom(): number {
    return this.roomWaits;
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

  /** How many chunks of a volume have journaled data (dirtyChunks' length, without making the list). */
  dirtyChunkCount(volumeId: number): number {
    return this.index.get(volumeId)?.size ?? 0;
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
    if (this.closing) throw new JournalClosed();
    const recordBytes = JOURNAL_HEADER_BYTES + (data ? data.length : 0);
    if (recordBytes > this.capacityBytes) throw new NoSpace('record larger than the journal');
    const deadlineMs = Date.now() + JOURNAL_FULL_TIMEOUT_MS;
    let noRoom = false;
    let waiting = false;
    try {
      while (this.liveBytes + recordBytes > this.capacityBytes || (noRoom = !this.roomFor(recordBytes))) {
        // Counted before onPressure and until the loop is left: a destager judging at a pass's end
        // whether to run another sees this append waiting even when the journal is under its threshold
        // (a record larger than capacity less the threshold, a full disk), or a pass never followed the wait.
        if (!waiting) this.roomWaits++;
        waiting = true;
        this.onPressure?.();
        if (noRoom && this.spares.length > 0) {
          // Blocks on the disk the head cannot write into: given back (as a write needing their capacity does), then measured again.
          await this.dropSpares(() => true);
          if (this.failure) throw this.failure;
          if (this.closing) throw new JournalClosed();
          this.roomMeasuredMs = -Infinity;
          noRoom = false;
          continue;
        }
        const leftMs = deadlineMs - Date.now();
        // Destaging may be impossible (too many cold pools lost): the client gets
        // ENOSPC after a bound instead of a write that never completes.
        if (leftMs <= 0 && noRoom) throw new NoSpace(`no room for the journal on its disk (${this.roomBytes} bytes free) and none freed${this.stalledReason ? `: ${this.stalledReason}` : ''}`);
        if (leftMs <= 0) throw new NoSpace(`journal full (${this.liveBytes} of ${this.capacityBytes} bytes) and destaging is not freeing space${this.stalledReason ? `: ${this.stalledReason}` : ''}`);
        await new Promise<void>((r) => {
          // Room freed on the disk by others (a file deleted) wakes nobody: measured again each JOURNAL_ROOM_MEASURE_MS.
          const timer = setTimeout(r, noRoom ? Math.min(leftMs, JOURNAL_ROOM_MEASURE_MS) : leftMs);
          this.spaceWaiters.push(() => {
            clearTimeout(timer);
            r();
          });
        });
        if (this.failure) throw this.failure;
        if (this.closing) throw new JournalClosed();
        noRoom = false;
      }
    } finally {
      if (waiting) this.roomWaits--;
    }
    this.roomBytes -= recordBytes;
    // Spares are in the capacity, but never hold a write back: they go
    // first. After the wait (a file recycled during it was checked against
    // the live bytes without this record), with nothing awaited before the
    // record is counted.
    if (this.liveBytes + recordBytes + this.spareBytes > this.capacityBytes) this.dropSparesFor(recordBytes);
    if (this.head.tailBytes + recordBytes > this.fileBytes && this.head.tailBytes > 0) {
      const old = this.head;
      // The new file first: a create that throws (EMFILE, no inode left)
      // fails this append only, and leaves the head without an end. Ended
      // first, the head stayed the head: a smaller record (and every sync
      // marker) then went after its end, where no scan reads (flushed writes
      // lost at the next open).
      const next = this.createFile(old.no + 1);
      // Its end, after every record of it (those in flight included: their
      // positions are below its tail): a sync after the rotation fdatasyncs it
      // (dirty), before any marker claims a seq of the next file.
      const end = endRecord(this.markedSeq);
      old.markerClaim = Math.max(old.markerClaim, this.markedSeq);
      old.dirty = true;
      this.writeItemSync(old, end, false);
      this.head = next;
      // The file's first item, before any other (maybeRemove may write a
      // claim marker into it): every record of the file numbers above every
      // seq handed out so far.
      this.head.markerClaim = this.markedSeq;
      this.writeItemSync(this.head, seqRecord(MARKER_TYPE, this.markedSeq, this.nextSeq - 1));
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
    header.writeUInt32LE(f.nonce, NONCE_OFFSET);
    let crc = crc32c(header.subarray(0, CRC_OFFSET));
    if (data) crc = crc32c(data, crc);
    header.writeUInt32LE(crc, CRC_OFFSET);
    // The last sync's marker, if not written yet, goes in the same writev, ahead of this record.
    const marker = this.takePendingMarker();
    if (marker) {
      marker.writeUInt32LE(f.nonce, NONCE_OFFSET);
      f.markerClaim = Math.max(f.markerClaim, readU64(marker, 16));
    }
    const pos = f.tailBytes + (marker ? JOURNAL_HEADER_BYTES : 0);
    f.tailBytes = pos + recordBytes;
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
      if (marker) bufs.unshift(marker);
      const startBytes = marker ? pos - JOURNAL_HEADER_BYTES : pos;
      const totalBytes = marker ? recordBytes + JOURNAL_HEADER_BYTES : recordBytes;
      fs.writev(f.fd, bufs, startBytes, (err, writtenBytes) => {
        if (!err && writtenBytes === totalBytes) return resolve();
        // A short count is no landed record: finish it, or fail as an error would.
        this.settleWrite(f, bufs, startBytes, totalBytes, err, writtenBytes, resolve, reject);
      });
    });
    this.pendingWrites.add(w);
    this.inflightBytes += recordBytes;
    const landed = () => {
      this.pendingWrites.delete(w);
      this.inflightBytes -= recordBytes;
    };
    w.then(landed, landed);
    return w;
  }

  /**
   * The slow path of a journal write whose first writev failed or came back
   * short. libuv's write loop reports a partial count as success when an
   * error (ENOSPC part-way) stops it after some bytes landed, and a file
   * system may split a write: the rest is written from where it stopped, so
   * a record is only ever reported landed once all of its bytes are. An
   * error, or a write that makes no progress, fails the journal exactly as
   * a failed writev does (the record may be torn in the file; whatever waits
   * on it, a FLUSH included, fails with it).
   */
  private settleWrite(
    f: JournalFile,
    bufs: Buffer[],
    startBytes: number,
    totalBytes: number,
    err: Error | null,
    writtenBytes: number,
    resolve: () => void,
    reject: (err: Error) => void,
  ): void {
    const failWith = (cause: Error) => {
      this.fail(cause);
      reject(this.failure!);
    };
    if (err) return failWith(writtenBytes > 0 ? new JournalShortWrite(f.name, startBytes, writtenBytes, totalBytes, err) : err);
    if (writtenBytes >= totalBytes) return resolve();
    if (writtenBytes <= 0) return failWith(new JournalShortWrite(f.name, startBytes, writtenBytes, totalBytes, null));
    const done = writtenBytes;
    const rest = buffersAfter(bufs, done);
    fs.writev(f.fd, rest, startBytes + done, (err2, n) => {
      // Reported against the whole write: the error names how much of it landed.
      if (err2) return failWith(new JournalShortWrite(f.name, startBytes, done, totalBytes, err2));
      if (n <= 0) return failWith(new JournalShortWrite(f.name, startBytes, done, totalBytes, null));
      this.settleWrite(f, bufs, startBytes, totalBytes, null, done + n, resolve, reject);
    });
  }

  private fail(err: Error): void {
    if (!this.failure) {
      this.failure = new VolumeFailed(`journal I/O failed (${err.message}); cold volumes are offline`, { cause: err });
      log.error('journal failed', { err: err.message });
    }
    for (const w of this.spaceWaiters.splice(0)) w();
  }

  /**
   * fdatasync of journal file `f` (a group sync's, a removal's): `done` gets
   * the error, or null only once every other fdatasync of `f` still running
   * when this one returned has returned too, and the journal has not failed
   * (done then gets the failure). Overlapping calls on one open file share
   * its writeback error, which Linux reports to one of them only (errseq,
   * once per open file): a FLUSH's call that returned 0 beside a removal's
   * that took the EIO wrote its marker (acknowledged, its pages maybe
   * dropped), and a removal whose call returned 0 beside a FLUSH's EIO
   * unlinked (or recycled) a file that may come back torn. As volume.ts's
   * syncFd (84312ba). A failure fails the journal before the call counts as
   * returned, so a waiting success sees it.
   */
  private fdatasyncFile(f: JournalFile, done: (err: Error | null) => void): void {
    let returned!: () => void;
    const mine = new Promise<void>((r) => (returned = r));
    f.syncing.add(mine);
    const onReturn = (err: NodeJS.ErrnoException | null) => {
      if (err) this.fail(err);
      f.syncing.delete(mine);
      returned();
      if (err) return done(this.failure);
      const settle = () => done(this.failure);
      if (f.syncing.size === 0) return settle();
      void Promise.all(f.syncing).then(settle);
    };
    try {
      fs.fdatasync(f.fd, onReturn);
    } catch (err) {
      // Thrown before anything was issued (a bad argument): no waiter is left behind.
      f.syncing.delete(mine);
      returned();
      throw err;
    }
  }

  /** Group commit: every append that resolved before the call is durable afterwards. */
  sync(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    // Closed: its descriptors are gone (their numbers may be other files').
    if (this.closed) return Promise.reject(new JournalClosed());
    const p = this.commit.run();
    this.lastSync = p;
    return p;
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
    // Every write numbered up to here is awaited or landed, in a file flagged dirty.
    const uptoSeq = this.nextSeq - 1;
    // Files being removed too: a marker of this sync claims their records,
    // so they are durable before it, or a power cut that undoes their unlink
    // leaves them torn under the claim (the open refuses; see maybeRemove).
    const dirty = [...this.files.values(), ...this.removing].filter((f) => f.dirty);
    for (const f of dirty) f.dirty = false;
    await Promise.all(inFlight);
    if (this.failure) throw this.failure;
    // A file whose removal's own fdatasync has run meanwhile is durable and
    // closing: nothing more is needed of it.
    const live = dirty.filter((f) => this.files.get(f.no) === f || this.removing.has(f));
    await Promise.all([
      ...live.map(
        (f) =>
          new Promise<void>((resolve, reject) =>
            // A success counts once the removal's overlapping fdatasync of the file (if any) returned without error.
            this.fdatasyncFile(f, (err) => (err ? reject(err) : resolve())),
          ),
      ),
      ...live
        .filter((f) => !f.named)
        .map((f) =>
          syncNewEntry(path.join(this.dir, f.name), f.fd).then(
            () => {
              f.named = true;
              // Recorded before this sync resolves: no FLUSH counting the file's records is answered before.
              try {
                this.fileLog?.named(f.no);
              } catch (err) {
                this.fail(err as Error);
                throw this.failure;
              }
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
    // Failed meanwhile (a removal's fdatasync of a file this sync took may
    // have had the writeback error this one's, on the same descriptor, was
    // then spared): no marker may claim what may be lost.
    if (this.failure) throw this.failure;
    if (uptoSeq > this.markedSeq) this.markSynced(uptoSeq);
  }

  /**
   * Records that writes up to `syncedSeq` are durable, in a sync marker
   * written with the next append (no syscall of its own under load: a
   * separate write per FLUSH measured ~11% fewer qd1 append+sync rounds) or,
   * if none comes within MARKER_DELAY_MS, by itself, or at close. Not
   * awaited and not flagged dirty (no FLUSH waits for it, none syncs it by
   * itself): it becomes durable with the next sync or by writeback. Losing it
   * in a crash only makes a later scan judge damage to those writes a crash
   * cut, which takes media damage at the same instant (a double fault) to
   * matter.
   */
  private markSynced(syncedSeq: number): void {
    if (this.closed) return;
    this.markedSeq = syncedSeq;
    this.pendingMarker = markerRecord(syncedSeq);
    if (!this.markerTimer) {
      this.markerTimer = setTimeout(() => {
        this.markerTimer = null;
        this.writePendingMarker();
      }, MARKER_DELAY_MS);
      this.markerTimer.unref();
    }
  }

  private takePendingMarker(): Buffer | null {
    const m = this.pendingMarker;
    this.pendingMarker = null;
    return m;
  }

  /**
   * Writes the pending marker alone, at the head's tail. Always into the
   * head file, even a full one (40 bytes past its target size): a rotation
   * is for writes.
   */
  private writePendingMarker(): void {
    // Closed: its descriptors' numbers may be other files' now.
    if (this.closed) return;
    const header = this.takePendingMarker();
    if (!header) return;
    this.writeMarker(header);
  }

  /** Writes a marker alone at the head's tail; resolves (never rejects) once it has landed or failed. */
  private writeMarker(header: Buffer): Promise<void> {
    // A failed journal writes nothing more: a marker would claim writes whose
    // pages the kernel may have dropped (the 50 ms timer, a removal's claim).
    if (this.failure) return Promise.resolve();
    const f = this.head;
    header.writeUInt32LE(f.nonce, NONCE_OFFSET);
    f.markerClaim = Math.max(f.markerClaim, readU64(header, 16));
    const pos = f.tailBytes;
    f.tailBytes += JOURNAL_HEADER_BYTES;
    const prev = f.markerWrite;
    const w = new Promise<void>((resolve, reject) => {
      const bufs = [header];
      fs.writev(f.fd, bufs, pos, (err, writtenBytes) => {
        if (!err && writtenBytes === JOURNAL_HEADER_BYTES) return resolve();
        this.settleWrite(f, bufs, pos, JOURNAL_HEADER_BYTES, err, writtenBytes, resolve, reject);
      });
    });
    const settled = Promise.all([prev, w]).then(
      () => undefined,
      () => undefined,
    );
    f.markerWrite = settled;
    this.pendingWrites.add(w);
    w.then(
      () => this.pendingWrites.delete(w),
      () => this.pendingWrites.delete(w),
    );
    return settled;
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
        if (removeAfter) {
          f.removeHolds++;
          removeAfter.then(
            () => {
              f.removeHolds--;
              this.maybeRemove(f);
            },
            () => undefined,
          );
        } else this.maybeRemove(f);
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
    // Closing: no new write may start on a descriptor about to be closed; the next open removes it.
    if (this.closed) return;
    // Failed: nothing more is written (no claim marker into the head, no
    // unlink). The kernel may have dropped pages it could not write, so the
    // next open must judge every file still there with every marker on disk;
    // the file stays in `files`, so close() closes its descriptor.
    if (this.failure) return;
    if (f === this.head || f.liveBytes > 0 || f.removeHolds > 0) return;
    // Out of the index's set first (durable), then unlinked or renamed: a crash between leaves the
    // file there and unrecorded (replayed, every record destaged), never recorded and gone.
    try {
      this.fileLog?.removing(f.no);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.files.delete(f.no);
    this.removing.add(f);
    let removed!: () => void;
    const removal = new Promise<void>((resolve) => (removed = resolve));
    this.removals.add(removal);
    void removal.then(() => this.removals.delete(removal));
    // Leaves `removing` (no sync takes it any more) and is closed after the
    // syncs that took it, never under one (see writesSettled below).
    // Kept as a spare rather than unlinked while fewer than the bound are
    // (a small file, the head of a short run cut at open, is not worth it).
    // It must fit in the capacity beside the live bytes and the spares (its size is at least its tail; recycleFile checks again with its real size).
    const recycle = this.spares.length + this.recycling < JOURNAL_SPARE_FILES && f.tailBytes >= this.fileBytes / 2 && this.liveBytes + this.spareBytes + f.tailBytes <= this.capacityBytes;
    if (recycle) this.recycling++;
    const closeAfterSyncs = (removeFile: boolean) => {
      this.removing.delete(f);
      const lastSync = this.lastSync;
      void Promise.allSettled(lastSync ? [lastSync] : []).then(() => {
        fs.close(f.fd, () => {
          if (!removeFile) {
            if (recycle) this.recycling--;
            return removed();
          }
          if (recycle) return this.recycleFile(f).finally(() => {
            this.recycling--;
            removed();
          });
          // Failed unlink: the next open finds every record in it destaged (or judges it).
          fs.rm(path.join(this.dir, f.name), { force: true }, () => removed());
        });
      });
    };
    // fdatasync first: the unlink is durable only at the next directory
    // sync, and a power cut before it brings the file back with whatever of
    // its bytes writeback had reached (torn, when its records were all
    // destaged before any FLUSH synced it), while later sync markers claim
    // those records (they are in stripes): the open judged the torn bytes
    // damage to flushed writes and refused to start.
    // A failure fails the journal, as any journal fdatasync's does: the
    // kernel may have dropped the pages it could not write (reporting it
    // once), so the file may come back torn as above, and no later marker
    // may claim it. The file is kept (the next open judges it with every
    // marker on disk), its descriptor closed.
    const remove = () => {
      // Failed since the removal began (another file's write or sync): the
      // file is kept, as above, and only its descriptor closed.
      if (this.failure) return closeAfterSyncs(false);
      // Counts once a group sync's overlapping fdatasync of the file (if any) returned without error.
      this.fdatasyncFile(f, (err) => closeAfterSyncs(!err && !this.failure));
    };
    const before: Promise<unknown>[] = [];
    if (f.markerWrite) before.push(f.markerWrite);
    // Its markers may be all that covers an older file's flushed records
    // (the marker for a file's last records rides on the next file's first
    // append): the claim is written into the head, landed before the file
    // goes. The pending marker, if any, claims markedSeq too: this one
    // replaces it.
    if (f.markerClaim > 0) {
      this.takePendingMarker();
      before.push(this.writeMarker(markerRecord(this.markedSeq)));
    }
    // Writes still running (an append whose records were released before
    // its writev, or a short write's retry, landed) and the sync running now
    // (it took this file as dirty before it went): the descriptor closes
    // after them, never under one. Closed under a write, the rest of a record
    // fails with EBADF, or with the number reused lands in another file;
    // under an fdatasync, the sync fails the journal (EBADF), or with the
    // number reused takes another file's writeback error, which Linux
    // reports once.
    const writesSettled = Promise.allSettled([...this.pendingWrites, ...(this.lastSync ? [this.lastSync] : [])]);
    // A claim that failed to land keeps the file (the journal has failed:
    // the next open judges with every marker still on disk), but not its
    // descriptor: the file is out of `files`, so close() never closes it.
    if (before.length) void Promise.all([...before, writesSettled]).then(() => (this.failure ? closeAfterSyncs(false) : remove()));
    else void writesSettled.then(remove);
  }

  /**
   * Makes a removed file (fdatasynced, closed) a spare: renamed to
   * spareName, then the directory fsynced, and only then offered to a
   * rotation (takeSpare): reused while its rename could still be undone, a
   * power cut could bring it back under its journal name with a newer
   * file's items over its old records (adoptSpares says what the open then
   * does). A failed rename unlinks it as before; a failed directory sync
   * unlinks the spare (the rename may come back undone: the file then
   * returns destaged and synced, as an undone unlink does).
   */
  private async recycleFile(f: JournalFile): Promise<void> {
    const from = path.join(this.dir, f.name);
    const to = path.join(this.dir, spareName(f.no));
    try {
      fs.renameSync(from, to);
    } catch {
      return new Promise<void>((resolve) => fs.rm(from, { force: true }, () => resolve()));
    }
    try {
      await syncDirAsync(this.dir);
    } catch (err) {
      log.warn('journal: a spare file\'s name could not be made durable; removing it', { file: to, err: (err as Error).message });
      return new Promise<void>((resolve) => fs.rm(to, { force: true }, () => resolve()));
    }
    // Closed meanwhile: the next open adopts it.
    if (this.closed || this.failure) return;
    // Appends meanwhile may have left it no room in the capacity.
    let sizeBytes: number;
    try {
      sizeBytes = fs.statSync(to).size;
    } catch {
      return;
    }
    if (this.liveBytes + this.spareBytes + sizeBytes > this.capacityBytes) return new Promise<void>((resolve) => fs.rm(to, { force: true }, () => resolve()));
    this.addSpare(path.basename(to), sizeBytes);
  }

  /**
   * Stops the journal: no append is taken from the call on; syncs already
   * asked for (and any asked for while they run) finish first, so a FLUSH
   * racing the stop is answered by a real fdatasync, never one on a closed
   * (or reused) descriptor, and its marker is written. A clean stop then
   * leaves the last sync's marker behind, made durable: were it lost (or
   * never written), damage to those flushed records before the next start
   * would be judged a crash cut and the records dropped at open.
   */
  close(): Promise<void> {
    // A second call waits for the first.
    this.closeDone ??= this.closeOnce();
    return this.closeDone;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    // Appends waiting for journal space: refused now (JournalClosed), not after their 30 s bound.
    for (const w of this.spaceWaiters.splice(0)) w();
    for (let s = this.lastSync; s; s = this.lastSync === s ? null : this.lastSync) await s.then(noop, noop);
    this.lastSync = null;
    if (this.markerTimer) clearTimeout(this.markerTimer);
    this.markerTimer = null;
    const marker = this.failure ? null : this.takePendingMarker();
    this.closed = true;
    await Promise.allSettled([...this.pendingWrites]);
    // A journal failed before the stop writes nothing more and syncs nothing
    // more (its records may be torn). One failed only by close's own writes
    // (the last sync's marker, then the end: no room or media damage under
    // the head's tail) still syncs every file: the records before them
    // landed, and the stop must make them durable whatever happened to the
    // marker or the end (once skipped: a landed, unflushed write was then
    // lost to a power cut after the stop). Close's marker is written once
    // the appends in flight have settled, so a failure is known to be its
    // own (it claims only writes a sync covered already: written later is
    // as true). A failed marker gets no end after it: the end would follow
    // bytes that may be a partial item, a damaged range the end's claim
    // could make the next open refuse; with no end, they are a torn tail.
    const syncAtClose = !this.failure;
    let endErr: Error | null = null;
    if (syncAtClose && marker) {
      await this.writeMarker(marker);
      endErr = this.failure;
    }
    if (syncAtClose && endErr === null) endErr = this.writeCloseEnd();
    // Every open file, not only the head after close's own marker: the last
    // sync's marker may already have been written by the 50 ms timer or on an
    // append's writev (into the head, or into a file rotation has since left),
    // and nothing has fdatasynced it. One fdatasync per file, once per stop.
    let allSynced = syncAtClose;
    if (syncAtClose) for (const f of [...this.files.values()]) allSynced = (await this.syncClosingMarker(f)) && allSynced;
    if (endErr) {
      log.error(
        allSynced
          ? 'journal: closed without its end marker (a write at close failed); every journal file was fdatasynced, so no landed write is lost; the next start finds no end, as after a crash'
          : 'journal: closed without its end marker (a write at close failed), and an fdatasync at close failed too (logged above): a landed write not flushed may not be durable; the next start finds no end, as after a crash',
        { file: this.head.name, err: endErr.message },
      );
    }
    for (const f of this.files.values()) fs.closeSync(f.fd);
    this.files.clear();
    // Removals begun before `closed` (maybeRemove starts none after): their
    // fdatasync, close and unlink end before close() resolves. None waits on
    // close: each waits only for writes and syncs settled above.
    await Promise.all([...this.removals]);
  }

  /**
   * Ends the head at its tail, after every item of it (appends and markers
   * have all landed: close waits for them), as a rotation ends the file it
   * leaves, so the next open and fsck see a clean end, not a torn tail: a
   * head reused from a spare holds the old file's bytes past its tail, and
   * without an end they were cut at every open and counted by fsck as a
   * torn tail after a clean stop. The next open never appends after it (it
   * starts a fresh head). Durable with the fdatasync close gives every open
   * file (syncClosingMarker). It claims markedSeq, true already, so were a
   * power cut to land it without records before it (writeback keeps no
   * order), it covers none of them: the scan cuts them as a crash's torn
   * tail, which they are (a stop that did not complete). A failure is
   * latched and logged, not thrown, as syncClosingMarker's: no flushed write
   * depends on the end, only the clean verdict does. Returns the failure
   * (null: the end landed), for close to report once its syncs are done.
   */
  private writeCloseEnd(): Error | null {
    const f = this.head;
    f.markerClaim = Math.max(f.markerClaim, this.markedSeq);
    try {
      this.writeItemSync(f, endRecord(this.markedSeq), false);
      return null;
    } catch (err) {
      log.error('journal: the end marker written at close failed; the next start will cut the head file as a torn tail', { file: f.name, err: (err as Error).message });
      return err as Error;
    }
  }

  /**
   * fdatasync of a file at close, after its markers (and its name, if no sync
   * has made it durable yet). A failure is logged and latched, not thrown: every
   * write a FLUSH covered was made durable by that FLUSH's own sync; only
   * the marker's cover may be lost. Returns whether it succeeded.
   */
  private async syncClosingMarker(f: JournalFile): Promise<boolean> {
    try {
      await new Promise<void>((resolve, reject) => fs.fdatasync(f.fd, (err) => (err ? reject(err) : resolve())));
      if (!f.named) {
        await syncNewEntry(path.join(this.dir, f.name), f.fd);
        f.named = true;
        this.fileLog?.named(f.no);
      }
      return true;
    } catch (err) {
      this.fail(err as Error);
      log.error('journal: the sync marker written at close may not be durable', { err: (err as Error).message });
      return false;
    }
  }
}

function noop(): void {}

/** `bufs` without their first `skipBytes` bytes (views, no copies). */
function buffersAfter(bufs: Buffer[], skipBytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (skipBytes >= b.length) {
      skipBytes -= b.length;
      continue;
    }
    out.push(skipBytes > 0 ? b.subarray(skipBytes) : b);
    skipBytes = 0;
  }
  return out;
}

/**
 * A journal write that landed only in part: `writtenBytes` of `expectedBytes`
 * at `offsetBytes` of `file`, then `cause` (the error that stopped the rest,
 * e.g. ENOSPC) or no progress at all. Fails the journal like any write error.
 */
export class JournalShortWrite extends StorageError {
  override name = 'JournalShortWrite';
  constructor(
    readonly file: string,
    readonly offsetBytes: number,
    readonly writtenBytes: number,
    readonly expectedBytes: number,
    cause: Error | null,
  ) {
    super(
      `short write to journal file ${file}: ${writtenBytes} of ${expectedBytes} bytes landed at byte offset ${offsetBytes}, ` +
        (cause ? `then ${cause.message}` : 'then the write made no progress'),
      cause ? { cause } : undefined,
    );
  }
}

/** The journal is closed (or closing): it takes no more appends, and once closed no syncs. */
export class JournalClosed extends StorageError {
  override name = 'JournalClosed';
  constructor() {
    super('the journal is closed');
  }
}

/** A file's nonce: random, never 0 (the nonce of files written before nonces). */
function newFileNonce(): number {
  return randomBytes(4).readUInt32LE(0) || 1;
}

/** The name a destaged journal file `no` takes as a spare (SPARE_RE). */
function spareName(no: number): string {
  return `journal-spare-${String(no).padStart(10, '0')}.log`;
}

/** fsync of directory `dir` (by path, through fs.promises like syncNewEntry, so the power-loss model sees it). */
async function syncDirAsync(dir: string): Promise<void> {
  const h = await fs.promises.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** The name of journal file `no` whose nonce is `nonce` (FILE_RE). */
function fileName(no: number, nonce: number): string {
  return `journal-${String(no).padStart(10, '0')}-${nonce.toString(16).padStart(8, '0')}.log`;
}

/**
 * Two journal files with one number (only by hand: a number is never
 * reused, a name never changes): which holds the journal's records cannot
 * be told, so neither is opened, and nothing is changed.
 */
export class JournalDuplicateFile extends StorageError {
  override name = 'JournalDuplicateFile';
  constructor(
    readonly dir: string,
    readonly first: string,
    readonly second: string,
  ) {
    super(`journal directory ${dir} holds two files numbered alike (${first} and ${second}); nothing was changed: move the one that is not this journal's away`);
  }
}

function writeU64(buf: Buffer, v: number, pos: number): void {
  buf.writeUInt32LE(v >>> 0, pos);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), pos + 4);
}

function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32LE(pos) + buf.readUInt32LE(pos + 4) * 0x100000000;
}

/** A sync marker record claiming every write numbered up to `syncedSeq` durable. */
function markerRecord(syncedSeq: number): Buffer {
  return seqRecord(MARKER_TYPE, syncedSeq);
}

/** A sync marker that ends its file (END_FLAG_OFFSET), claiming `syncedSeq`: a rotation's, or a clean close's in the head. */
function endRecord(syncedSeq: number): Buffer {
  const end = markerRecord(syncedSeq);
  end.writeUInt8(1, END_FLAG_OFFSET);
  end.writeUInt32LE(crc32c(end.subarray(0, CRC_OFFSET)), CRC_OFFSET);
  return end;
}

/** A header-only item: a sync marker claiming `seq`, with a seq fence when `fenceSeq` is given. */
function seqRecord(type: typeof MARKER_TYPE, seq: number, fenceSeq = 0): Buffer {
  const header = Buffer.alloc(JOURNAL_HEADER_BYTES);
  header.writeUInt32LE(JOURNAL_MAGIC, 0);
  header.writeUInt8(VERSION, 4);
  header.writeUInt8(type, 5);
  writeU64(header, seq, 16);
  writeU64(header, fenceSeq, 24);
  header.writeUInt32LE(crc32c(header.subarray(0, CRC_OFFSET)), CRC_OFFSET);
  return header;
}

/** A sync marker found by a scan: every write numbered up to syncedSeq was durable when it was written. */
interface SyncMarker {
  posBytes: number;
  syncedSeq: number;
  /** A rotation's seq fence carried in the marker (0: none). */
  fenceSeq?: number;
  /** The file's end (END_FLAG_OFFSET): what follows is a recycled file's old bytes. */
  endsFile?: true;
}

/** A seq fence found by a scan: every write record after it in its file numbers above fenceSeq. */
interface SeqFence {
  posBytes: number;
  fenceSeq: number;
}

/**
 * Parses and verifies one write record or sync marker of a file whose nonce
 * is `nonce` (null: any); null when it is torn, corrupt,
 * or another file's (an image inside a payload).
 */
function parseItem(bytes: Buffer, pos: number, nonce: number | null): Omit<JournalExtent, 'fileNo'> | SyncMarker | SeqFence | null {
  if (bytes.readUInt32LE(pos) !== JOURNAL_MAGIC || bytes.readUInt8(pos + 4) !== VERSION) return null;
  if (nonce !== null && bytes.readUInt32LE(pos + NONCE_OFFSET) !== nonce) return null;
  const itemType = bytes.readUInt8(pos + 5);
  if (itemType === MARKER_TYPE || itemType === FENCE_TYPE) {
    if (crc32c(bytes.subarray(pos, pos + CRC_OFFSET)) !== bytes.readUInt32LE(pos + CRC_OFFSET)) return null;
    const seq = readU64(bytes, pos + 16);
    if (itemType === FENCE_TYPE) return { posBytes: pos, fenceSeq: seq };
    const fenceSeq = readU64(bytes, pos + 24);
    const m: SyncMarker = fenceSeq > 0 ? { posBytes: pos, syncedSeq: seq, fenceSeq } : { posBytes: pos, syncedSeq: seq };
    if (bytes.readUInt8(pos + END_FLAG_OFFSET) === 1) m.endsFile = true;
    return m;
  }
  const type = bytes.readUInt8(pos + 5) as RecordType;
  if (type !== RecordType.Write && type !== RecordType.Zero) return null;
  const lengthBytes = bytes.readUInt32LE(pos + 12);
  const payloadBytes = type === RecordType.Write ? lengthBytes : 0;
  if (pos + JOURNAL_HEADER_BYTES + payloadBytes > bytes.length) return null;
  let crc = crc32c(bytes.subarray(pos, pos + CRC_OFFSET));
  if (payloadBytes) crc = crc32c(bytes.subarray(pos + JOURNAL_HEADER_BYTES, pos + JOURNAL_HEADER_BYTES + payloadBytes), crc);
  if (crc !== bytes.readUInt32LE(pos + CRC_OFFSET)) return null;
  // No payload copy here: a scan of every file is held at once by
  // Journal.open (judgeJournal needs them all); open copies the payloads it
  // replays from a second read of each file.
  return {
    seq: readU64(bytes, pos + 16),
    type,
    volumeId: bytes.readUInt32LE(pos + 8),
    offsetBytes: readU64(bytes, pos + 24),
    lengthBytes,
    data: null,
    recordBytes: JOURNAL_HEADER_BYTES + payloadBytes,
  };
}

/** Where a journal file's bytes fail to parse, up to the next intact record. */
export interface JournalDamage {
  offsetBytes: number;
  lengthBytes: number;
}

export interface JournalScan {
  /** Intact write records in file order (each verified by its CRC; data is always null: the payload stays in the file). */
  records: { posBytes: number; rec: Omit<JournalExtent, 'fileNo'> }[];
  /** Intact sync markers in file order (those inside a damaged range or a torn tail too: their claims stand). */
  markers: SyncMarker[];
  /** Intact seq fences in file order (a rotation's first item). */
  fences: SeqFence[];
  /** Ranges that fail to parse with an intact record or marker after them (judgeJournal says what they are). */
  damaged: JournalDamage[];
  /** Where the intact records end; bytes after it are a torn tail (nothing intact follows in this file). */
  endBytes: number;
  lengthBytes: number;
  /** The file has its end marker (END_FLAG_OFFSET) at endBytes - 40: the bytes after it are stale, no torn tail. */
  ended: boolean;
  /**
   * The nonce the file's items were taken with: its name's; in a file named
   * before nonces, its first item's, or null (its first item damaged: any
   * nonce taken, as builds before nonces did).
   */
  nonce: number | null;
}

/**
 * The nonce to take items with in a file named before nonces (its name
 * carries none): its first item's when that verifies (0 in files of builds
 * before nonces; a build between nonces in items and nonces in names wrote
 * random ones there, under these names), else null: any, as builds before
 * nonces took them (an image inside a payload there can still pass for an
 * item: those files go once destaged, and no file is named so any more).
 * The nonce is outside the CRC, so the first item verifies with a bit of it
 * flipped: when the item right after it (where its verified length ends,
 * never inside a payload) verifies with another nonce, one of the two is
 * damaged there and which cannot be told, so null too. Taking the first's
 * made every later item "another file's": the flushed writes after it a
 * torn tail its own (rejected) markers no longer claimed, cut at open with
 * no refusal, where builds before nonces, which never read those bytes,
 * replayed them.
 */
function legacyFileNonce(bytes: Buffer): number | null {
  const first = bytes.length >= JOURNAL_HEADER_BYTES ? parseItem(bytes, 0, null) : null;
  if (!first) return null;
  const nonce = bytes.readUInt32LE(NONCE_OFFSET);
  const secondAt = 'recordBytes' in first ? first.recordBytes : JOURNAL_HEADER_BYTES;
  if (secondAt + JOURNAL_HEADER_BYTES <= bytes.length && parseItem(bytes, secondAt, null) && bytes.readUInt32LE(secondAt + NONCE_OFFSET) !== nonce) return null;
  return nonce;
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
 * `nameNonce` is the nonce the file's name carries (parseJournalFileName;
 * null: named before nonces, see legacyFileNonce): only items carrying it
 * are taken, wherever the damage is, the first item included.
 */
export function scanJournalBytes(bytes: Buffer, nameNonce: number | null): JournalScan {
  const records: JournalScan['records'] = [];
  const markers: SyncMarker[] = [];
  const fences: SeqFence[] = [];
  const damaged: JournalDamage[] = [];
  const nonce = nameNonce ?? legacyFileNonce(bytes);
  let pos = 0;
  let lastSeq = 0;
  // The highest seq fence so far in this file: every write record after it numbers above it.
  let fenceSeq = 0;
  let ended = false;
  while (pos + JOURNAL_HEADER_BYTES <= bytes.length) {
    let item = parseItem(bytes, pos, nonce);
    // A write record numbered at or below the file's fence is no item of
    // this file: the old bytes of a recycled file whose fresh nonce is the
    // old one (a 2^-32 chance per reuse), the new tail landing on an old
    // record's start. Taken, the old records were scanned, counted and
    // judged as this file's (an old end marker after them even read as a
    // clean stop). Passed over, they are a torn tail (or, with a real item
    // after them, a damaged range) as under any other nonce.
    if (item && 'seq' in item && item.seq <= fenceSeq) item = null;
    if (item && 'syncedSeq' in item) {
      markers.push(item);
      if (item.fenceSeq) {
        fences.push({ posBytes: pos, fenceSeq: item.fenceSeq });
        lastSeq = Math.max(lastSeq, item.fenceSeq);
        fenceSeq = Math.max(fenceSeq, item.fenceSeq);
      }
      pos += JOURNAL_HEADER_BYTES;
      if (item.endsFile) {
        ended = true;
        break;
      }
      continue;
    }
    if (item && 'fenceSeq' in item) {
      fences.push(item);
      lastSeq = Math.max(lastSeq, item.fenceSeq);
      fenceSeq = Math.max(fenceSeq, item.fenceSeq);
      pos += JOURNAL_HEADER_BYTES;
      continue;
    }
    if (item) {
      records.push({ posBytes: pos, rec: item });
      lastSeq = Math.max(lastSeq, item.seq);
      pos += item.recordBytes;
      continue;
    }
    const next = nextIntactItem(bytes, pos + 1, lastSeq, markers, nonce);
    if (next < 0) break;
    damaged.push({ offsetBytes: pos, lengthBytes: next - pos });
    pos = next;
  }
  return { records, markers, fences, damaged, endBytes: pos, lengthBytes: bytes.length, ended, nonce };
}

const MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(JOURNAL_MAGIC, 0);
  return b;
})();

/**
 * The offset of the next write record or sync marker from `fromBytes` on
 * that verifies, carries the file's `nonce` and numbers above `afterSeq`, or
 * -1. The search runs through bytes that may be a payload: an image of an
 * item inside it (another node's journal, a build before nonces) carries
 * another nonce and is passed over (NONCE_OFFSET). Appends number records
 * in file order, so a real successor has a higher seq than the last intact
 * record before the damage; a marker claiming no more than that says nothing of the damage.
 * It still claims the writes it covers, in older files or earlier in this
 * one (the marker of a sync that finished after a write now cut rides on a
 * later write), so each one passed over is added to `passedMarkers`: left
 * out, damage to a flushed write it alone covered was judged a crash cut.
 * (One that is an image inside torn bytes can only make judgeJournal refuse
 * more, never cut more.)
 */
function nextIntactItem(bytes: Buffer, fromBytes: number, afterSeq: number, passedMarkers: SyncMarker[], nonce: number | null): number {
  for (let at = bytes.indexOf(MAGIC_BYTES, fromBytes); at >= 0 && at + JOURNAL_HEADER_BYTES <= bytes.length; at = bytes.indexOf(MAGIC_BYTES, at + 1)) {
    const item = parseItem(bytes, at, nonce);
    if (item && ('syncedSeq' in item ? item.syncedSeq : 'fenceSeq' in item ? item.fenceSeq : item.seq) > afterSeq) return at;
    if (item && 'syncedSeq' in item) passedMarkers.push(item);
  }
  return -1;
}

/** What a journal file's problems are, judged against the whole journal (judgeJournal). */
export interface JournalFileVerdict {
  /** Damage a later sync marker covers: flushed writes are in it. The journal refuses to open. */
  damaged: JournalDamage[];
  /**
   * Where the file is cut, or null: a torn tail, or damage in the middle
   * that no later marker covers (writes in flight when a crash cut them; the
   * intact records after it in this file were not flushed either).
   */
  cutAtBytes: number | null;
}

/**
 * Judges every problem of every journal file (scans in file order). A range
 * that fails to parse holds the writes numbered between the last intact
 * write before it (P, across files) and the first after it (N). None (N =
 * P + 1, e.g. a lost sync marker): harmless, passed over. Otherwise, if a
 * sync marker after it claims a write above P durable, that write was
 * flushed, and the bytes are damaged, not cut: refused (salvage decides).
 * If none does, no FLUSH covered them (a sync awaits every earlier append's
 * writev and its marker follows it), so they are a crash's cut: the file is
 * cut there, as a torn tail always was. Journals written before markers
 * existed have none, so their damage is judged a cut, as it then was. When
 * the earlier files are destaged and gone, the file's first item bounds P:
 * a rotation's seq fence, or the marker written at open. Files without
 * either (written before fences existed) have P = 0 there, so any later
 * marker refuses a damaged first record.
 */
export function judgeJournal(scans: JournalScan[]): JournalFileVerdict[] {
  // Per file, the highest claim of the markers in later files, and the first write seq after it.
  const laterClaim = new Array<number>(scans.length + 1).fill(0);
  const laterFirstSeq = new Array<number>(scans.length + 1).fill(Infinity);
  for (let i = scans.length - 1; i >= 0; i--) {
    // Loops, not Math.max(...markers): a file holds up to one marker per
    // record (a FLUSH after each 40-byte zero write: 838,000 in 64 MiB), and
    // spreading more than ~120,000 arguments throws RangeError: the open
    // failed and fsck crashed on an intact journal.
    let claim = laterClaim[i + 1]!;
    for (const m of scans[i]!.markers) claim = Math.max(claim, m.syncedSeq);
    laterClaim[i] = claim;
    laterFirstSeq[i] = scans[i]!.records[0]?.rec.seq ?? laterFirstSeq[i + 1]!;
  }
  let lastSeq = 0;
  return scans.map((scan, i) => {
    const verdict: JournalFileVerdict = { damaged: [], cutAtBytes: null };
    const problems = [...scan.damaged];
    if (!scan.ended && scan.endBytes < scan.lengthBytes) problems.push({ offsetBytes: scan.endBytes, lengthBytes: scan.lengthBytes - scan.endBytes });
    for (const d of problems) {
      let p = lastSeq;
      for (const r of scan.records) if (r.posBytes < d.offsetBytes) p = Math.max(p, r.rec.seq);
      // A marker before the range was written after every write it claims:
      // none of them is in the range (a lower bound for P when the writes
      // before it are in files removed since).
      for (const m of scan.markers) if (m.posBytes < d.offsetBytes) p = Math.max(p, m.syncedSeq);
      // Likewise a fence: every write after it numbers above its seq.
      for (const fe of scan.fences) if (fe.posBytes < d.offsetBytes) p = Math.max(p, fe.fenceSeq);
      const n = scan.records.find((r) => r.posBytes > d.offsetBytes)?.rec.seq ?? laterFirstSeq[i + 1]!;
      if (n === p + 1) continue;
      let claim = laterClaim[i + 1]!;
      for (const m of scan.markers) if (m.posBytes > d.offsetBytes) claim = Math.max(claim, m.syncedSeq);
      if (claim > p) {
        verdict.damaged.push(d);
        continue;
      }
      verdict.cutAtBytes = d.offsetBytes;
      break;
    }
    for (const r of scan.records) if (verdict.cutAtBytes === null || r.posBytes < verdict.cutAtBytes) lastSeq = Math.max(lastSeq, r.rec.seq);
    for (const m of scan.markers) if (verdict.cutAtBytes === null || m.posBytes < verdict.cutAtBytes) lastSeq = Math.max(lastSeq, m.syncedSeq);
    for (const fe of scan.fences) if (verdict.cutAtBytes === null || fe.posBytes < verdict.cutAtBytes) lastSeq = Math.max(lastSeq, fe.fenceSeq);
    return verdict;
  });
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

  static of(file: string, scan: JournalScan, verdict: JournalFileVerdict): JournalCorrupt {
    const first = verdict.damaged[0]!;
    return new JournalCorrupt(file, first.offsetBytes, verdict.damaged.length, scan.records.filter((r) => r.posBytes > first.offsetBytes).length);
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

/** Scans one journal file by path, with the nonce its name says (scanJournalBytes). */
export function scanJournalFile(file: string): JournalScan {
  const parsed = parseJournalFileName(path.basename(file));
  if (!parsed) throw new StorageError(`${file} is not named as a journal file`);
  return scanJournalBytes(fs.readFileSync(file), parsed.nonce);
}

function damageOf(file: string, bytes: Buffer, scan: JournalScan, verdict: JournalFileVerdict): JournalFileDamage[] {
  return verdict.damaged.map((d) => {
    const out: JournalFileDamage = { file, offsetBytes: d.offsetBytes, lengthBytes: d.lengthBytes, intactRecordsAfter: scan.records.filter((r) => r.posBytes > d.offsetBytes).length };
    if (bytes.readUInt32LE(d.offsetBytes) === JOURNAL_MAGIC) {
      out.claimed = { volumeId: bytes.readUInt32LE(d.offsetBytes + 8), offsetBytes: readU64(bytes, d.offsetBytes + 24), lengthBytes: bytes.readUInt32LE(d.offsetBytes + 12), seq: readU64(bytes, d.offsetBytes + 16) };
    }
    return out;
  });
}

/** Every journal file of `dir` in order, read and scanned, with judgeJournal's verdicts. */
function readJournalDir(dir: string): { file: string; bytes: Buffer; scan: JournalScan; verdict: JournalFileVerdict }[] {
  if (!fs.existsSync(dir)) return [];
  const files = journalFileEntries(dir).map(({ name, nonce }) => {
    const file = path.join(dir, name);
    const bytes = fs.readFileSync(file);
    return { file, bytes, scan: scanJournalBytes(bytes, nonce) };
  });
  const verdicts = judgeJournal(files.map((f) => f.scan));
  return files.map((f, i) => ({ ...f, verdict: verdicts[i]! }));
}

/**
 * Read-only check of a journal directory (fsck): damage that holds flushed
 * writes (what makes the journal refuse to open), and the files a start
 * would cut (torn tails and crash cuts). Changes nothing.
 */
export function checkJournalDir(dir: string): { filesScanned: number; recordsScanned: number; tornTails: number; damaged: JournalFileDamage[] } {
  const out = { filesScanned: 0, recordsScanned: 0, tornTails: 0, damaged: [] as JournalFileDamage[] };
  for (const { file, bytes, scan, verdict } of readJournalDir(dir)) {
    out.filesScanned++;
    out.recordsScanned += scan.records.length;
    if (verdict.cutAtBytes !== null || (!scan.ended && scan.endBytes < bytes.length)) out.tornTails++;
    out.damaged.push(...damageOf(file, bytes, scan, verdict));
  }
  return out;
}

/**
 * Operator salvage (daemon stopped): each journal file with damage that
 * holds flushed writes is rewritten with its intact records (and sync
 * markers) only, in their order and with
 * their seqs (replay order and the destagedSeq comparison are unchanged),
 * through a temporary file that is fsynced and renamed over the original,
 * then the directory is fsynced. The damaged records' writes are lost: their
 * ranges read what the stripe (or an older journal record) holds. Returns
 * what was dropped.
 */
export function salvageJournalDir(dir: string): { filesRewritten: number; recordsKept: number; dropped: JournalFileDamage[] } {
  const out = { filesRewritten: 0, recordsKept: 0, dropped: [] as JournalFileDamage[] };
  for (const { file, bytes, scan, verdict } of readJournalDir(dir)) {
    if (verdict.damaged.length === 0) continue;
    out.dropped.push(...damageOf(file, bytes, scan, verdict));
    const items = [
      ...scan.records.map(({ posBytes, rec }) => ({ posBytes, bytes: rec.recordBytes })),
      ...scan.markers.map(({ posBytes }) => ({ posBytes, bytes: JOURNAL_HEADER_BYTES })),
      // A fence carried in a marker is kept with the marker.
      ...scan.fences.filter((fe) => !scan.markers.some((m) => m.posBytes === fe.posBytes)).map(({ posBytes }) => ({ posBytes, bytes: JOURNAL_HEADER_BYTES })),
    ].sort((a, b) => a.posBytes - b.posBytes);
    const kept = Buffer.concat(items.map((it) => bytes.subarray(it.posBytes, it.posBytes + it.bytes)));
    // Not matching FILE_RE: a crash before the rename leaves the original
    // in place and this file ignored (a second salvage overwrites it).
    const tmp = `${file}.salvage`;
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    try {
      for (let done = 0; done < kept.length; ) {
        const n = fs.writeSync(fd, kept, done, kept.length - done, done);
        // A write that makes no progress would loop for ever.
        if (n <= 0) throw new JournalShortWrite(path.basename(tmp), 0, done, kept.length, null);
        done += n;
      }
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
