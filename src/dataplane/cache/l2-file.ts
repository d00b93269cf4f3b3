// L2: a fixed-size file on the hot pool, mmap'd (@riaskov/mmap-io), used as a ring log of
// self-describing records (magic, file id, sequence, lengths, CRC32C); a clean reopen rescans it.
//
// Layout: a 4 KiB superblock, then records aligned to 512 bytes. Records never straddle a
// 1 GiB mapping segment (a Node Buffer is limited in size, so large files are mapped in
// pieces). Eviction is FIFO over the ring: writing at the head drops whatever it overlaps.
// Invalidation rewrites a record's magic to DEAD in place, so it survives a restart.
// After an unclean stop the superblock's clean flag is 0 and the whole file is discarded:
// an invalidation that reached the page cache but not the disk could otherwise resurrect
// stale bytes after a power loss.
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import mmapModule from '@riaskov/mmap-io';
import { InvalidCacheConfigError } from './errors.js';

// The addon is CommonJS; under NodeNext its default import is module.exports.
const mmap = mmapModule as unknown as typeof import('@riaskov/mmap-io').default;

export const L2_SUPERBLOCK_BYTES = 4096;
export const L2_RECORD_ALIGN_BYTES = 512;
export const L2_HEADER_BYTES = 40;
export const L2_MAX_KEY_BYTES = 1024;
const SEGMENT_BYTES = 1 << 30;
const MIN_CAPACITY_BYTES = L2_SUPERBLOCK_BYTES + 16 * L2_RECORD_ALIGN_BYTES;
const ZERO_FILL_CHUNK_BYTES = 1 << 20;

const SUPER_MAGIC = 0x4c32_5342; // "BS2L" little endian
const SUPER_VERSION = 1;
const SUPER_FLAG_CLEAN = 1;
// Superblock: magic u32 | version u32 | flags u32 | align u32 | fileId 8 | capacity u64 | crc u32 @32
const SUPER_CRC_OFFSET = 32;

const RECORD_LIVE = 0x4c32_5243; // "CR2L"
const RECORD_DEAD = 0x4c32_4444; // "DD2L"
// Record header: magic u32 @0 | crc32c u32 @4 over [8, end of value) | fileId 8 @8 |
// seq lo u32 @16 | seq hi u32 @20 | keyBytes u16 @24 | flags u16 @26 |
// storedBytes u32 @28 | rawBytes u32 @32 | recordBytes u32 @36 | key | value
export const L2_FLAG_LZ4 = 1;

export interface L2Entry {
  stored: Buffer;
  rawLengthBytes: number;
  lz4: boolean;
}

interface RecordRef {
  key: string;
  /** Unique per record: a header with this seq at offset is this record, not a newer one. */
  seq: number;
  offset: number;
  recordBytes: number;
  storedBytes: number;
  keyBytes: number;
  live: boolean;
}

export interface L2Stats {
  hits: number;
  misses: number;
  evictions: number;
  corruptions: number;
  entries: number;
  bytes: number;
  capacityBytes: number;
  recoveredEntries: number;
}

const alignUp = (n: number) => Math.ceil(n / L2_RECORD_ALIGN_BYTES) * L2_RECORD_ALIGN_BYTES;

export class L2File {
  readonly path: string;
  readonly capacityBytes: number;
  private segments: Buffer[] = [];
  private fileId = Buffer.alloc(8);
  private readonly index = new Map<string, RecordRef>();
  // Records in ring order from the head (oldest first); bounded by capacity / 512.
  private ring: RecordRef[] = [];
  private ringStart = 0;
  private headOffset = L2_SUPERBLOCK_BYTES;
  private nextSeq = 1;
  private liveBytes = 0;
  private isOpen = false;
  private counters = { hits: 0, misses: 0, evictions: 0, corruptions: 0, recoveredEntries: 0 };

