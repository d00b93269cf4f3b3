// Reed-Solomon stripe codec: byte-exact reconstruction for every combination
// of up to m lost shards (4+2, 8+3, 10+4), InsufficientShards beyond m, input
// checks, the bounded in-flight queue, the parity format (Cauchy over
// GF(2^8)) against an independent reference, and both dispatch paths.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  decodeStripe,
  EC_MAX_IN_FLIGHT,
  EC_MAX_WAITING,
  EC_SYNC_MAX_STRIPE_BYTES,
  EcBusy,
  EcInputInvalid,
  encodeStripe,
  InsufficientShards,
  reconstruct,
  reconstructMissing,
  crc32c,
} from "../src/dataplane/ec/codec.js";
import { validatePolicy, type ErasureCodingPolicy } from "../src/dataplane/ec/policy.js";
import { InsufficientShards as StorageInsufficientShards } from "../src/dataplane/errors.js";

function policy(k: number, m: number, stripeSizeBytes: number): ErasureCodingPolicy {
  return validatePolicy(`p-${k}-${m}`, { dataShards: k, parityShards: m, stripeSizeBytes }, k + m);
}

/** Every subset of {0..n-1} with 1..maxSize elements. */
function* lossPatterns(n: number, maxSize: number): Generator<number[]> {
  function* choose(start: number, size: number, prefix: number[]): Generator<number[]> {
    if (size === 0) {
      yield prefix;
      return;
    }
    for (let i = start; i <= n - size; i++) yield* choose(i + 1, size - 1, [...prefix, i]);
  }
  for (let size = 1; size <= maxSize; size++) yield* choose(0, size, []);
}

function binomialSum(n: number, maxSize: number): number {
  let total = 0;
  let c = 1;
  for (let size = 1; size <= maxSize; size++) {
    c = (c * (n - size + 1)) / size;
    total += c;
  }
  return total;
}

async function assertEveryLossPatternRecovers(p: ErasureCodingPolicy): Promise<void> {
  const k = p.dataShards;
  const m = p.parityShards;
  const data = randomBytes(p.stripeSizeBytes);
  const original = Buffer.from(data);
  const shards = (await encodeStripe(p, data)).map((s) => Buffer.from(s));
  assert.equal(shards.length, k + m);
  for (const s of shards) assert.equal(s.length, p.stripeSizeBytes / k);
  // Data shards are the stripe split in order, and encoding did not touch the input.
  assert.ok(Buffer.concat(shards.slice(0, k)).equals(original));
  assert.ok(data.equals(original));
  let patterns = 0;
  for (const lost of lossPatterns(k + m, m)) {
    const damaged = shards.map((s, i) => (lost.includes(i) ? undefined : s));
    const rebuilt = await reconstruct(p, damaged);
    for (let i = 0; i < k + m; i++) {
      assert.ok(rebuilt[i]!.equals(shards[i]!), `${k}+${m}: lost [${lost}] -> shard ${i} differs`);
    }
    const stripe = await decodeStripe(p, damaged);
    assert.ok(stripe.equals(original), `${k}+${m}: lost [${lost}] -> decoded stripe differs`);
    // The rebuild path: only the lost shards come back, in slot order.
    const only = await reconstructMissing(p, damaged);
    assert.deepEqual(only.missing, lost);
    assert.equal(only.rebuilt.length, lost.length);
    lost.forEach((i, t) => assert.ok(only.rebuilt[t]!.equals(shards[i]!), `${k}+${m}: lost [${lost}] -> reconstructMissing shard ${i} differs`));
    patterns++;
  }
  assert.equal(patterns, binomialSum(k + m, m));
}

test("4+2, 1 MiB: all 21 patterns of 1 or 2 lost shards rebuild byte-exact", async () => {
  await assertEveryLossPatternRecovers(policy(4, 2, 1048576));
});

test("8+3, 1 MiB: all 231 patterns of 1 to 3 lost shards rebuild byte-exact", async () => {
  await assertEveryLossPatternRecovers(policy(8, 3, 1048576));
});

test("10+4, 1000 KiB: all 1470 patterns of 1 to 4 lost shards rebuild byte-exact", async () => {
  await assertEveryLossPatternRecovers(policy(10, 4, 1024000));
});

test("more than m lost shards throws InsufficientShards with the counts", async () => {
  const p = policy(4, 2, 65536);
  const shards = await encodeStripe(p, randomBytes(65536));
  for (const lost of [[0, 1, 2], [3, 4, 5], [0, 2, 4, 5]]) {
    const damaged = shards.map((s, i) => (lost.includes(i) ? undefined : s));
    await assert.rejects(reconstruct(p, damaged), (error: unknown) => {
      assert.ok(error instanceof InsufficientShards);
      assert.ok(error instanceof StorageInsufficientShards, "front ends map the shared errors.ts class");
      assert.equal(error.availableShards, 6 - lost.length);
      assert.equal(error.requiredShards, 4);
      return true;
    });
    await assert.rejects(decodeStripe(p, damaged), InsufficientShards);
    await assert.rejects(reconstructMissing(p, damaged), InsufficientShards);
  }
});

