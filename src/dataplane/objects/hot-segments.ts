// Hot-tier object bytes: one data file per segment (a whole single-PUT object
// or one multipart part) on a hot pool, fsynced before the index points at it,
// with a CRC32C per 1 MiB chunk kept in the index and checked on every read.
import { crc32c } from '@node-rs/crc32';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Corrupt, IncompleteBody, PoolOffline, TooLarge, isErrno } from '../errors.js';
import type { Pool } from '../pools/pool.js';
import { ensureDurableDir, syncDirSync, syncNewEntry } from '../dir-sync.js';

export const OBJECT_CHUNK_BYTES = 1024 * 1024;
/** Fan-out directories per pool so no directory grows past ~n/256 entries. */
const FANOUT = 256;

export interface HotSegment {
  kind: 'hot';
  pool: string;
  fileId: number;
  lengthBytes: number;
  /** CRC32C of each OBJECT_CHUNK_BYTES chunk of the file (the last may be short). */
  chunkCrc32c: number[];
  /**
   * The pool's disk died and was replaced (`pools replace --discard-volumes`,
   * pool-objects.ts): the file is gone; a read answers ObjectDataLost.
   */
  lostWithPool?: string;
}

export interface WriteLimits {
  /** Refuse (TooLarge) once more bytes than this arrive. */
  maxBytes: number;
  /** When known (Content-Length / x-amz-decoded-content-length): fewer bytes = IncompleteBody. */
  expectedBytes?: number;
}

/** Called with each piece of the body as it is written (the store feeds its MD5). */
export type ByteObserver = (piece: Buffer) => void;

export function objectsDir(pool: Pool): string {
  return path.join(pool.rec.path, 'objects');
}

export function segmentFile(pool: Pool, fileId: number): string {
  return path.join(objectsDir(pool), (fileId % FANOUT).toString(16).padStart(2, '0'), `${fileId.toString(16).padStart(12, '0')}.obj`);
}

/**
 * Creates the fan-out directories once, and makes their entries durable
 * (objects/ in the pool, each fan-out directory in objects/) before any
 * segment is written: at start-up, once.
 */
export function prepareHotPool(pool: Pool): void {
  const root = objectsDir(pool);
  ensureDurableDir(root);
  for (let i = 0; i < FANOUT; i++) fs.mkdirSync(path.join(root, i.toString(16).padStart(2, '0')), { recursive: true });
  // One fsync of objects/ covers every fan-out name made above; a fan-out
  // directory left by a run that died before this sync is covered too.
  syncDirSync(root);
}

/**
 * Small-read fast path: reads up to this size, when nothing else is in
 * flight in the object store (the caller decides, `syncSmall`), open, read
 * and close on the event loop instead of three threadpool round trips; on
 * this loaded 2-core box each round trip costs a scheduling delay (A/B,
 * 4 KiB GET c1 at load 7.6: 1071 -> 1302 ops/s, p50 0.54 -> 0.46 ms).
 * A page-cache read from a hot (NVMe) pool blocks for microseconds, and only
 * while nothing else could be served. Same rule and bound as the NBD idle
 * fast path (nbd/connection.ts SYNC_MAX_BYTES). The same idea for small
 * PUTs (create + write on the loop, both flushes at once) did not measure
 * faster: their time is the device flushes, so it is not done.
 */
export const SYNC_MAX_BYTES = 64 * 1024;

function dropWritten(bufs: Buffer[], writtenBytes: number): Buffer[] {
  let skip = writtenBytes;
  const rest: Buffer[] = [];
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    rest.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return rest;
}

/**
 * Streams `body` into a new segment file and makes it durable (file and its
 * directory entry). On any failure the file is removed and the pool
 * reservation returned, so nothing of a failed upload survives.
 */
