// Reed-Solomon encode / reconstruct of one stripe (k data + m parity shards)
// through @ronomon/reed-solomon, off the event loop.
//
// Dispatch choice: the addon's own libuv-threadpool async work, NOT a piscina
// worker pool. `node dist/bench/ec-dispatch.js` on this 2-core AMD EPYC
// (shared, load ~3.8), 4+2, 1 MiB stripes, encode GB/s, median of 3:
//   in flight            1      2      4
//   addon threadpool   8.52   9.12   6.07  (4 is capped to EC_MAX_IN_FLIGHT = 2)
//   piscina, copied    0.80   1.07   0.90
//   piscina, SAB       4.74   4.70   4.31
// so the addon is 1.8-1.9x the best piscina variant and ~10x the default one.
// Why: the addon has no synchronous entry point, so a piscina worker still
// queues the same libuv threadpool work and only adds a message hop per stripe
// (plus a 1.5 MiB structured-clone copy unless buffers are SharedArrayBuffers,
// which would force every caller to allocate shared memory). A worker pool
// would also not isolate EC from fs I/O: libuv's threadpool is per process.
//
// Speed vs ISA-L (bench/ec-bench.ts): encode is ~0.15-0.4x of ISA-L per core.
// The addon is a scalar XOR bitmatrix code built for baseline x86-64; built
// with CFLAGS=-march=x86-64-v3 (AVX2) it is ~1.5-2x faster and gives identical
// parity, still ~0.45x. ISA-L uses GFNI/AVX-512 GF(2^8) tables; even ISA-L
// behind the same threadpool dispatch (prototype) loses about half at one
// stripe in flight, because the ~15-50 us round trip is as long as the encode.
//
// In-flight bound: at most EC_MAX_IN_FLIGHT stripes are queued on the libuv
// threadpool at once (default min(cores, UV_THREADPOOL_SIZE - 1) = 2 here), so
// fs, LMDB and DNS work always find a free threadpool thread; callers beyond
// that wait in a FIFO of at most EC_MAX_WAITING, past which EcBusy is thrown.
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { InsufficientShards as StorageInsufficientShards, StorageError } from "../errors.js";
import type { ErasureCodingPolicy } from "./policy.js";

const require = createRequire(import.meta.url);
// The addon's package "main" is binding.node, which ESM import cannot load.
const ReedSolomon = require("@ronomon/reed-solomon") as typeof import("@ronomon/reed-solomon");

/** Fewer than k shards survive: the stripe cannot be decoded. Is-a errors.ts InsufficientShards, so front ends map it. */
export class InsufficientShards extends StorageInsufficientShards {
  override name = "InsufficientShards";
  constructor(
    readonly availableShards: number,
    readonly requiredShards: number,
  ) {
    super(`stripe cannot be decoded: ${availableShards} shards available, ${requiredShards} required`);
  }
}

/** A caller passed a stripe or shard of the wrong shape (a programming error, not a media error). */
export class EcInputInvalid extends Error {
  override name = "EcInputInvalid";
}

/** More than EC_MAX_WAITING callers are already waiting for the EC threadpool slots. */
export class EcBusy extends StorageError {
  override name = "EcBusy";
}

const uvThreadpoolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
export const EC_MAX_IN_FLIGHT = Math.max(1, Math.min(availableParallelism(), uvThreadpoolSize - 1));
export const EC_MAX_WAITING = 1024;

let inFlight = 0;
const waiting: Array<() => void> = [];

async function acquireSlot(): Promise<void> {
  if (inFlight < EC_MAX_IN_FLIGHT) {
    inFlight++;
    return;
  }
  if (waiting.length >= EC_MAX_WAITING) {
    throw new EcBusy(`EC queue full: ${EC_MAX_IN_FLIGHT} in flight and ${EC_MAX_WAITING} waiting`);
  }
  // The slot is handed over by releaseSlot without decrementing inFlight.
  await new Promise<void>((resolve) => waiting.push(resolve));
}

function releaseSlot(): void {
  const next = waiting.shift();
  if (next !== undefined) next();
  else inFlight--;
}

// At most (16 - 1) x 4 = 60 (k, m) pairs exist, so this cache is bounded by the policy limits.
const contexts = new Map<number, Buffer>();
function contextFor(k: number, m: number): Buffer {
  const key = k * 64 + m;
  let context = contexts.get(key);
  if (context === undefined) {
    context = ReedSolomon.create(k, m);
    contexts.set(key, context);
  }
  return context;
}

