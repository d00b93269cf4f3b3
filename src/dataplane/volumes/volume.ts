// One open volume: the hot path for block I/O on hot/warm data. Data lives in
// one sparse file per volume on its pool (chunk i at offset i * chunkSize);
// the chunk map in LMDB records which chunks hold data. All connections to a
// volume share this object, so a FLUSH on one covers writes completed on all.
import fs from 'node:fs';
import { InvalidArgument, OutOfRange, ReadOnly, VolumeFailed } from '../errors.js';
import { ChunkState, type MetaStore, type VolumeRecord } from '../meta/store.js';
import type { Pool } from '../pools/pool.js';

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

export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

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
  private syncInFlight: Promise<void> | null = null;
  private syncQueued: Promise<void> | null = null;
  private readonly chunkShift: number;

  constructor(
    public rec: VolumeRecord,
    readonly pool: Pool,
    private readonly fd: number,
    private readonly meta: MetaStore,
    chunkState: Uint8Array,
  ) {
    this.chunkState = chunkState;
    this.chunkShift = Math.log2(rec.chunkSizeBytes);
    if (!Number.isInteger(this.chunkShift)) throw new InvalidArgument('chunk size must be a power of two');
  }

  get name(): string {
    return this.rec.name;
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

  /** Reads [offset, offset+length) into dst[0..length). */
  read(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number, cb: DoneCb): void {
    const bad = this.usable(false);
    if (bad) return cb(bad);
    this.counters.readOps++;
    this.counters.readBytes += lengthBytes;
    fs.read(this.fd, dst, dstOffset, lengthBytes, offsetBytes, (err, n) => {
      if (err) return cb(err);
      if (n < lengthBytes) dst.fill(0, dstOffset + n, dstOffset + lengthBytes);
      this.zeroDiscarded(offsetBytes, lengthBytes, dst, dstOffset);
      cb(null);
    });
  }

  /** Discarded chunks may still hold stale bytes in the file: hide them. */
  private zeroDiscarded(offsetBytes: number, lengthBytes: number, dst: Buffer, dstOffset: number): void {
    const first = offsetBytes >>> 0 === offsetBytes ? offsetBytes >>> this.chunkShift : Math.floor(offsetBytes / this.rec.chunkSizeBytes);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / this.rec.chunkSizeBytes);
    for (let c = first; c <= last; c++) {
      if (this.chunkState[c] !== ChunkState.Discarded) continue;
      const start = Math.max(offsetBytes, c * this.rec.chunkSizeBytes);
      const end = Math.min(offsetBytes + lengthBytes, (c + 1) * this.rec.chunkSizeBytes);
      dst.fill(0, dstOffset + start - offsetBytes, dstOffset + end - offsetBytes);
    }
  }

  /** Writes data at offset; with fua the reply waits until it is durable. */
  write(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    const bad = this.usable(true);
    if (bad) return cb(bad);
    this.counters.writeOps++;
    this.counters.writeBytes += data.length;
    const ready = this.allocate(offsetBytes, data.length);
    if (ready === null) return this.pwrite(offsetBytes, data, fua, cb);
    ready.then(
      () => this.pwrite(offsetBytes, data, fua, cb),
      (err: Error) => cb(err),
    );
  }

  private pwrite(offsetBytes: number, data: Buffer, fua: boolean, cb: DoneCb): void {
    fs.write(this.fd, data, 0, data.length, offsetBytes, (err) => {
      if (err) return cb(err);
      if (!fua) return cb(null);
      this.flush().then(() => cb(null), cb);
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
      const pending = this.preparing.get(c);
      if (pending) {
        (waits ??= []).push(pending);
        continue;
      }
      const st = this.chunkState[c];
      if (st === ChunkState.Allocated) continue;
      try {
        this.pool.reserve(cs);
      } catch (err) {
        return Promise.reject(err);
      }
      if (st === ChunkState.Discarded) {
        // The region still holds old bytes; zero what this write won't cover
        // before the chunk becomes readable as data again.
        const chunkStart = c * cs;
        const p = this.zeroRegion(chunkStart, cs, offsetBytes, lengthBytes).then(() => {
          this.preparing.delete(c);
          this.setChunk(c, ChunkState.Allocated);
        });
        p.catch(() => {
          this.preparing.delete(c);
          this.pool.release(cs);
        });
        this.preparing.set(c, p);
        (waits ??= []).push(p);
      } else {
        this.setChunk(c, ChunkState.Allocated);
      }
    }
    return waits ? Promise.all(waits).then(() => undefined) : null;
  }

  /** Writes zeros over [chunkStart, chunkStart+cs) minus [skipStart, skipStart+skipLen). */
  private async zeroRegion(chunkStart: number, cs: number, skipStart: number, skipLen: number): Promise<void> {
    const chunkEnd = chunkStart + cs;
    const skipEnd = skipStart + skipLen;
    const pieces: [number, number][] = [];
    if (skipStart > chunkStart) pieces.push([chunkStart, Math.min(skipStart, chunkEnd)]);
    if (skipEnd < chunkEnd) pieces.push([Math.max(skipEnd, chunkStart), chunkEnd]);
    for (const [s, e] of pieces) {
      if (e > s) await writeAll(this.fd, zeros(e - s), s);
    }
  }

  private setChunk(c: number, state: ChunkState): void {
    this.chunkState[c] = state;
    this.metaDirty = true;
    if (state === ChunkState.Unallocated) void this.meta.chunks.remove([this.rec.id, c]);
    else void this.meta.chunks.put([this.rec.id, c], { state, pool: this.pool.name });
  }

  /**
   * Zeroes a range. Whole chunks are discarded (metadata only) unless noHole;
   * partial chunks get real zeros. With fastZero, fails with `SlowZero`
   * instead of writing zeros.
   */
  async writeZeroes(offsetBytes: number, lengthBytes: number, opts: { noHole: boolean; fua: boolean; fastZero: boolean }): Promise<void> {
    const bad = this.usable(true);
    if (bad) throw bad;
    this.counters.writeOps++;
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const work: [number, number][] = [];
    for (let pos = offsetBytes; pos < end; ) {
      const c = Math.floor(pos / cs);
      const pieceEnd = Math.min(end, (c + 1) * cs);
      const whole = pos === c * cs && pieceEnd === (c + 1) * cs;
      const st = this.chunkState[c];
      if (st !== ChunkState.Allocated && !opts.noHole && !this.preparing.has(c)) {
        // Already reads as zeros.
      } else if (whole && !opts.noHole) {
        await this.preparing.get(c);
        this.discard(c);
      } else {
        work.push([pos, pieceEnd]);
      }
      pos = pieceEnd;
    }
    if (work.length > 0 && opts.fastZero) throw new SlowZero('zeroing this range needs data writes');
    for (const [s, e] of work) {
      const ready = this.allocate(s, e - s);
      if (ready) await ready;
      await writeAll(this.fd, zeros(e - s), s);
    }
    if (opts.fua) await this.flush();
  }

  /** Discards whole chunks inside the range; partial chunks are left as they are (TRIM is advisory). */
  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const bad = this.usable(true);
    if (bad) throw bad;
    const cs = this.rec.chunkSizeBytes;
    const first = Math.ceil(offsetBytes / cs);
    const endChunk = Math.floor((offsetBytes + lengthBytes) / cs);
    const endIsVolumeEnd = offsetBytes + lengthBytes === this.rec.sizeBytes;
    const last = endIsVolumeEnd ? Math.ceil(this.rec.sizeBytes / cs) : endChunk;
    for (let c = first; c < last; c++) {
      await this.preparing.get(c);
      this.discard(c);
    }
    if (fua) await this.flush();
  }

  private discard(c: number): void {
    if (this.chunkState[c] !== ChunkState.Allocated) return;
    this.pool.release(this.rec.chunkSizeBytes);
    this.setChunk(c, ChunkState.Discarded);
  }

  /** Extents of base:allocation over the range, merged, in order. */
  blockStatus(offsetBytes: number, lengthBytes: number, maxExtents: number): Extent[] {
    const cs = this.rec.chunkSizeBytes;
    const end = offsetBytes + lengthBytes;
    const out: Extent[] = [];
    for (let pos = offsetBytes; pos < end; ) {
      const c = Math.floor(pos / cs);
      const pieceEnd = Math.min(end, (c + 1) * cs);
      const flags = this.chunkState[c] === ChunkState.Allocated ? 0 : STATE_HOLE | STATE_ZERO;
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
    if (this.syncQueued) return this.syncQueued;
    if (this.syncInFlight) {
      this.syncQueued = this.syncInFlight.then(
        () => this.startSync(),
        () => this.startSync(),
      );
      return this.syncQueued;
    }
    return this.startSync();
  }

  private startSync(): Promise<void> {
    this.syncQueued = null;
    if (this.failure) return Promise.reject(this.failure);
    const metaDirty = this.metaDirty;
    this.metaDirty = false;
    const p = new Promise<void>((resolve, reject) => {
      fs.fdatasync(this.fd, (err) => {
        if (err) {
          // Never retry: the kernel may have dropped the dirty pages already.
          this.failure = new VolumeFailed(`volume ${this.name}: fdatasync failed (${err.message}); volume taken offline`);
          return reject(this.failure);
        }
        if (!metaDirty) return resolve();
        this.meta.durable().then(resolve, reject);
      });
    });
    this.syncInFlight = p.finally(() => {
      if (this.syncInFlight === tracked) this.syncInFlight = null;
    });
    const tracked = this.syncInFlight;
    return p;
  }

  /** Grows the volume (shrinking is refused: it would drop data). */
  grow(newSizeBytes: number): void {
    if (newSizeBytes < this.rec.sizeBytes) throw new InvalidArgument(`shrinking volume ${this.name} is not supported`);
    const chunks = Volume.chunkCount(newSizeBytes, this.rec.chunkSizeBytes);
    if (chunks > this.chunkState.length) {
      const next = new Uint8Array(chunks);
      next.set(this.chunkState);
      this.chunkState = next;
    }
    this.rec = { ...this.rec, sizeBytes: newSizeBytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }
}

/** FAST_ZERO could not be honoured without writing data. */
export class SlowZero extends Error {
  override name = 'SlowZero';
}

function writeAll(fd: number, buf: Buffer, positionBytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buf, 0, buf.length, positionBytes, (err, n) => {
      if (err) return reject(err);
      if (n !== buf.length) return reject(new Error(`short write: ${n} of ${buf.length}`));
      resolve();
    });
  });
}