export async function writeHotSegment(
  pool: Pool,
  fileId: number,
  body: AsyncIterable<Buffer>,
  limits: WriteLimits,
  /** May return a promise: the body is not read further until it settles (backpressure). */
  observe: (piece: Buffer) => void | Promise<void>,
  /** Called once the whole body has arrived, before it is made durable. */
  bodyEnded?: () => void,
): Promise<HotSegment> {
  const file = segmentFile(pool, fileId);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'wx', 0o640);
  } catch (err) {
    // The fan-out directories are made at start: one missing means the pool
    // directory was removed or replaced under the daemon (PoolOffline, S3
    // 503), not an internal error.
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) throw new PoolOffline(`pool ${pool.name}: ${path.dirname(file)} is gone (pool directory removed or replaced?)`, { cause: err });
    throw err;
  }
  let lengthBytes = 0;
  let reservedBytes = 0;
  const crcs: number[] = [];
  let crc = 0;
  let chunkFill = 0;
  // Pieces are gathered into ~1 MiB writev batches: fewer syscalls than one
  // write per socket read, and a bounded amount held in memory.
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let ok = false;
  try {
    for await (const raw of body) {
      let piece = raw;
      if (piece.length === 0) continue;
      if (lengthBytes + piece.length > limits.maxBytes) throw new TooLarge(`object exceeds ${limits.maxBytes} bytes`);
      if (limits.expectedBytes !== undefined && lengthBytes + piece.length > limits.expectedBytes) {
        throw new IncompleteBody(`body is longer than the declared ${limits.expectedBytes} bytes`);
      }
      pool.reserve(piece.length);
      reservedBytes += piece.length;
      const observed = observe(piece);
      lengthBytes += piece.length;
      batch.push(piece);
      batchBytes += piece.length;
      // CRC per chunk: split the piece where it crosses a chunk boundary.
      while (piece.length > 0) {
        const take = Math.min(piece.length, OBJECT_CHUNK_BYTES - chunkFill);
        crc = crc32c(take === piece.length ? piece : piece.subarray(0, take), crc);
        chunkFill += take;
        piece = piece.subarray(take);
        if (chunkFill === OBJECT_CHUNK_BYTES) {
          crcs.push(crc);
          crc = 0;
          chunkFill = 0;
        }
      }
      if (batchBytes >= OBJECT_CHUNK_BYTES) {
        await writeAll(fh, batch, batchBytes);
        batch = [];
        batchBytes = 0;
      }
      if (observed) await observed;
    }
    if (limits.expectedBytes !== undefined && lengthBytes !== limits.expectedBytes) {
      throw new IncompleteBody(`body ended after ${lengthBytes} of ${limits.expectedBytes} declared bytes`);
    }
    bodyEnded?.();
    if (batchBytes > 0) await writeAll(fh, batch, batchBytes);
    if (chunkFill > 0) crcs.push(crc);
    await fh.datasync();
    // The name too, before the index points at the file (by path, checked
    // against a replaced pool directory: dir-sync.ts says why not a held fd).
    await syncNewEntry(file, fh.fd);
    await fh.close();
    ok = true;
    return { kind: 'hot', pool: pool.name, fileId, lengthBytes, chunkCrc32c: crcs };
  } finally {
    if (!ok) {
      await fh.close().catch(() => undefined);
      await fsp.rm(file, { force: true });
      pool.release(reservedBytes);
    }
  }
}

async function writeAll(fh: fsp.FileHandle, bufs: Buffer[], totalBytes: number): Promise<void> {
  let left = totalBytes;
  let list = bufs;
  while (left > 0) {
    const { bytesWritten } = await fh.writev(list);
    left -= bytesWritten;
    if (left === 0) return;
    // Short write: drop what was written and retry with the rest.
    list = dropWritten(list, bytesWritten);
  }
}

async function openForRead(file: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(file, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new Corrupt(`object data file ${file} is missing`);
    throw err;
  }
}

/** Fills `buf[0, lengthBytes)` from `positionBytes`; a short file is Corrupt (the index says how long it is). */
async function readFully(fh: fsp.FileHandle, file: string, buf: Buffer, lengthBytes: number, positionBytes: number): Promise<void> {
  let got = 0;
  while (got < lengthBytes) {
    const { bytesRead } = await fh.read(buf, got, lengthBytes - got, positionBytes + got);
    if (bytesRead === 0) throw new Corrupt(`object data file ${file} is shorter than its index says`);
    got += bytesRead;
  }
}