async function runAddon(
  k: number,
  m: number,
  sources: number,
  targets: number,
  data: Buffer,
  parity: Buffer,
): Promise<void> {
  await acquireSlot();
  try {
    await new Promise<void>((resolve, reject) => {
      try {
        ReedSolomon.encode(contextFor(k, m), sources, targets, data, 0, data.length, parity, 0, parity.length, (error) =>
          error ? reject(error) : resolve(),
        );
      } catch (error) {
        reject(new EcInputInvalid(`reed-solomon rejected arguments: ${(error as Error).message}`));
      }
    });
  } finally {
    releaseSlot();
  }
}

function checkPolicyShape(policy: ErasureCodingPolicy): number {
  const k = policy.dataShards;
  const m = policy.parityShards;
  const shardBytes = policy.stripeSizeBytes / k;
  // The addon needs shards in multiples of 8 bytes; validated policies give 4 KiB multiples.
  if (!Number.isInteger(shardBytes) || shardBytes % 8 !== 0 || k < 1 || m < 1 || k + m > 30) {
    throw new EcInputInvalid(`policy ${policy.name} has an unusable shape k=${k} m=${m} stripe=${policy.stripeSizeBytes}`);
  }
  return shardBytes;
}

function shardViews(data: Buffer, parity: Buffer, k: number, m: number, shardBytes: number): Buffer[] {
  const shards: Buffer[] = [];
  for (let i = 0; i < k; i++) shards.push(data.subarray(i * shardBytes, (i + 1) * shardBytes));
  for (let i = 0; i < m; i++) shards.push(parity.subarray(i * shardBytes, (i + 1) * shardBytes));
  return shards;
}

/**
 * Encode one stripe. `data` holds up to stripeSizeBytes of chunk data; a
 * shorter buffer is zero-padded (copied). Returns k + m shards of
 * stripeSizeBytes / k bytes each: shards 0..k-1 are views into `data` itself
 * when it is exactly stripeSizeBytes long (no copy), k..k+m-1 views into
 * `parityInto` (m x shard bytes, reused by the caller to avoid a fresh
 * allocation per stripe, which costs more than the copy) or a fresh buffer.
 * Do not modify `data` or `parityInto` until the promise settles.
 */
export async function encodeStripe(policy: ErasureCodingPolicy, data: Buffer, parityInto?: Buffer): Promise<Buffer[]> {
  const shardBytes = checkPolicyShape(policy);
  const k = policy.dataShards;
  const m = policy.parityShards;
  if (data.length > policy.stripeSizeBytes) {
    throw new EcInputInvalid(`stripe data is ${data.length} bytes, policy ${policy.name} allows ${policy.stripeSizeBytes}`);
  }
  let stripe = data;
  if (data.length < policy.stripeSizeBytes) {
    stripe = Buffer.alloc(policy.stripeSizeBytes);
    data.copy(stripe);
  }
  // allocUnsafe is safe here: the addon writes every byte of every target
  // shard (each w x w block of a Cauchy bitmatrix is invertible, so each
  // bit-row has a 1 and dot() copies into every sub-chunk before XORing).
  // The all-loss-patterns tests would see stale bytes as wrong shards.
  if (parityInto !== undefined && parityInto.length !== shardBytes * m) {
    throw new EcInputInvalid(`parityInto is ${parityInto.length} bytes, expected ${shardBytes * m}`);
  }
  const parity = parityInto ?? Buffer.allocUnsafe(shardBytes * m);
  const sources = (1 << k) - 1;
  const targets = ((1 << m) - 1) << k;
  await runAddon(k, m, sources, targets, stripe, parity);
  return shardViews(stripe, parity, k, m, shardBytes);
}

function presentMask(policy: ErasureCodingPolicy, shards: ReadonlyArray<Buffer | undefined>, shardBytes: number): number {
  const total = policy.dataShards + policy.parityShards;
  if (shards.length !== total) {
    throw new EcInputInvalid(`expected ${total} shard slots (k + m), got ${shards.length}`);
  }
  let mask = 0;
  let present = 0;
  for (let i = 0; i < total; i++) {
    const shard = shards[i];
    if (shard === undefined) continue;
    if (shard.length !== shardBytes) {
      throw new EcInputInvalid(`shard ${i} is ${shard.length} bytes, expected ${shardBytes}`);
    }
    mask |= 1 << i;
    present++;
  }
  if (present < policy.dataShards) throw new InsufficientShards(present, policy.dataShards);
  return mask;
}

