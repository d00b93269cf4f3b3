// Get/put throughput and p50/p99 latency per tier: L1 (CacheManager, S3-LFU) beside
// lru-cache, and L2 (mmap'd file) beside the fallback design: positional fs reads/writes of
// CRC32C-checked 4 KiB slots in a preallocated file.
// Ours and the peer alternate round by round in one run (see measure()). 4 KiB values, 10,000 keys;
// one more miss-path row at the daemon's default L1 size (128 MiB, src/config.ts) over 131,072 keys.
//
// Every L1 row runs twice, once per way of holding keys:
// - "fresh key": the key string is built for each operation, as the daemon's readers build it
//   (`stripe/<owner>/<chunk>/...` in stripe-store.ts, a digest's hex in cold-holders.ts), so
//   both sides hash it: V8 inside the Map for lru-cache, hashKey() for ours;
// - "reused key": the same string objects from an array every time. V8 caches a string's
//   hash in the string, so lru-cache's Map lookups skip hashing entirely, while ours reads
//   the characters again (charCodeAt on the cons strings a template literal makes).
// The daemon never looks a key up twice with the same string object; the reused rows show
// what a caller that keeps its key strings would see.
// Run: npx tsc -p tsconfig.json && node dist/bench/cache-ops.js
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { LRUCache } from 'lru-cache';
import { CacheManager } from '../src/dataplane/cache/index.js';
import { L2File } from '../src/dataplane/cache/l2-file.js';

const VALUE_BYTES = 4096;
const KEY_COUNT = 10_000;
const ROUNDS = 9;
const ROUND_MS = 100;
const TRIALS = 3;
const LATENCY_SAMPLES = 100_000;

const keys = Array.from({ length: KEY_COUNT }, (_, i) => `vol/bench/${i}`);
const values = Array.from({ length: 64 }, (_, i) => Buffer.alloc(VALUE_BYTES, i));
// A fixed pseudo-random visiting order, identical for every contender.
const order = new Uint32Array(1 << 20);
{
  let x = 0x9e3779b9;
  for (let i = 0; i < order.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    order[i] = (x >>> 0) % KEY_COUNT;
  }
}
const ORDER_MASK = order.length - 1;

// The daemon's default L1 (128 MiB) of 4 KiB blocks, a quarter of the keys fitting, as above.
const LARGE_L1_BYTES = 128 * 1024 * 1024;
const LARGE_KEY_COUNT = 131_072;
const largeKeys = Array.from({ length: LARGE_KEY_COUNT }, (_, i) => `vol/bench/${i}`);
const largeOrder = new Uint32Array(1 << 20);
{
  let x = 0x2545f491;
  for (let i = 0; i < largeOrder.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    largeOrder[i] = (x >>> 0) % LARGE_KEY_COUNT;
  }
}

interface Figure {
  opsPerSec: number;
  p50Ns: number;
  p99Ns: number;
}

let sink = 0;

/** Throughput of op over about roundMs of CPU time (CPU time, so being descheduled on a shared machine does not count). */
function throughput(op: (i: number) => void, start: number, roundMs: number): number {
  let ops = 0;
  const t0 = process.cpuUsage();
  for (;;) {
    for (let j = 0; j < 2048; j++) op(start + ops++);
    const u = process.cpuUsage(t0);
    const cpuUs = u.user + u.system;
    if (cpuUs >= roundMs * 1000) return ops / (cpuUs / 1e6);
  }
}

function latencies(op: (i: number) => void, start: number): { p50Ns: number; p99Ns: number } {
  const lat = new Float64Array(LATENCY_SAMPLES);
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    const s = process.hrtime.bigint();
    op(start + i);
    lat[i] = Number(process.hrtime.bigint() - s);
  }
  lat.sort();
  return { p50Ns: lat[LATENCY_SAMPLES >> 1]!, p99Ns: lat[Math.floor(LATENCY_SAMPLES * 0.99)]! };
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[xs.length >> 1]!;

/**
 * Ours and the peer run in alternating rounds (order swapped every round) and each figure
 * is the median over the rounds; the ratio is the median of the per-round ratios, which
 * cancels most of the load other processes put on the shared cores.
 */
