// Review (of the zeroing before a chunk's first allocation, 2e0a6ab and the
// Discarded path before it): a write to a Discarded chunk makes it Allocated,
// and the chunk entry is an LMDB commit, durable on its own within
// milliseconds (overlappingSync off), not at the client's FLUSH. So when
// that entry is issued, every byte of the chunk must already be zeros on
// stable storage, the write's own range included: the client's pwrite lands
// after the entry and is not synced until a FLUSH, and a power cut in between
// must not bring back the bytes a flushed TRIM removed. An event log of
// fs.write / fs.fdatasync (volume.ts calls them through the `fs` module
// object) and of the chunk entry puts checks the order. Fails at b16b611
// (the zeroing skipped the write's range, 4 KiB case, and for a write
// covering the whole chunk wrote no zeros at all); passes with 5009fee.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';

const MiB = 1024 * 1024;
const CHUNK = 1;

type Ev = { kind: 'write'; fd: number; pos: number; len: number; zero: boolean } | { kind: 'sync'; fd: number } | { kind: 'put'; chunk: number; state: number };

function writeVolume(vol: Volume, offsetBytes: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => vol.write(offsetBytes, data, false, (err) => (err ? reject(err) : resolve())));
}

function readVolume(vol: Volume, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const dst = Buffer.alloc(lengthBytes);
  return new Promise((resolve, reject) => vol.read(offsetBytes, lengthBytes, dst, 0, (err) => (err ? reject(err) : resolve(dst))));
}

/** Byte ranges [start, end) of `chunkStart..+len` not covered by `ranges`. */
function uncovered(chunkStart: number, len: number, ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  let pos = chunkStart;
  for (const [s, e] of sorted) {
    if (s > pos) out.push([pos, Math.min(s, chunkStart + len)]);
    pos = Math.max(pos, e);
    if (pos >= chunkStart + len) break;
  }
  if (pos < chunkStart + len) out.push([pos, chunkStart + len]);
  return out.filter(([s, e]) => e > s);
}

for (const [label, offsetInChunk, lengthBytes] of [
  ['a 4 KiB write', 64 * 1024, 4096],
  ['a write covering the whole chunk', 0, MiB],
] as const) {
  test(`${label} to a chunk a flushed TRIM discarded: the whole chunk is zero and synced before its Allocated entry is issued`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-discarded-rewrite-'));
    const m = VolumeManager.open(path.join(dir, 'data'));
    const realWrite = fs.write;
    const realFdatasync = fs.fdatasync;
    const chunks = m.meta.chunks as unknown as { put: (...a: unknown[]) => unknown };
    const realPut = chunks.put;
    t.after(async () => {
      fs.write = realWrite;
      fs.fdatasync = realFdatasync;
      chunks.put = realPut;
      await m.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
    await m.createVolume({ name: 'v', sizeBytes: 8 * MiB });
    const vol = m.openVolume('v');
    const id = vol.rec.id;
    // Old bytes in chunk 1, flushed; then a flushed TRIM of the chunk.
    await writeVolume(vol, CHUNK * MiB, Buffer.alloc(MiB, 0xab));
    await vol.flush();
    await vol.trim(CHUNK * MiB, MiB, false);
    await vol.flush();
    assert.equal(vol.chunkState[CHUNK], ChunkState.Discarded);

    const events: Ev[] = [];
    fs.write = ((...args: unknown[]) => {
      if (args.length === 6 && Buffer.isBuffer(args[1])) {
        const buf = args[1] as Buffer;
        const off = args[2] as number;
        const len = args[3] as number;
        const slice = buf.subarray(off, off + len);
        events.push({ kind: 'write', fd: args[0] as number, pos: args[4] as number, len, zero: slice.every((b) => b === 0) });
      }
      return (realWrite as (...a: unknown[]) => unknown)(...args);
    }) as typeof fs.write;
    fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      realFdatasync(fd, (err) => {
        if (!err) events.push({ kind: 'sync', fd });
        cb(err);
      });
    }) as typeof fs.fdatasync;
    chunks.put = function (this: unknown, ...args: unknown[]) {
      const key = args[0] as [number, number];
      const entry = args[1] as { state: number };
      if (Array.isArray(key) && key[0] === id) events.push({ kind: 'put', chunk: key[1], state: entry.state });
      return realPut.apply(this, args);
    };

    const data = Buffer.alloc(lengthBytes, 0xcd);
    await writeVolume(vol, CHUNK * MiB + offsetInChunk, data);

    const putAt = events.findIndex((e) => e.kind === 'put' && e.chunk === CHUNK && e.state === ChunkState.Allocated);
    assert.ok(putAt >= 0, 'the write made chunk 1 Allocated');
    // Zero writes into chunk 1 that an fdatasync completed after, all before the entry.
    const before = events.slice(0, putAt);
    const lastSync = before.map((e) => e.kind).lastIndexOf('sync');
    const durableZeros: [number, number][] = [];
    for (const e of before.slice(0, Math.max(lastSync, 0))) {
      if (e.kind === 'write' && e.zero) durableZeros.push([e.pos, e.pos + e.len]);
    }
    const gaps = uncovered(CHUNK * MiB, MiB, durableZeros);
    assert.deepEqual(
      gaps,
      [],
      `bytes of the discarded chunk not zeroed and synced before its Allocated entry (a power cut after the entry commits, before the write is flushed, brings back the trimmed bytes there): ${JSON.stringify(gaps)}`,
    );
    // And the write itself reads back, the rest of the chunk as zeros.
    const back = await readVolume(vol, CHUNK * MiB, MiB);
    const want = Buffer.alloc(MiB);
    data.copy(want, offsetInChunk);
    assert.ok(back.equals(want), 'chunk 1 reads as the new write over zeros');
  });
}