test("a short stripe is zero-padded and the padding decodes as zeros", async () => {
  const p = policy(4, 2, 65536);
  const data = randomBytes(10000);
  const shards = await encodeStripe(p, data);
  const decoded = await decodeStripe(p, [undefined, shards[1], undefined, shards[3], shards[4], shards[5]]);
  assert.equal(decoded.length, 65536);
  assert.ok(decoded.subarray(0, 10000).equals(data));
  assert.ok(decoded.subarray(10000).equals(Buffer.alloc(65536 - 10000)));
});

test("changing one data byte changes every parity shard", async () => {
  const p = policy(4, 2, 65536);
  const data = randomBytes(65536);
  const a = (await encodeStripe(p, Buffer.from(data))).map((s) => Buffer.from(s));
  data[40000]! ^= 0x01;
  const b = await encodeStripe(p, data);
  assert.ok(!a[4]!.equals(b[4]!));
  assert.ok(!a[5]!.equals(b[5]!));
  assert.ok(!a[4]!.equals(a[5]!));
});

test("caller-owned buffers: parity reused across stripes, decode into a buffer holding shards in place", async () => {
  const p = policy(4, 2, 65536);
  const parity = Buffer.alloc(2 * 16384);
  const first = randomBytes(65536);
  const firstShards = (await encodeStripe(p, first, parity)).map((s) => Buffer.from(s));
  assert.equal(firstShards.length, 6);
  const second = randomBytes(65536);
  const shards = await encodeStripe(p, second, parity);
  assert.equal(shards[4]!.buffer, parity.buffer);
  assert.ok(!shards[4]!.equals(firstShards[4]!));

  // A reader that lands surviving data shards straight in the output buffer.
  const into = Buffer.alloc(65536);
  shards[1]!.copy(into, 16384);
  shards[3]!.copy(into, 49152);
  const inPlace = [undefined, into.subarray(16384, 32768), undefined, into.subarray(49152), shards[4], shards[5]];
  const result = await decodeStripe(p, inPlace, into);
  assert.equal(result, into);
  assert.ok(into.equals(second));
  await assert.rejects(decodeStripe(p, inPlace, Buffer.alloc(100)), /into is 100 bytes/);
  await assert.rejects(encodeStripe(p, second, Buffer.alloc(100)), /parityInto is 100 bytes/);
});

test("wrong-shaped input is rejected with EcInputInvalid", async () => {
  const p = policy(4, 2, 65536);
  await assert.rejects(encodeStripe(p, Buffer.alloc(65537)), EcInputInvalid);
  const shards = await encodeStripe(p, randomBytes(65536));
  await assert.rejects(reconstruct(p, shards.slice(0, 5)), /expected 6 shard slots/);
  await assert.rejects(reconstruct(p, [shards[0]!.subarray(1), ...shards.slice(1)]), /shard 0 is 16383 bytes/);
});

test("many concurrent stripes all encode correctly through the bounded in-flight queue", async () => {
  const p = policy(4, 2, 65536);
  const stripes = Array.from({ length: 64 }, () => randomBytes(65536));
  const encoded = await Promise.all(stripes.map((s) => encodeStripe(p, s)));
  const decoded = await Promise.all(encoded.map((shards) => decodeStripe(p, [undefined, undefined, ...shards.slice(2)])));
  decoded.forEach((d, i) => assert.ok(d.equals(stripes[i]!), `stripe ${i}`));
});

test("beyond EC_MAX_IN_FLIGHT + EC_MAX_WAITING concurrent calls, the excess fails fast with EcBusy", async () => {
  const p = policy(2, 1, 8192);
  const data = Buffer.alloc(8192, 7);
  const excess = 5;
  const results = await Promise.allSettled(
    Array.from({ length: EC_MAX_IN_FLIGHT + EC_MAX_WAITING + excess }, () => encodeStripe(p, data)),
  );
  const busy = results.filter((r) => r.status === "rejected" && r.reason instanceof EcBusy).length;
  const ok = results.filter((r) => r.status === "fulfilled").length;
  assert.equal(busy, excess);
  assert.equal(ok, EC_MAX_IN_FLIGHT + EC_MAX_WAITING);
});

// Reference GF(2^8) arithmetic, polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d),
// written independently of ISA-L: the parity bytes on disk are defined by it.
function gfMul(a: number, b: number): number {
  let product = 0;
  for (; b > 0; b >>= 1) {
    if (b & 1) product ^= a;
    a <<= 1;
    if (a & 0x100) a ^= 0x11d;
  }
  return product;
}