/** Checks every chunk held in `buf`, whose first byte is chunk `firstChunk`'s first byte. */
function verifyChunks(seg: HotSegment, file: string, buf: Buffer, firstChunk: number): void {
  for (let at = 0, chunk = firstChunk; at < buf.length; at += OBJECT_CHUNK_BYTES, chunk++) {
    const end = Math.min(buf.length, at + OBJECT_CHUNK_BYTES);
    if (crc32c(at === 0 && end === buf.length ? buf : buf.subarray(at, end)) !== seg.chunkCrc32c[chunk]) {
      throw new Corrupt(`object data file ${file}: chunk ${chunk} fails its CRC32C`);
    }
  }
}

/**
 * Yields bytes [offsetBytes, offsetBytes + lengthBytes) of a segment. Whole
 * chunks are read and CRC-checked before any of their bytes leave, so a
 * corrupted chunk surfaces as Corrupt, never as wrong data. Each yielded
 * buffer is the consumer's to keep (copies use this path and hold pieces).
 */
export async function* readHotSegment(pool: Pool, seg: HotSegment, offsetBytes: number, lengthBytes: number): AsyncGenerator<Buffer> {
  if (lengthBytes <= 0) return;
  const file = segmentFile(pool, seg.fileId);
  const fh = await openForRead(file);
  try {
    const endBytes = offsetBytes + lengthBytes;
    for (let chunk = Math.floor(offsetBytes / OBJECT_CHUNK_BYTES); chunk * OBJECT_CHUNK_BYTES < endBytes; chunk++) {
      const chunkStart = chunk * OBJECT_CHUNK_BYTES;
      const chunkLen = Math.min(OBJECT_CHUNK_BYTES, seg.lengthBytes - chunkStart);
      const buf = Buffer.allocUnsafe(chunkLen);
      await readFully(fh, file, buf, chunkLen, chunkStart);
      verifyChunks(seg, file, buf, chunk);
      const from = Math.max(offsetBytes, chunkStart) - chunkStart;
      const to = Math.min(endBytes, chunkStart + chunkLen) - chunkStart;
      yield from === 0 && to === chunkLen ? buf : buf.subarray(from, to);
    }
  } finally {
    await fh.close();
  }
}

/**
 * GETs read in blocks of this many bytes (whole chunks): one threadpool
 * round trip per 4 MiB instead of per 1 MiB chunk. On this loaded 2-core box
 * each round trip costs a scheduling delay, and a single-stream GET is a
 * chain of them.
 */
export const READ_BLOCK_BYTES = 4 * OBJECT_CHUNK_BYTES;
/**
 * Free read blocks kept for reuse. A fresh 4 MiB buffer per block made V8
 * run a mark-compact for "external memory pressure" every ~16 GETs, 5-25 ms
 * each, which was the long tail of single-stream GET latency. Bound: 16 x
 * 4 MiB = 64 MiB retained; beyond it blocks are allocated and left to GC.
 */
const MAX_FREE_READ_BLOCKS = 16;
/** Reads below this size use an exact-size buffer, not a pooled block. */
const POOLED_READ_MIN_BYTES = 64 * 1024;
const freeReadBlocks: Buffer[] = [];

/**
 * Receives consecutive pieces of an object. The piece is only borrowed:
 * the returned promise must settle once its bytes have left (e.g. a socket
 * write's callback), after which the buffer is reused. `last` marks the
 * final piece of the whole send.
 */
export type PieceSink = (piece: Buffer, last: boolean) => Promise<void>;

/**
 * Sends bytes [offsetBytes, offsetBytes + lengthBytes) of a segment to
 * `sink`, checked like readHotSegment, from pooled blocks: block n+1 is read
 * while block n is being written, so disk and socket overlap. `isLastSegment`
 * says whether this segment's final piece is the send's final piece.
 */