/** True when `shard` already sits at byte `offset` of `target` (the caller read it in place). */
function inPlace(shard: Buffer, target: Buffer, offset: number): boolean {
  return shard.buffer === target.buffer && shard.byteOffset === target.byteOffset + offset;
}

/** Copy present shards into one contiguous data buffer and one parity buffer, as the addon wants them. */
function gather(
  policy: ErasureCodingPolicy,
  shards: ReadonlyArray<Buffer | undefined>,
  shardBytes: number,
  data: Buffer,
  parity: Buffer,
): void {
  const k = policy.dataShards;
  for (let i = 0; i < shards.length; i++) {
    const shard = shards[i];
    if (shard === undefined) continue;
    const [target, offset] = i < k ? [data, i * shardBytes] : [parity, (i - k) * shardBytes];
    if (!inPlace(shard, target, offset)) shard.copy(target, offset);
  }
}

// Decode needs a parity buffer it never returns. Fresh multi-MiB buffers cost
// page faults on every call (measured: allocating per stripe halves decode
// throughput), so a few are kept for reuse, bounded in total bytes.
const SCRATCH_MAX_BYTES = 64 * 1024 * 1024;
let scratchBytes = 0;
const scratch: Buffer[] = [];

function takeScratch(lengthBytes: number): Buffer {
  const i = scratch.findIndex((b) => b.length === lengthBytes);
  if (i < 0) return Buffer.allocUnsafe(lengthBytes);
  const [buffer] = scratch.splice(i, 1);
  scratchBytes -= lengthBytes;
  return buffer!;
}

function returnScratch(buffer: Buffer): void {
  if (scratchBytes + buffer.length > SCRATCH_MAX_BYTES) return;
  scratch.push(buffer);
  scratchBytes += buffer.length;
}

/**
 * Rebuild every missing shard (undefined slot) of a stripe from the others.
 * `shards` has k + m slots in shard-index order; at most m may be undefined,
 * otherwise InsufficientShards. Returns all k + m shards (fresh buffers when
 * anything was rebuilt; the input array's buffers when nothing was missing).
 */
export async function reconstruct(
  policy: ErasureCodingPolicy,
  shards: ReadonlyArray<Buffer | undefined>,
): Promise<Buffer[]> {
  const shardBytes = checkPolicyShape(policy);
  const k = policy.dataShards;
  const m = policy.parityShards;
  const all = (1 << (k + m)) - 1;
  const sources = presentMask(policy, shards, shardBytes);
  const targets = all & ~sources;
  if (targets === 0) return shards as Buffer[];
  // Unzeroed: present shards are copied over, missing ones are targets the addon writes in full (see encodeStripe).
  const data = Buffer.allocUnsafe(shardBytes * k);
  const parity = Buffer.allocUnsafe(shardBytes * m);
  gather(policy, shards, shardBytes, data, parity);
  await runAddon(k, m, sources, targets, data, parity);
  return shardViews(data, parity, k, m, shardBytes);
}

/**
 * Degraded read: return the stripe's k x shardBytes data bytes in one buffer,
 * rebuilding only missing data shards (parity is not recomputed). At most m
 * slots may be undefined, otherwise InsufficientShards. The result is `into`
 * when given (stripeSizeBytes long, e.g. a cache buffer); data shards that
 * already sit at their place in `into` are not copied. `into` must not
 * overlap the shards anywhere else.
 */
export async function decodeStripe(
  policy: ErasureCodingPolicy,
  shards: ReadonlyArray<Buffer | undefined>,
  into?: Buffer,
): Promise<Buffer> {
  const shardBytes = checkPolicyShape(policy);
  const k = policy.dataShards;
  const m = policy.parityShards;
  if (into !== undefined && into.length !== shardBytes * k) {
    throw new EcInputInvalid(`into is ${into.length} bytes, expected ${shardBytes * k}`);
  }
  const sources = presentMask(policy, shards, shardBytes);
  const data = into ?? Buffer.allocUnsafe(shardBytes * k);
  const dataTargets = ((1 << k) - 1) & ~sources;
  if (dataTargets === 0) {
    gather(policy, shards.slice(0, k), shardBytes, data, data);
    return data;
  }
  const parity = takeScratch(shardBytes * m);
  try {
    gather(policy, shards, shardBytes, data, parity);
    await runAddon(k, m, sources, dataTargets, data, parity);
  } finally {
    returnScratch(parity);
  }
  return data;
}