function gfInverse(a: number): number {
  for (let x = 1; x < 256; x++) if (gfMul(a, x) === 1) return x;
  throw new Error(`0 has no inverse`);
}

test("parity is the systematic Cauchy code: parity row i, data column j has coefficient 1 / (i xor j) in GF(2^8)/0x11d", async () => {
  for (const [k, m] of [[4, 2], [8, 3], [10, 4]] as const) {
    const stripeSizeBytes = k * 4096;
    const p = policy(k, m, stripeSizeBytes);
    const data = randomBytes(stripeSizeBytes);
    const shards = await encodeStripe(p, data);
    const shardBytes = 4096;
    for (let i = k; i < k + m; i++) {
      const coefficients = Array.from({ length: k }, (_, j) => gfInverse(i ^ j));
      const expected = Buffer.alloc(shardBytes);
      for (let byte = 0; byte < shardBytes; byte++) {
        let sum = 0;
        for (let j = 0; j < k; j++) sum ^= gfMul(coefficients[j]!, data[j * shardBytes + byte]!);
        expected[byte] = sum;
      }
      assert.ok(shards[i]!.equals(expected), `${k}+${m}: parity shard ${i} differs from the reference Cauchy code`);
    }
  }
});

test("a burst of synchronous stripes codes EC_MAX_IN_FLIGHT per event-loop turn, so I/O callbacks run in between", async () => {
  const p = policy(4, 2, 65536);
  assert.ok(p.stripeSizeBytes <= EC_SYNC_MAX_STRIPE_BYTES);
  const stripes = Array.from({ length: 3 * EC_MAX_IN_FLIGHT + 1 }, () => randomBytes(65536));
  let done = 0;
  const doneAtTurn: number[] = [];
  // Scheduled before the burst: the first check phase after it, then one per turn.
  const turns = new Promise<void>((resolve) => {
    const onTurn = (): void => {
      doneAtTurn.push(done);
      if (done === stripes.length) resolve();
      else setImmediate(onTurn);
    };
    setImmediate(onTurn);
  });
  const encoded = stripes.map((s) => encodeStripe(p, s).then((shards) => (done++, shards)));
  await turns;
  assert.equal(doneAtTurn[0], EC_MAX_IN_FLIGHT, "first turn: only the slots' worth of stripes ran");
  for (let t = 1; t < doneAtTurn.length; t++) {
    assert.ok(doneAtTurn[t]! - doneAtTurn[t - 1]! <= EC_MAX_IN_FLIGHT, `turn ${t}: ${doneAtTurn[t]! - doneAtTurn[t - 1]!} stripes`);
  }
  const shards = await Promise.all(encoded);
  for (let i = 0; i < stripes.length; i++) {
    const decoded = await decodeStripe(p, [undefined, shards[i]![1], undefined, ...shards[i]!.slice(3)]);
    assert.ok(decoded.equals(stripes[i]!), `stripe ${i}`);
  }
});

test("stripes above EC_SYNC_MAX_STRIPE_BYTES go through the threadpool and rebuild byte-exact", async () => {
  const stripeSizeBytes = EC_SYNC_MAX_STRIPE_BYTES + 4 * 4096;
  const p = policy(4, 2, stripeSizeBytes);
  const data = randomBytes(stripeSizeBytes);
  const shards = (await encodeStripe(p, data)).map((s) => Buffer.from(s));
  assert.ok(Buffer.concat(shards.slice(0, 4)).equals(data));
  for (const lost of [[0, 1], [2, 5], [4, 5], [3]]) {
    const damaged = shards.map((s, i) => (lost.includes(i) ? undefined : s));
    assert.ok((await decodeStripe(p, damaged)).equals(data), `lost [${lost}]: decoded stripe differs`);
    const rebuilt = await reconstruct(p, damaged);
    for (const i of lost) assert.ok(rebuilt[i]!.equals(shards[i]!), `lost [${lost}]: shard ${i} differs`);
  }
});

test("crc32c (ISA-L) is the standard CRC32C: check value, and equal to @node-rs/crc32 for any length and chaining", async () => {
  const { crc32c: reference } = await import("@node-rs/crc32");
  assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  for (const lengthBytes of [0, 1, 3, 8, 63, 64, 65, 4095, 262144, 262208]) {
    const bytes = randomBytes(lengthBytes);
    const previous = randomBytes(4).readUInt32LE(0);
    assert.equal(crc32c(bytes), reference(bytes), `${lengthBytes} bytes`);
    assert.equal(crc32c(bytes, previous), reference(bytes, previous), `${lengthBytes} bytes after 0x${previous.toString(16)}`);
    // Chained over a split equals one pass over the whole.
    const cut = lengthBytes >> 1;
    assert.equal(crc32c(bytes.subarray(cut), crc32c(bytes.subarray(0, cut))), crc32c(bytes));
  }
});
