// The client-side model of the crash tests: random writes, zeroes and trims
// (some FUA, some followed by FLUSH) from concurrent workers over one NBD
// connection, and the check that after a crash every byte holds either its
// newest flushed value or a value some unflushed request could have left.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { CMD, ConnectionClosed, FLAG, type RawNbd } from './nbd-client.js';

const MiB = 1024 * 1024;
const SECTOR_BYTES = 512;

export interface WorkloadStats {
  acked: number;
  flushes: number;
  inflight: number;
}

export type OpKind = 'write' | 'zero' | 'trim';

export interface Op {
  seq: number;
  kind: OpKind;
  offsetBytes: number;
  lengthBytes: number;
  /** What the range holds once the op took effect (zeros for zero; the read-back for trim). */
  value: Buffer | null;
  done: boolean;
  durable: boolean;
}

/**
 * What the client knows. `durVal` holds, per byte, the value of the newest
 * durable op touching it; `durSeq` that op's sequence number per sector.
 * Concurrent ops never overlap, so ops touching one sector are totally
 * ordered by `seq`, and "newest" is well defined.
 */
export class Model {
  readonly durVal: Buffer;
  readonly durSeq: Int32Array;
  ops: Op[] = [];
  private nextSeq = 0;

  constructor(readonly volumeBytes: number) {
    this.durVal = Buffer.alloc(volumeBytes);
    this.durSeq = new Int32Array(volumeBytes / SECTOR_BYTES).fill(-1);
  }

  reset(actual: Buffer): void {
    actual.copy(this.durVal);
    this.durSeq.fill(-1);
    this.ops = [];
  }

  begin(kind: OpKind, offsetBytes: number, lengthBytes: number, value: Buffer | null): Op {
    const op: Op = { seq: this.nextSeq++, kind, offsetBytes, lengthBytes, value, done: false, durable: false };
    this.ops.push(op);
    return op;
  }

  makeDurable(op: Op): void {
    if (op.durable) return;
    op.durable = true;
    const first = op.offsetBytes / SECTOR_BYTES;
    for (let s = first; s < first + op.lengthBytes / SECTOR_BYTES; s++) {
      if (op.seq <= this.durSeq[s]!) continue;
      this.durSeq[s] = op.seq;
      const at = s * SECTOR_BYTES;
      if (op.value) op.value.copy(this.durVal, at, at - op.offsetBytes, at - op.offsetBytes + SECTOR_BYTES);
      else this.durVal.fill(0, at, at + SECTOR_BYTES);
    }
  }