  constructor(path: string, capacityBytes: number) {
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < MIN_CAPACITY_BYTES) {
      throw new InvalidCacheConfigError(`l2.capacityBytes must be an integer >= ${MIN_CAPACITY_BYTES}`);
    }
    this.path = path;
    // Whole pages, so every segment maps at a page-aligned offset and length.
    this.capacityBytes = Math.floor(capacityBytes / mmap.PAGESIZE) * mmap.PAGESIZE;
  }

  /** Maps the file; recovers its records if it was closed cleanly, else starts empty. */
  open(): void {
    if (this.isOpen) return;
    let fd: number;
    try {
      fd = openSync(this.path, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      fd = openSync(this.path, 'w+');
    }
    try {
      const sizeBytes = fstatSync(fd).size;
      let created = false;
      if (sizeBytes !== this.capacityBytes) {
        // New or resized: zero-fill so later page faults never hit ENOSPC (SIGBUS on mmap).
        ftruncateSync(fd, 0);
        const zeros = Buffer.alloc(Math.min(ZERO_FILL_CHUNK_BYTES, this.capacityBytes));
        try {
          for (let pos = 0; pos < this.capacityBytes; pos += zeros.length) {
            writeSync(fd, zeros, 0, Math.min(zeros.length, this.capacityBytes - pos), pos);
          }
        } catch (err) {
          // No room for it (ENOSPC): give back what was filled, the pool's other users (the journal) need it.
          ftruncateSync(fd, 0);
          throw err;
        }
        created = true;
      }
      const prot = mmap.PROT_READ | mmap.PROT_WRITE;
      this.segments = [];
      for (let start = 0; start < this.capacityBytes; start += SEGMENT_BYTES) {
        const len = Math.min(SEGMENT_BYTES, this.capacityBytes - start);
        this.segments.push(mmap.map(len, prot as 3, mmap.MAP_SHARED, fd, start, mmap.MADV_RANDOM));
      }
      if (created || !this.readSuperblock()) this.format();
      else this.recover();
    } finally {
      closeSync(fd);
    }
    // Mark unclean before any change; close() sets the flag again after msync.
    this.writeSuperblock(false);
    mmap.sync(this.segments[0]!, 0, L2_SUPERBLOCK_BYTES, true);
    this.isOpen = true;
  }

  close(): void {
    if (!this.isOpen) return;
    for (const seg of this.segments) mmap.sync(seg, true);
    this.writeSuperblock(true);
    mmap.sync(this.segments[0]!, 0, L2_SUPERBLOCK_BYTES, true);
    this.isOpen = false;
    // The mappings go away when the Buffers are collected; drop every reference to them.
    this.segments = [];
    this.index.clear();
    this.ring = [];
    this.ringStart = 0;
    this.liveBytes = 0;
  }

  get opened(): boolean {
    return this.isOpen;
  }

  has(key: string): boolean {
    return this.index.has(key);
  }

  keys(): IterableIterator<string> {
    return this.index.keys();
  }

  /** Returns a private copy of the stored bytes, or undefined on a miss or a failed check. */
  get(key: string): L2Entry | undefined {
    const ref = this.index.get(key);
    if (ref === undefined) {
      this.counters.misses++;
      return undefined;
    }
    const seg = this.segments[Math.floor(ref.offset / SEGMENT_BYTES)]!;
    const at = ref.offset % SEGMENT_BYTES;
    if (!this.verify(seg, at, ref)) {
      // Never return bytes that fail their checksum: drop the record and report a miss.
      this.counters.corruptions++;
      this.counters.misses++;
      this.dropRef(ref, false);
      return undefined;
    }
    this.counters.hits++;
    const valueAt = at + L2_HEADER_BYTES + ref.keyBytes;
    const stored = Buffer.allocUnsafe(ref.storedBytes);
    seg.copy(stored, 0, valueAt, valueAt + ref.storedBytes);
    return { stored, rawLengthBytes: seg.readUInt32LE(at + 32), lz4: (seg.readUInt16LE(at + 26) & L2_FLAG_LZ4) !== 0 };
  }

  /** Appends a record at the head; returns false when it can never fit. */
  put(key: string, stored: Buffer, rawLengthBytes: number, lz4: boolean): boolean {
    const keyBytes = Buffer.byteLength(key, 'utf8');
    if (keyBytes > L2_MAX_KEY_BYTES) return false;
    const recordBytes = alignUp(L2_HEADER_BYTES + keyBytes + stored.length);
    if (recordBytes > Math.min(SEGMENT_BYTES, this.capacityBytes - L2_SUPERBLOCK_BYTES) / 2) return false;
    const old = this.index.get(key);
    if (old !== undefined) this.dropRef(old, true);
    const offset = this.allocate(recordBytes);
    const seg = this.segments[Math.floor(offset / SEGMENT_BYTES)]!;
    const at = offset % SEGMENT_BYTES;
    const seq = this.nextSeq++;
    this.fileId.copy(seg, at + 8);
    seg.writeUInt32LE(seq >>> 0, at + 16);
    seg.writeUInt32LE(Math.floor(seq / 4294967296), at + 20);
    seg.writeUInt16LE(keyBytes, at + 24);
    seg.writeUInt16LE(lz4 ? L2_FLAG_LZ4 : 0, at + 26);
    seg.writeUInt32LE(stored.length, at + 28);
    seg.writeUInt32LE(rawLengthBytes, at + 32);
    seg.writeUInt32LE(recordBytes, at + 36);
    seg.write(key, at + L2_HEADER_BYTES, keyBytes, 'utf8');
    stored.copy(seg, at + L2_HEADER_BYTES + keyBytes);
    seg.writeUInt32LE(crc32c(seg.subarray(at + 8, at + L2_HEADER_BYTES + keyBytes + stored.length)), at + 4);
    // The magic goes last: a half-written record never looks live.
    seg.writeUInt32LE(RECORD_LIVE, at);
    const ref: RecordRef = { key, seq, offset, recordBytes, storedBytes: stored.length, keyBytes, live: true };
    this.index.set(key, ref);
    this.ring.push(ref);
    this.liveBytes += stored.length;
    return true;
  }

  delete(key: string): boolean {
    const ref = this.index.get(key);
    if (ref === undefined) return false;
    this.dropRef(ref, true);
    return true;
  }

  stats(): L2Stats {
    return {
      ...this.counters,
      entries: this.index.size,
      bytes: this.liveBytes,
      capacityBytes: this.capacityBytes,
    };
  }

  private dropRef(ref: RecordRef, markDead: boolean): void {
    if (!ref.live) return;
    ref.live = false;
    this.index.delete(ref.key);
    this.liveBytes -= ref.storedBytes;
    if (markDead) {
      const seg = this.segments[Math.floor(ref.offset / SEGMENT_BYTES)]!;
      seg.writeUInt32LE(RECORD_DEAD, ref.offset % SEGMENT_BYTES);
    }
  }

  private verify(seg: Buffer, at: number, ref: RecordRef): boolean {
    if (seg.readUInt32LE(at) !== RECORD_LIVE) return false;
    if (seg.readUInt32LE(at + 36) !== ref.recordBytes || seg.readUInt32LE(at + 28) !== ref.storedBytes) return false;
    if (seg.readUInt16LE(at + 24) !== ref.keyBytes) return false;
    if (seg.readUInt32LE(at + 16) !== ref.seq % 4294967296 || seg.readUInt32LE(at + 20) !== Math.floor(ref.seq / 4294967296)) {
      return false;
    }
    // The CRC covers the key bytes too, so a record that passes is this key's record.
    const end = at + L2_HEADER_BYTES + ref.keyBytes + ref.storedBytes;
    return crc32c(seg.subarray(at + 8, end)) === seg.readUInt32LE(at + 4);
  }

  private segmentEnd(offset: number): number {
    return Math.min((Math.floor(offset / SEGMENT_BYTES) + 1) * SEGMENT_BYTES, this.capacityBytes);
  }

  /** Drops ring records (oldest first) whose start lies in [from, to). */
  private consume(from: number, to: number): void {
    while (this.ringStart < this.ring.length) {
      const ref = this.ring[this.ringStart]!;
      if (ref.offset < from || ref.offset >= to) break;
      this.ringStart++;
      if (ref.live) {
        this.counters.evictions++;
        // Marked DEAD on disk too: a record in the tail a wrap skips is not
        // overwritten, and left LIVE a restart would bring it back after a
        // later put or invalidation of its key found nothing to kill.
        this.dropRef(ref, true);
      }
    }
    if (this.ringStart > 1024 && this.ringStart * 2 > this.ring.length) {
      this.ring = this.ring.slice(this.ringStart);
      this.ringStart = 0;
    }
  }

  private allocate(recordBytes: number): number {
    let start = this.headOffset;
    const end = this.segmentEnd(start);
    if (start + recordBytes > end) {
      this.consume(start, end);
      start = end >= this.capacityBytes ? L2_SUPERBLOCK_BYTES : end;
    }
    this.consume(start, start + recordBytes);
    this.headOffset = start + recordBytes;
    return start;
  }

  private format(): void {
    this.fileId = randomBytes(8);
    this.index.clear();
    this.ring = [];
    this.ringStart = 0;
    this.headOffset = L2_SUPERBLOCK_BYTES;
    this.nextSeq = 1;
    this.liveBytes = 0;
  }

  private readSuperblock(): boolean {
    const sb = this.segments[0]!;
    if (sb.readUInt32LE(0) !== SUPER_MAGIC || sb.readUInt32LE(4) !== SUPER_VERSION) return false;
    if (crc32c(sb.subarray(0, SUPER_CRC_OFFSET)) !== sb.readUInt32LE(SUPER_CRC_OFFSET)) return false;
    if ((sb.readUInt32LE(8) & SUPER_FLAG_CLEAN) === 0) return false;
    if (sb.readUInt32LE(12) !== L2_RECORD_ALIGN_BYTES) return false;
    if (Number(sb.readBigUInt64LE(24)) !== this.capacityBytes) return false;
    this.fileId = Buffer.from(sb.subarray(16, 24));
    return true;
  }

  private writeSuperblock(clean: boolean): void {
    const sb = this.segments[0]!;
    sb.writeUInt32LE(SUPER_MAGIC, 0);
    sb.writeUInt32LE(SUPER_VERSION, 4);
    sb.writeUInt32LE(clean ? SUPER_FLAG_CLEAN : 0, 8);
    sb.writeUInt32LE(L2_RECORD_ALIGN_BYTES, 12);
    this.fileId.copy(sb, 16);
    sb.writeBigUInt64LE(BigInt(this.capacityBytes), 24);
    sb.writeUInt32LE(crc32c(sb.subarray(0, SUPER_CRC_OFFSET)), SUPER_CRC_OFFSET);
  }

  /** Scans every segment for records of this file; keeps the newest live record per key. */
  private recover(): void {
    type Found = RecordRef;
    const found: Found[] = [];
    let damaged = 0;
    for (let s = 0; s < this.segments.length; s++) {
      const seg = this.segments[s]!;
      const base = s * SEGMENT_BYTES;
      let at = s === 0 ? L2_SUPERBLOCK_BYTES : 0;
      while (at + L2_HEADER_BYTES <= seg.length) {
        const rec = this.parseRecord(seg, at);
        if (rec === undefined || rec === 'damaged') {
          // Marked DEAD, so the next start does not count it again.
          if (rec === 'damaged') damaged++, seg.writeUInt32LE(RECORD_DEAD, at);
          at += L2_RECORD_ALIGN_BYTES;
          continue;
        }
        found.push({ ...rec, offset: base + at });
        at += rec.recordBytes;
      }
    }
    let newest: Found | undefined;
    for (const f of found) if (newest === undefined || f.seq > newest.seq) newest = f;
    this.format();
    this.fileId = Buffer.from(this.segments[0]!.subarray(16, 24));
    // Dropped, as a read drops one: counted, so the corruption metric (and the daemon's log) tell of a failing disk.
    this.counters.corruptions += damaged;
    if (newest === undefined) return;
    this.nextSeq = newest.seq + 1;
    this.headOffset = newest.offset + newest.recordBytes;
    // Ring order is offset order starting at the head, so allocate() consumes in order.
    const head = this.headOffset;
    const ringPos = (f: Found) => (f.offset >= head ? f.offset - head : f.offset + this.capacityBytes - head);
    found.sort((a, b) => ringPos(a) - ringPos(b));
    const bySeq = [...found].sort((a, b) => a.seq - b.seq);
    for (const f of bySeq) {
      if (!f.live) continue;
      const older = this.index.get(f.key);
      if (older !== undefined) this.dropRef(older, true);
      this.index.set(f.key, f);
      this.liveBytes += f.storedBytes;
    }
    this.ring = found;
    this.counters.recoveredEntries = this.index.size;
  }

  /**
   * The record at `at`; undefined where none starts; 'damaged' for one that
   * starts there (a LIVE magic and this file's id) but fails its lengths or
   * CRC32C.
   */
  private parseRecord(seg: Buffer, at: number): RecordRef | 'damaged' | undefined {
    const magic = seg.readUInt32LE(at);
    if (magic !== RECORD_LIVE && magic !== RECORD_DEAD) return undefined;
    if (!seg.subarray(at + 8, at + 16).equals(this.segments[0]!.subarray(16, 24))) return undefined;
    const bad = magic === RECORD_LIVE ? 'damaged' : undefined;
    const keyBytes = seg.readUInt16LE(at + 24);
    const storedBytes = seg.readUInt32LE(at + 28);
    const recordBytes = seg.readUInt32LE(at + 36);
    if (keyBytes > L2_MAX_KEY_BYTES || recordBytes % L2_RECORD_ALIGN_BYTES !== 0) return bad;
    if (recordBytes < L2_HEADER_BYTES + keyBytes + storedBytes || at + recordBytes > seg.length) return bad;
    const end = at + L2_HEADER_BYTES + keyBytes + storedBytes;
    if (crc32c(seg.subarray(at + 8, end)) !== seg.readUInt32LE(at + 4)) return bad;
    const seq = seg.readUInt32LE(at + 16) + seg.readUInt32LE(at + 20) * 4294967296;
    const key = seg.toString('utf8', at + L2_HEADER_BYTES, at + L2_HEADER_BYTES + keyBytes);
    return { key, offset: at, recordBytes, storedBytes, keyBytes, live: magic === RECORD_LIVE, seq };
  }
}