function measure(ours: (i: number) => void, peer: (i: number) => void): [Figure, Figure, number] {
  // Warm-up: JIT, and long-lived entries promoted out of the young generation (as in a
  // daemon, where cached entries are old), for both contenders.
  for (let r = 0; r < 3; r++) {
    throughput(ours, 0, ROUND_MS);
    throughput(peer, 0, ROUND_MS);
  }
  const a: number[] = [];
  const b: number[] = [];
  const ratios: number[] = [];
  let cursor = 0;
  for (let r = 0; r < ROUNDS; r++) {
    let x: number;
    let y: number;
    if (r % 2 === 0) {
      x = throughput(ours, cursor, ROUND_MS);
      y = throughput(peer, cursor, ROUND_MS);
    } else {
      y = throughput(peer, cursor, ROUND_MS);
      x = throughput(ours, cursor, ROUND_MS);
    }
    cursor += 1 << 16;
    a.push(x);
    b.push(y);
    ratios.push(x / y);
  }
  const la: { p50Ns: number; p99Ns: number }[] = [];
  const lb: { p50Ns: number; p99Ns: number }[] = [];
  for (let t = 0; t < TRIALS; t++) {
    la.push(latencies(ours, cursor));
    lb.push(latencies(peer, cursor));
    cursor += LATENCY_SAMPLES;
  }
  const fig = (ops: number[], lat: { p50Ns: number; p99Ns: number }[]): Figure => ({
    opsPerSec: median(ops),
    p50Ns: median(lat.map((l) => l.p50Ns)),
    p99Ns: median(lat.map((l) => l.p99Ns)),
  });
  return [fig(a, la), fig(b, lb), median(ratios)];
}

const rows: string[] = [];
function report(name: string, peerName: string, [ours, peer, ratio]: [Figure, Figure, number]): void {
  const fmt = (f: Figure) =>
    `${(f.opsPerSec / 1e6).toFixed(2).padStart(6)} Mops/s p50 ${String(Math.round(f.p50Ns)).padStart(6)} ns p99 ${String(Math.round(f.p99Ns)).padStart(7)} ns`;
  rows.push(`${name.padEnd(52)} ours ${fmt(ours)} | ${peerName.padEnd(10)} ${fmt(peer)} | ops ratio ${ratio.toFixed(2)}x`);
  console.log(rows[rows.length - 1]);
}