export async function sendHotSegment(pool: Pool, seg: HotSegment, offsetBytes: number, lengthBytes: number, sink: PieceSink, isLastSegment: boolean, syncSmall = false): Promise<void> {
  if (lengthBytes <= 0) return;
  const file = segmentFile(pool, seg.fileId);
  // Whole chunks are read so their CRCs can be checked: the bound is on that.
  const firstChunk = Math.floor(offsetBytes / OBJECT_CHUNK_BYTES);
  const chunkStart = firstChunk * OBJECT_CHUNK_BYTES;
  const readLen = Math.min(seg.lengthBytes, Math.ceil((offsetBytes + lengthBytes) / OBJECT_CHUNK_BYTES) * OBJECT_CHUNK_BYTES) - chunkStart;
  if (syncSmall && readLen <= SYNC_MAX_BYTES) {
    // Fast path (see SYNC_MAX_BYTES): read on the loop, checked, then sent.
    const buf = Buffer.allocUnsafe(readLen);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new Corrupt(`object data file ${file} is missing`);
      throw err;
    }
    try {
      for (let got = 0; got < readLen; ) {
        const n = fs.readSync(fd, buf, got, readLen - got, chunkStart + got);
        if (n === 0) throw new Corrupt(`object data file ${file} is shorter than its index says`);
        got += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    verifyChunks(seg, file, buf, firstChunk);
    return sink(buf.subarray(offsetBytes - chunkStart, offsetBytes - chunkStart + lengthBytes), isLastSegment);
  }
  const fh = await openForRead(file);
  let writing: Promise<void> | undefined;
  let writingBlock: Buffer | undefined;
  let closing: Promise<void> | undefined;
  try {
    const endBytes = offsetBytes + lengthBytes;
    let chunk = Math.floor(offsetBytes / OBJECT_CHUNK_BYTES);
    const lastChunk = Math.floor((endBytes - 1) / OBJECT_CHUNK_BYTES);
    while (chunk <= lastChunk) {
      const blockStart = chunk * OBJECT_CHUNK_BYTES;
      const chunks = Math.min(READ_BLOCK_BYTES / OBJECT_CHUNK_BYTES, lastChunk - chunk + 1);
      const blockLen = Math.min(chunks * OBJECT_CHUNK_BYTES, seg.lengthBytes - blockStart);
      const pooled = blockLen >= POOLED_READ_MIN_BYTES;
      const block = pooled ? (freeReadBlocks.pop() ?? Buffer.allocUnsafeSlow(READ_BLOCK_BYTES)) : Buffer.allocUnsafe(blockLen);
      const bytes = block.length === blockLen ? block : block.subarray(0, blockLen);
      await readFully(fh, file, bytes, blockLen, blockStart);
      verifyChunks(seg, file, bytes, chunk);
      chunk += chunks;
      const last = chunk > lastChunk;
      // Nothing more to read from the file: close it while the bytes go out.
      if (last) closing = fh.close();
      if (writing) {
        await writing;
        if (writingBlock && freeReadBlocks.length < MAX_FREE_READ_BLOCKS) freeReadBlocks.push(writingBlock);
      }
      writingBlock = pooled ? block : undefined;
      const from = Math.max(offsetBytes, blockStart) - blockStart;
      const to = Math.min(endBytes, blockStart + blockLen) - blockStart;
      writing = sink(from === 0 && to === blockLen ? bytes : bytes.subarray(from, to), last && isLastSegment);
      // It may fail while the next block is being read, before anyone awaits
      // it: mark it handled now (it is still awaited, and its error thrown, below).
      writing.catch(() => undefined);
    }
    await writing;
    if (writingBlock && freeReadBlocks.length < MAX_FREE_READ_BLOCKS) freeReadBlocks.push(writingBlock);
  } finally {
    // After a failure a write may still hold its block: that block is not
    // returned to the pool (GC frees it once the write lets go).
    await (closing ?? fh.close());
  }
}

export async function freeHotSegment(pool: Pool, seg: HotSegment): Promise<void> {
  await fsp.rm(segmentFile(pool, seg.fileId), { force: true });
  pool.release(seg.lengthBytes);
}

/** Every segment file id present on a hot pool (startup orphan sweep). */
export function listHotFileIds(pool: Pool): number[] {
  const ids: number[] = [];
  const root = objectsDir(pool);
  if (!fs.existsSync(root)) return ids;
  for (const sub of fs.readdirSync(root)) {
    const dir = path.join(root, sub);
    for (const name of fs.readdirSync(dir)) {
      const m = /^([0-9a-f]{12})\.obj$/.exec(name);
      if (m) ids.push(parseInt(m[1]!, 16));
    }
  }
  return ids;
}
