// Crash safety of the NBD write path: random writes, trims and zeroes (some
// FUA, some followed by FLUSH) while the daemon is SIGKILLed at random
// moments; after each restart every flushed byte must be there, and every
// other byte must hold a value some unflushed request could have left.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { TestDaemon } from './helpers/daemon.js';
import { CMD, ConnectionClosed, FLAG, RawNbd } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
const SECTOR_BYTES = 512;
const VOLUME_BYTES = 24 * MiB;
const SECTORS = VOLUME_BYTES / SECTOR_BYTES;
const ROUNDS = 6;
const WORKERS = 8;
const MAX_OP_BYTES = 2 * MiB;

const daemons: TestDaemon[] = [];
after(async () => {
  for (const d of daemons) await d.cleanup();
});

type OpKind = 'write' | 'zero' | 'trim';

interface Op {
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
class Model {
  durVal = Buffer.alloc(VOLUME_BYTES);
  durSeq = new Int32Array(SECTORS).fill(-1);
  ops: Op[] = [];
  private nextSeq = 0;

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
    for (let s = 0; s < SECTORS && out.length < 5; s++) {
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
function randomRange(): [number, number] {
  const kind = crypto.randomInt(0, 4);
  let lengthBytes: number;
  let offsetBytes: number;
  if (kind === 0) {
    // Small write straddling a chunk boundary.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(2, 64);
    const boundary = MiB * crypto.randomInt(1, VOLUME_BYTES / MiB);
    offsetBytes = boundary - SECTOR_BYTES * crypto.randomInt(1, lengthBytes / SECTOR_BYTES);
  } else if (kind === 1) {
    // Large write (up to 2 MiB), usually spanning chunks.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(1, MAX_OP_BYTES / SECTOR_BYTES + 1);
    offsetBytes = SECTOR_BYTES * crypto.randomInt(0, (VOLUME_BYTES - lengthBytes) / SECTOR_BYTES + 1);
  } else {
    // 4 KiB-ish.
    lengthBytes = SECTOR_BYTES * crypto.randomInt(1, 17);
    offsetBytes = SECTOR_BYTES * crypto.randomInt(0, (VOLUME_BYTES - lengthBytes) / SECTOR_BYTES + 1);
  }
  return [offsetBytes, lengthBytes];
}

/** Random writes/zeroes/trims/flushes from WORKERS concurrent loops until the connection dies. */
async function workload(c: RawNbd, model: Model, stats: { acked: number; flushes: number; inflight: number }): Promise<void> {
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
      let range = randomRange();
      for (let i = 0; i < 20 && overlapsBusy(...range); i++) range = randomRange();
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
  const results = await Promise.allSettled(Array.from({ length: WORKERS }, worker));
  for (const r of results) {
    // The only acceptable way for a worker to stop is the daemon dying under it.
    if (r.status === 'rejected' && !(r.reason instanceof ConnectionClosed)) throw r.reason;
  }
}

async function readAll(c: RawNbd): Promise<Buffer> {
  const r = await c.readAt(0, VOLUME_BYTES);
  assert.equal(r.error, 0);
  return r.data;
}

async function start(dataDir?: string): Promise<TestDaemon> {
  const d = await TestDaemon.start(dataDir ? { dataDir } : {});
  daemons.push(d);
  return d;
}

test('SIGKILL during random writes loses only unflushed data', async () => {
  let daemon = await start();
  daemon.createVolume('crash', `${VOLUME_BYTES}`);
  const model = new Model();
  let totalAcked = 0;
  let totalFlushes = 0;
  let killsWithInflight = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const c = await RawNbd.connect({ port: daemon.info.nbd.port });
    await c.handshake('crash', { structured: round % 2 === 1 });
    const stats = { acked: 0, flushes: 0, inflight: 0 };
    const running = workload(c, model, stats);
    await new Promise((r) => setTimeout(r, 300 + crypto.randomInt(0, 1200)));
    if (stats.inflight > 0) killsWithInflight++;
    await daemon.kill();
    await running;
    totalAcked += stats.acked;
    totalFlushes += stats.flushes;

    daemon = await start(daemon.dataDir);
    const v = await RawNbd.connect({ port: daemon.info.nbd.port });
    await v.handshake('crash');
    const actual = await readAll(v);
    const bad = model.violations(actual);
    assert.deepEqual(bad, [], `round ${round}: after ${stats.acked} acked ops and ${stats.flushes} flushes:\n${bad.join('\n')}`);
    // What survived is the new baseline once flushed.
    assert.equal((await v.flush()).error, 0);
    model.reset(actual);
    v.close();
  }
  // The test means something only if it really crashed mid-stream with work acknowledged.
  assert.ok(totalAcked > 200, `only ${totalAcked} ops were acknowledged`);
  assert.ok(totalFlushes > 10, `only ${totalFlushes} flushes`);
  assert.ok(killsWithInflight >= ROUNDS - 1, `only ${killsWithInflight} of ${ROUNDS} kills hit requests in flight`);
  await daemon.stop();
});

test('multi-conn: FLUSH on one connection makes writes acknowledged on another durable across SIGKILL', async () => {
  let daemon = await start();
  daemon.createVolume('mc', '16M');
  const a = await RawNbd.connect({ port: daemon.info.nbd.port });
  const b = await RawNbd.connect({ path: daemon.info.nbd.socketPath });
  await a.handshake('mc');
  await b.handshake('mc', { structured: true });
  const data = crypto.randomBytes(3 * MiB);
  // Spread over fresh chunks so the chunk map (not just file bytes) must be durable.
  assert.equal((await a.writeAt(MiB / 2, data)).error, 0);
  assert.equal((await a.command(CMD.WRITE_ZEROES, 0, 8 * MiB, MiB)).error, 0);
  assert.equal((await b.flush()).error, 0);
  const viaB = await b.readAt(MiB / 2, data.length);
  assert.ok(viaB.data.equals(data), 'connection B does not see what A wrote');
  await daemon.kill();
  daemon = await start(daemon.dataDir);
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('mc');
  assert.ok((await c.readAt(MiB / 2, data.length)).data.equals(data), 'flushed data lost after SIGKILL');
  assert.ok((await c.readAt(8 * MiB, MiB)).data.equals(Buffer.alloc(MiB)));
  c.close();
  await daemon.stop();
});

test('an unflushed write lost in a crash never reappears when its chunk is written again', async () => {
  // A write to a never-used chunk records the chunk as allocated and writes
  // its bytes; a crash may keep the bytes but lose the record. The chunk then
  // reads as zeros, and must keep doing so when it is allocated again later.
  const CHUNKS = 2048;
  const WRITE_BYTES = 4096;
  let daemon = await start();
  daemon.createVolume('fresh', `${CHUNKS}M`);
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('fresh');
  const spot = (i: number) => i * MiB + 64 * 1024 + (i % 7) * 8192;
  const pattern = (i: number) => Buffer.alloc(WRITE_BYTES, (i % 250) + 1);
  // One write at a time: each chunk record then waits behind the previous
  // metadata commit while its bytes are already written, and a kill at any
  // moment likely catches acknowledged writes whose record is not committed.
  let acked = 0;
  let enoughAcked: () => void = () => undefined;
  const someAcked = new Promise<void>((r) => (enoughAcked = r));
  const writer = (async () => {
    for (let i = 0; i < CHUNKS; i++) {
      assert.equal((await c.writeAt(spot(i), pattern(i))).error, 0);
      if (++acked === 20) enoughAcked();
    }
  })().then(
    () => null,
    (err: unknown) => err,
  );
  await someAcked;
  await new Promise((r) => setTimeout(r, crypto.randomInt(0, 300)));
  await daemon.kill();
  const stopped = await writer;
  assert.ok(stopped === null || stopped instanceof ConnectionClosed, String(stopped));
  assert.ok(acked >= 20 && acked < CHUNKS, `${acked} writes were acknowledged before the kill`);

  daemon = await start(daemon.dataDir);
  const v = await RawNbd.connect({ port: daemon.info.nbd.port });
  await v.handshake('fresh');
  const seen: Buffer[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    const r = await v.readAt(spot(i), WRITE_BYTES);
    assert.ok(r.data.equals(pattern(i)) || r.data.equals(Buffer.alloc(WRITE_BYTES)), `chunk ${i}: neither the write nor zeros`);
    seen.push(r.data);
  }
  assert.equal((await v.flush()).error, 0);
  // Allocate every chunk again through a write elsewhere in it.
  await Promise.all(Array.from({ length: CHUNKS }, (_, i) => v.writeAt(i * MiB, Buffer.alloc(512, 0xff))));
  assert.equal((await v.flush()).error, 0);
  const resurrected: number[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    const r = await v.readAt(spot(i), WRITE_BYTES);
    if (!r.data.equals(seen[i]!)) resurrected.push(i);
  }
  const lost = seen.slice(0, acked).filter((b, i) => !b.equals(pattern(i))).length;
  assert.deepEqual(resurrected, [], `${resurrected.length} chunks (of ${lost} whose acknowledged write was lost) show it again after reallocation`);
  v.close();
  await daemon.stop();
});