const dir = mkdtempSync(join(tmpdir(), 'cache-ops-'));
try {
  // ---- L1: all keys fit (hits), values shared, not copied, in both.
  const l1CapacityBytes = 2 * KEY_COUNT * (VALUE_BYTES + 200);
  const cm = new CacheManager({ l1CapacityBytes, l2: undefined });
  await cm.open();
  const lru = new LRUCache<string, Buffer>({ maxSize: l1CapacityBytes, sizeCalculation: (v) => v.length });
  for (let i = 0; i < KEY_COUNT; i++) {
    cm.put(keys[i]!, values[i & 63]!);
    lru.set(keys[i]!, values[i & 63]!);
  }
  // Fresh-key rows first: the daemon's case, and the one the 0.8x target is read on.
  report(
    'L1 get (hit), fresh key',
    'lru-cache',
    measure(
      (i) => {
        sink += cm.getCached(`vol/bench/${order[i & ORDER_MASK]!}`)!.length;
      },
      (i) => {
        sink += lru.get(`vol/bench/${order[i & ORDER_MASK]!}`)!.length;
      },
    ),
  );
  report(
    'L1 get (hit), reused key',
    'lru-cache',
    measure(
      (i) => {
        sink += cm.getCached(keys[order[i & ORDER_MASK]!]!)!.length;
      },
      (i) => {
        sink += lru.get(keys[order[i & ORDER_MASK]!]!)!.length;
      },
    ),
  );
  report(
    'L1 put (update), fresh key',
    'lru-cache',
    measure(
      (i) => cm.put(`vol/bench/${order[i & ORDER_MASK]!}`, values[i & 63]!),
      (i) => {
        lru.set(`vol/bench/${order[i & ORDER_MASK]!}`, values[i & 63]!);
      },
    ),
  );
  report(
    'L1 put (update), reused key',
    'lru-cache',
    measure(
      (i) => cm.put(keys[order[i & ORDER_MASK]!]!, values[i & 63]!),
      (i) => {
        lru.set(keys[order[i & ORDER_MASK]!]!, values[i & 63]!);
      },
    ),
  );
  await cm.close();

  // ---- L1 under eviction: capacity holds 1/4 of the keys; every miss is followed by a put
  // (of the same string, as the daemon's read-through does).
  const smallBytes = (KEY_COUNT / 4) * (VALUE_BYTES + 200);
  const cmSmall = new CacheManager({ l1CapacityBytes: smallBytes, l2: undefined });
  await cmSmall.open();
  const lruSmall = new LRUCache<string, Buffer>({ maxSize: smallBytes, sizeCalculation: (v) => v.length + 200 });
  report(
    'L1 get+put-on-miss (25% fits), fresh key',
    'lru-cache',
    measure(
      (i) => {
        const k = `vol/bench/${order[i & ORDER_MASK]!}`;
        if (cmSmall.getCached(k) === undefined) cmSmall.put(k, values[i & 63]!);
      },
      (i) => {
        const k = `vol/bench/${order[i & ORDER_MASK]!}`;
        if (lruSmall.get(k) === undefined) lruSmall.set(k, values[i & 63]!);
      },
    ),
  );
  report(
    'L1 get+put-on-miss (25% fits), reused key',
    'lru-cache',
    measure(
      (i) => {
        const k = keys[order[i & ORDER_MASK]!]!;
        if (cmSmall.getCached(k) === undefined) cmSmall.put(k, values[i & 63]!);
      },
      (i) => {
        const k = keys[order[i & ORDER_MASK]!]!;
        if (lruSmall.get(k) === undefined) lruSmall.set(k, values[i & 63]!);
      },
    ),
  );
  await cmSmall.close();

  // ---- The same at the daemon's default L1 size: 128 MiB, ~31,000 entries of 131,072 keys.
  const cmLarge = new CacheManager({ l1CapacityBytes: LARGE_L1_BYTES, l2: undefined });
  await cmLarge.open();
  const lruLarge = new LRUCache<string, Buffer>({ maxSize: LARGE_L1_BYTES, sizeCalculation: (v) => v.length + 200 });
  report(
    'L1 get+put-on-miss, 128 MiB (~24% fits), fresh key',
    'lru-cache',
    measure(
      (i) => {
        const k = `vol/bench/${largeOrder[i & ORDER_MASK]!}`;
        if (cmLarge.getCached(k) === undefined) cmLarge.put(k, values[i & 63]!);
      },
      (i) => {
        const k = `vol/bench/${largeOrder[i & ORDER_MASK]!}`;
        if (lruLarge.get(k) === undefined) lruLarge.set(k, values[i & 63]!);
      },
    ),
  );
  report(
    'L1 get+put-on-miss, 128 MiB (~24% fits), reused key',
    'lru-cache',
    measure(
      (i) => {
        const k = largeKeys[largeOrder[i & ORDER_MASK]!]!;
        if (cmLarge.getCached(k) === undefined) cmLarge.put(k, values[i & 63]!);
      },
      (i) => {
        const k = largeKeys[largeOrder[i & ORDER_MASK]!]!;
        if (lruLarge.get(k) === undefined) lruLarge.set(k, values[i & 63]!);
      },
    ),
  );
  await cmLarge.close();

  // ---- L2: the mmap'd ring file beside pread/pwrite of 4 KiB slots in a preallocated file.
  const l2Bytes = 2 * KEY_COUNT * (VALUE_BYTES + 512) + (1 << 20);
  const l2 = new L2File(join(dir, 'bench.l2'), l2Bytes);
  l2.open();
  for (let i = 0; i < KEY_COUNT; i++) l2.put(keys[i]!, values[i & 63]!, VALUE_BYTES, false);
  const slotPath = join(dir, 'bench.slots');
  const fd = openSync(slotPath, 'w+');
  // Fallback slot: 8-byte header (magic, crc32c) + value.
  const SLOT_BYTES = 8 + VALUE_BYTES;
  const slotBuf = Buffer.alloc(SLOT_BYTES);
  for (let i = 0; i < KEY_COUNT; i++) {
    values[i & 63]!.copy(slotBuf, 8);
    slotBuf.writeUInt32LE(crc32c(slotBuf.subarray(8)), 4);
    writeSync(fd, slotBuf, 0, SLOT_BYTES, i * SLOT_BYTES);
  }
  report(
    'L2 get (hit, CRC32C checked, copied)',
    'pread+crc',
    measure(
      (i) => {
      sink += l2.get(keys[order[i & ORDER_MASK]!]!)!.stored.length;
    },
      (i) => {
      // The fallback must check the CRC too, and hand out its own copy.
      const slot = Buffer.allocUnsafe(SLOT_BYTES);
      readSync(fd, slot, 0, SLOT_BYTES, order[i & ORDER_MASK]! * SLOT_BYTES);
      if (crc32c(slot.subarray(8)) !== slot.readUInt32LE(4)) throw new Error('slot crc');
      sink += slot.length;
    },
    ),
  );
  report(
    'L2 put (append, CRC32C, tombstone)',
    'pwrite+crc',
    measure(
      (i) => {
      l2.put(keys[order[i & ORDER_MASK]!]!, values[i & 63]!, VALUE_BYTES, false);
    },
      (i) => {
      const v = values[i & 63]!;
      v.copy(slotBuf, 8);
      slotBuf.writeUInt32LE(crc32c(slotBuf.subarray(8)), 4);
      writeSync(fd, slotBuf, 0, SLOT_BYTES, order[i & ORDER_MASK]! * SLOT_BYTES);
    },
    ),
  );
  closeSync(fd);
  l2.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(
  `(sink ${sink > 0 ? 'ok' : 'empty'}; ops/s: medians of ${ROUNDS} alternating rounds of ${ROUND_MS} ms CPU time, ratio = median per-round ratio; ` +
    `latency: medians of ${TRIALS} x ${LATENCY_SAMPLES} timed ops, including ~hrtime overhead on both sides)`,
);
