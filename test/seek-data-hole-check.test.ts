// native/fs_seek.c's lseek(SEEK_DATA) (src/dataplane/volumes/seek-data.ts) and
// the maybe-stale chunk check built on it (Volume.allocate, regionHoldsData):
// a chunk range with no data extent is skipped, one with any extent is read
// and, if it holds a byte, zeroed before its first allocation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { firstDataOffset } from '../src/dataplane/volumes/seek-data.js';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';

const KiB = 1024;
const MiB = 1024 * KiB;
// A chunk-sized range [RANGE_START, RANGE_END) inside a sparse file.
const RANGE_START = 4 * MiB;
const RANGE_END = 5 * MiB;

/** The hole check as Volume uses it: may [start, end) hold bytes? */
async function rangeHasData(fd: number, start: number, end: number): Promise<boolean> {
  const at = await firstDataOffset(fd, start);
  return at >= 0 && at < end;
}

function withSparseFile(t: { after(fn: () => void): void }, sizeBytes: number, dataAt: number[]): number {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-seek-data-'));
  const fd = fs.openSync(path.join(dir, 'f'), 'w+');
  t.after(() => {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.ftruncateSync(fd, sizeBytes);
  for (const at of dataAt) fs.writeSync(fd, Buffer.alloc(4 * KiB, 0x5a), 0, 4 * KiB, at);
  return fd;
}

test('a range that is all hole: no data before end of file (-1), or the first extent past the range', async (t) => {
  const fd = withSparseFile(t, 8 * MiB, []);
  assert.equal(await firstDataOffset(fd, RANGE_START), -1);
  assert.equal(await rangeHasData(fd, RANGE_START, RANGE_END), false);
  // Data before the range does not count.
  const fd2 = withSparseFile(t, 8 * MiB, [RANGE_START - 4 * KiB]);
  assert.equal(await firstDataOffset(fd2, RANGE_START), -1);
  assert.equal(await firstDataOffset(fd2, 0), RANGE_START - 4 * KiB);
});

test('data at the start of the range is found at the start', async (t) => {
  const fd = withSparseFile(t, 8 * MiB, [RANGE_START]);
  assert.equal(await firstDataOffset(fd, RANGE_START), RANGE_START);
  assert.equal(await rangeHasData(fd, RANGE_START, RANGE_END), true);
});

test('data in the middle of the range, and in its last 4 KiB, is found where it is', async (t) => {
  const mid = RANGE_START + 512 * KiB;
  const fd = withSparseFile(t, 8 * MiB, [mid]);
  assert.equal(await firstDataOffset(fd, RANGE_START), mid);
  assert.equal(await rangeHasData(fd, RANGE_START, RANGE_END), true);
  const last = RANGE_END - 4 * KiB;
  const fd2 = withSparseFile(t, 8 * MiB, [last]);
  assert.equal(await firstDataOffset(fd2, RANGE_START), last);
  assert.equal(await rangeHasData(fd2, RANGE_START, RANGE_END), true);
});

test('data just past the range is reported past it: the range is a hole', async (t) => {
  const fd = withSparseFile(t, 8 * MiB, [RANGE_END]);
  assert.equal(await firstDataOffset(fd, RANGE_START), RANGE_END);
  assert.equal(await rangeHasData(fd, RANGE_START, RANGE_END), false);
});

test('a file that ends inside the range, or before it: -1 unless data lies in what exists', async (t) => {
  const short = RANGE_START + 256 * KiB;
  const fd = withSparseFile(t, short, []);
  assert.equal(await firstDataOffset(fd, RANGE_START), -1);
  const fd2 = withSparseFile(t, short, [RANGE_START + 128 * KiB]);
  assert.equal(await firstDataOffset(fd2, RANGE_START), RANGE_START + 128 * KiB);
  const fd3 = withSparseFile(t, 2 * MiB, [0]);
  assert.equal(await firstDataOffset(fd3, RANGE_START), -1);
});

test('written but unsynced bytes (delayed allocation) count as data', async (t) => {
  // The case that matters after a crash is on disk, but the same process may
  // also check a range its own unflushed write just reached.
  const fd = withSparseFile(t, 8 * MiB, []);
  fs.writeSync(fd, Buffer.from('x'), 0, 1, RANGE_START + 300 * KiB + 7);
  const at = await firstDataOffset(fd, RANGE_START);
  assert.ok(at >= RANGE_START && at <= RANGE_START + 300 * KiB + 7, `data offset ${at}`);
});

test('a bad fd rejects with its errno', async () => {
  await assert.rejects(firstDataOffset(2 ** 30, 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
});

function writeVolume(vol: Volume, offsetBytes: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => vol.write(offsetBytes, data, false, (err) => (err ? reject(err) : resolve())));
}

function readVolume(vol: Volume, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const dst = Buffer.alloc(lengthBytes);
  return new Promise((resolve, reject) => vol.read(offsetBytes, lengthBytes, dst, 0, (err) => (err ? reject(err) : resolve(dst))));
}

test('after a restart, stale bytes anywhere in an Unallocated chunk are zeroed before its first write; a hole chunk is not written', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-seek-data-volume-'));
  const meta = path.join(dir, 'meta');
  let m = VolumeManager.open(meta);
  t.after(async () => {
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  await m.createVolume({ name: 'v', sizeBytes: 16 * MiB });
  let vol = m.openVolume('v');
  await writeVolume(vol, 15 * MiB, Buffer.alloc(4 * KiB, 0x11)); // last chunk: the file is 16 MiB
  await vol.flush();
  const file = m.pools.get('hot-0')!.volumeFile(vol.rec.id);
  await m.close();
  // What a crash leaves when a first write's pwrite landed but its chunk entry
  // did not: bytes in Unallocated chunks. Chunk 2 at its start, chunk 5 in its
  // middle, chunk 8 in its last byte; chunk 11 stays a hole.
  const stale: [number, number][] = [[2 * MiB, 4 * KiB], [5 * MiB + 300 * KiB, 4 * KiB], [9 * MiB - 1, 1]];
  const fd = fs.openSync(file, 'r+');
  for (const [at, len] of stale) fs.writeSync(fd, Buffer.alloc(len, 0xee), 0, len, at);
  fs.fsyncSync(fd);
  fs.closeSync(fd);

  m = VolumeManager.open(meta);
  vol = m.openVolume('v');
  const realWrite = fs.write;
  const zeroedChunks: number[] = [];
  fs.write = ((...args: unknown[]) => {
    const [, buf, , len, pos] = args as [number, Buffer, number, number, number];
    if (len === MiB && buf.length >= MiB && buf.subarray(0, MiB).every((b) => b === 0)) zeroedChunks.push(pos / MiB);
    return (realWrite as (...a: unknown[]) => unknown)(...args);
  }) as typeof fs.write;
  t.after(() => {
    fs.write = realWrite;
  });
  for (const c of [2, 5, 8, 11]) {
    assert.equal(vol.chunkState[c], ChunkState.Unallocated);
    // 4 KiB elsewhere in the chunk than the stale bytes.
    await writeVolume(vol, c * MiB + 640 * KiB, Buffer.alloc(4 * KiB, 0x22));
    const got = await readVolume(vol, c * MiB, MiB);
    const want = Buffer.alloc(MiB);
    want.fill(0x22, 640 * KiB, 644 * KiB);
    assert.ok(got.equals(want), `chunk ${c}: stale bytes survived the first write`);
  }
  fs.write = realWrite;
  assert.deepEqual(zeroedChunks, [2, 5, 8], 'exactly the chunks holding data were zeroed');
  // And the file itself holds zeros there now (what a move would copy).
  await vol.flush();
  const raw = fs.readFileSync(file);
  for (const [at, len] of stale) assert.ok(raw.subarray(at, at + len).every((b) => b === 0), `file bytes at ${at}`);
});