  /** Byte ranges where `actual` holds a value no crash could explain. */
  violations(actual: Buffer): string[] {
    const out: string[] = [];
    // Ops newer than the last durable one on a sector, whether or not they
    // were acknowledged, may or may not have reached the disk.
    const bySector = new Map<number, Op[]>();
    for (const o of this.ops) {
      if (o.durable) continue;
      const first = o.offsetBytes / SECTOR_BYTES;
      for (let s = first; s < first + o.lengthBytes / SECTOR_BYTES; s++) {
        if (o.seq <= this.durSeq[s]!) continue;
        const list = bySector.get(s);
        if (list) list.push(o);
        else bySector.set(s, [o]);
      }
    }
    for (let s = 0; s < this.durSeq.length && out.length < 5; s++) {
      const at = s * SECTOR_BYTES;
      if (actual.compare(this.durVal, at, at + SECTOR_BYTES, at, at + SECTOR_BYTES) === 0) continue;
      const here = bySector.get(s) ?? [];
      for (let b = at; b < at + SECTOR_BYTES; b++) {
        const got = actual[b]!;
        if (got === this.durVal[b]) continue;
        const ok = here.some((o) => {
          // An unfinished trim may have zeroed the range; a finished one left its read-back.
          if (o.value === null) return got === 0;
          if (o.kind === 'trim' && !o.done) return got === 0;
          return o.value[b - o.offsetBytes] === got;
        });
        if (!ok) {
          out.push(`byte ${b} (sector ${s}) = ${got}, flushed value ${this.durVal[b]}, durable op #${this.durSeq[s]}, ${here.length} unflushed ops cover it: ${here.map((o) => `#${o.seq} ${o.kind}@${o.offsetBytes}+${o.lengthBytes}${o.done ? '' : ' (in flight)'}`).join(', ')}`);
          break;
        }
      }
    }
    return out;
  }
}

/** Random sector-aligned range, biased to cross 1 MiB chunk boundaries. */
function randomRange(volumeBytes: number, maxOpBytes: number): [number, number] {
  const kind = crypto.randomInt(0, 4);
  let lengthBytes: number;
  let offsetBytes: number;
  if (kind === 0) {
    // Small write straddling a chunk boundary.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(2, 64);
    const boundary = MiB * crypto.randomInt(1, volumeBytes / MiB);
    offsetBytes = boundary - SECTOR_BYTES * crypto.randomInt(1, lengthBytes / SECTOR_BYTES);
  } else if (kind === 1) {
    // Large write (up to 2 MiB), usually spanning chunks.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(1, maxOpBytes / SECTOR_BYTES + 1);
    offsetBytes = SECTOR_BYTES * crypto.randomInt(0, (volumeBytes - lengthBytes) / SECTOR_BYTES + 1);
  } else {
    // 4 KiB-ish.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(1, 17);
    offsetBytes = SECTOR_BYTES * crypto.randomInt(0, (volumeBytes - lengthBytes) / SECTOR_BYTES + 1);
  }
  return [offsetBytes, lengthBytes];
}

/** Random writes/zeroes/trims/flushes from WORKERS concurrent loops until the connection dies. */
export async function workload(c: RawNbd, model: Model, stats: WorkloadStats, opts: { workers: number; maxOpBytes: number }): Promise<void> {
  const volumeBytes = model.volumeBytes;
  const busy = new Set<Op>();
  const overlapsBusy = (o: number, l: number) => [...busy].some((b) => o < b.offsetBytes + b.lengthBytes && b.offsetBytes < o + l);
  async function worker(): Promise<void> {
    for (;;) {
      const pick = crypto.randomInt(0, 100);
      if (pick < 8) {
        const covered = model.ops.filter((o) => o.done && !o.durable);
        stats.inflight++;
        const r = await c.flush().finally(() => stats.inflight--);
        assert.equal(r.error, 0, 'flush failed');
        for (const o of covered) model.makeDurable(o);
        stats.flushes++;
        continue;
      }
      let range = randomRange(volumeBytes, opts.maxOpBytes);
      for (let i = 0; i < 20 && overlapsBusy(...range); i++) range = randomRange(volumeBytes, opts.maxOpBytes);
      if (overlapsBusy(...range)) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      const [offsetBytes, lengthBytes] = range;
      const fua = crypto.randomInt(0, 5) === 0 ? FLAG.FUA : 0;
      let op: Op;
      stats.inflight++;
      try {
        if (pick < 78) {
          op = model.begin('write', offsetBytes, lengthBytes, crypto.randomBytes(lengthBytes));
          busy.add(op);
          assert.equal((await c.writeAt(offsetBytes, op.value!, fua)).error, 0, 'write failed');
        } else if (pick < 90) {
          op = model.begin('zero', offsetBytes, lengthBytes, null);
          busy.add(op);
          const noHole = crypto.randomInt(0, 2) === 0 ? FLAG.NO_HOLE : 0;
          assert.equal((await c.command(CMD.WRITE_ZEROES, fua | noHole, offsetBytes, lengthBytes)).error, 0, 'zero failed');
        } else {
          op = model.begin('trim', offsetBytes, lengthBytes, null);
          busy.add(op);
          assert.equal((await c.command(CMD.TRIM, fua, offsetBytes, lengthBytes)).error, 0, 'trim failed');
          // TRIM is advisory: what it left is whatever reads back now.
          const back = await c.readAt(offsetBytes, lengthBytes);
          assert.equal(back.error, 0);
          op.value = back.data;
        }
      } finally {
        stats.inflight--;
      }
      op.done = true;
      busy.delete(op);
      stats.acked++;
      if (fua) model.makeDurable(op);
    }
  }
  const results = await Promise.allSettled(Array.from({ length: opts.workers }, worker));
  for (const r of results) {
    // The only acceptable way for a worker to stop is the daemon dying under it.
    if (r.status === 'rejected' && !(r.reason instanceof ConnectionClosed)) throw r.reason;
  }
}


/** Reads a whole volume back in 8 MiB reads. */
export async function readVolume(c: RawNbd, volumeBytes: number): Promise<Buffer> {
  const out = Buffer.alloc(volumeBytes);
  for (let at = 0; at < volumeBytes; at += 8 * MiB) {
    const r = await c.readAt(at, 8 * MiB);
    assert.equal(r.error, 0);
    r.data.copy(out, at);
  }
  return out;
}
