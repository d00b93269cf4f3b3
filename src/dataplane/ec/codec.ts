// Reed-Solomon encode / reconstruct of one stripe (k data + m parity shards)
// through Intel ISA-L (native/ec_isal.c), bounded in flight.
//
// Why ISA-L and not @ronomon/reed-solomon, which DESIGN.md chose (issue #3
// asks for encode >= 0.8x ISA-L per core): `node dist/bench/ec-bench.js`, 1 MiB
// stripes (10+4: 1000 KiB), GB per CPU-second, medians of 3 runs on this
// loaded 2-core AMD EPYC, vs ISA-L from C (bench/ec-isal.c) in the same run:
//                       encode 4+2 / 8+3 / 10+4    decode 4+2 / 8+3 / 10+4
//   ronomon, threadpool       0.27x  0.25x  0.20x           0.18x  0.18x  0.19x
//   ISA-L, this thread        0.84x  0.88x  0.89x           0.64x  0.69x  0.71x
// (ISA-L here: 18.9 / 14.5 / 11.9 GB/s encode; decode includes copying the
// surviving data shards into the output, 0.89-0.90x without that copy).
// Full tables and method: native/README.md.
// ronomon is a portable 64-bit XOR bitmatrix code; ISA-L uses AVX2/AVX-512
// (GFNI) GF(2^8) kernels. The package stays installed but nothing uses it.
//
// Why synchronous: a 1 MiB stripe is ~45 us of ISA-L on one core, about the
// cost of one libuv threadpool round trip; behind async dispatch ISA-L fell to
// 0.49-0.67x per core (the handoff burns CPU too, not only time). So stripes up to
// EC_SYNC_MAX_STRIPE_BYTES are coded on the calling thread, at most
// EC_MAX_IN_FLIGHT per event-loop turn; larger ones go to the threadpool.
//
// Format (on disk since this switch; nothing persistent predates it):
// systematic Cauchy code from gf_gen_cauchy1_matrix, GF(2^8) with polynomial
// 0x11d: parity shard i (k <= i < k + m) = XOR over data shards j of
// (1 / (i xor j)) * shard j. Pinned by a reference test in test/ec-codec.test.ts.
import { availableParallelism } from "node:os";
import { InsufficientShards as StorageInsufficientShards, StorageError } from "../errors.js";
import type { ErasureCodingPolicy } from "./policy.js";
import { loadNativeAddon } from "../../native-addon.js";

interface IsalAddon {
  /** GF tables for "from shards sourceIndexes (k of them) produce shards targetIndexes" of the Cauchy code. */
  tables(k: number, m: number, sourceIndexes: Uint8Array, targetIndexes: Uint8Array): Buffer;
  /** ec_encode_data over shardBytes of each buffer, on this thread. */
  code(tables: Buffer, sources: Buffer[], targets: Buffer[], shardBytes: number): void;
  /** The same on the libuv threadpool; the addon keeps every buffer referenced until `done`. */
  codeAsync(tables: Buffer, sources: Buffer[], targets: Buffer[], shardBytes: number, done: (error?: Error) => void): void;
  /** CRC32C of `bytes`, continuing from `previous` (a CRC32C of the bytes before). */
  crc32c(bytes: Uint8Array, previous?: number): number;
  /** Pool-rebuild kernel on the threadpool: see native/ec_isal.c and readRebuildLostShards(). */
  rebuildReadAsync(
    fds: Int32Array,
    offsets: Float64Array,
    tables: Buffer[],
    outs: Buffer[],
    k: number,
    shardBytes: number,
    headers: Buffer,
    ok: Uint8Array,
    done: (error?: Error) => void,
  ): void;
  /** sync_file_range(SYNC_FILE_RANGE_WRITE) on the threadpool. */
  writebackAsync(fd: number, offset: number, length: number, done: (error?: Error) => void): void;
}

/** native/build/Release/ec_isal.node (see src/native-addon.ts). */
const isal = loadNativeAddon<IsalAddon>('ec_isal', 'needs libisal-dev');

/**
 * CRC32C (Castagnoli), chained like @node-rs/crc32's crc32c(bytes, previous)
 * and equal to it, through ISA-L's crc32_iscsi: 10.2 GB/s vs 1.3 GB/s for
 * @node-rs/crc32 on a 256 KiB shard (same process, loaded 2-core VM). Shard
 * records are checked on every cold read and scrub, so their CRC was a fifth
 * of a rebuild's CPU.
 */
export function crc32c(bytes: Uint8Array, previous = 0): number {
  return isal.crc32c(bytes, previous);
}

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

/** More than EC_MAX_WAITING callers are already waiting for an EC slot. */
export class EcBusy extends StorageError {
  override name = "EcBusy";
}

const uvThreadpoolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
/**
 * Stripes coded at once: on the threadpool (large stripes) the slots keep
 * threads free for fs, LMDB and DNS; on the calling thread (the common case)
 * they bound how many stripes one event-loop turn codes (releaseAfterBurst),
 * so a burst of callers blocks the loop for at most EC_MAX_IN_FLIGHT stripes
 * before I/O runs again. Callers beyond that wait in a FIFO of at most
 * EC_MAX_WAITING, past which EcBusy is thrown.
 */
export const EC_MAX_IN_FLIGHT = Math.max(1, Math.min(availableParallelism(), uvThreadpoolSize - 1));
export const EC_MAX_WAITING = 1024;
/**
 * Stripes up to this size are coded synchronously: a 1 MiB stripe is ~45 us of
 * ISA-L, less than the 15-50 us threadpool round trip would add (measured in
 * native/README.md). Above it (policies allow up to 64 MiB) the work goes to
 * the threadpool so one stripe never blocks the event loop for milliseconds.
 */
export const EC_SYNC_MAX_STRIPE_BYTES = 4 * 1024 * 1024;
/** Decode tables cached per (shape, surviving shards, rebuilt shards); <= 2 KiB each at k <= 16, m <= 4. */
export const EC_DECODE_TABLES_MAX = 1024;

let inFlight = 0;
const waiting: Array<() => void> = [];
let heldUntilNextTurn = 0;
let turnReleaseScheduled = false;

function waitForSlot(): Promise<void> {
  if (waiting.length >= EC_MAX_WAITING) {
    return Promise.reject(new EcBusy(`EC queue full: ${EC_MAX_IN_FLIGHT} in flight and ${EC_MAX_WAITING} waiting`));
  }
  // The slot is handed over by releaseSlot without decrementing inFlight.
  return new Promise<void>((resolve) => waiting.push(resolve));
}

function releaseSlot(): void {
  const next = waiting.shift();
  if (next !== undefined) next();
  else inFlight--;
}

function releaseHeldSlots(): void {
  turnReleaseScheduled = false;
  const held = heldUntilNextTurn;
  heldUntilNextTurn = 0;
  for (let i = 0; i < held; i++) releaseSlot();
}

// A synchronous stripe keeps its slot until the current synchronous burst of
// calls has ended (a microtask), so callers issued together still count as
// concurrent. If others are waiting by then, the slot passes to them only on
// the next event-loop turn: a queue drains EC_MAX_IN_FLIGHT stripes per turn,
// with I/O callbacks running in between.
function releaseAfterBurst(): void {
  if (waiting.length === 0) {
    inFlight--;
    return;
  }
  heldUntilNextTurn++;
  if (!turnReleaseScheduled) {
    turnReleaseScheduled = true;
    setImmediate(releaseHeldSlots);
  }
}

function asInputInvalid(error: unknown): EcInputInvalid {
  return new EcInputInvalid(`ISA-L rejected arguments: ${(error as Error).message}`);
}

/** Produce `targets` from `sources` (k shards) with `tables`, in one EC slot. */
async function runCode(tables: Buffer, sources: Buffer[], targets: Buffer[], shardBytes: number, stripeBytes: number): Promise<void> {
  if (inFlight < EC_MAX_IN_FLIGHT) inFlight++;
  else await waitForSlot();
  if (stripeBytes <= EC_SYNC_MAX_STRIPE_BYTES) {
    try {
      isal.code(tables, sources, targets, shardBytes);
    } catch (error) {
      throw asInputInvalid(error);
    } finally {
      queueMicrotask(releaseAfterBurst);
    }
    return;
  }
  try {
    await new Promise<void>((resolve, reject) => {
      try {
        isal.codeAsync(tables, sources, targets, shardBytes, (error) => (error ? reject(error) : resolve()));
      } catch (error) {
        reject(asInputInvalid(error));
      }
    });
  } finally {
    releaseSlot();
  }
}

function indexes(from: number, count: number): Uint8Array {
  return Uint8Array.from({ length: count }, (_, i) => from + i);
}

// At most (16 - 1) x 4 = 60 (k, m) pairs exist, so this cache is bounded by the policy limits.
const encodeTables = new Map<number, Buffer>();
function encodeTablesFor(k: number, m: number): Buffer {
  const key = k * 64 + m;
  let tables = encodeTables.get(key);
  if (tables === undefined) {
    tables = isal.tables(k, m, indexes(0, k), indexes(k, m));
    encodeTables.set(key, tables);
  }
  return tables;
}

// LRU by Map insertion order: a hit is moved to the end, the first key is evicted at the bound.
// Building tables is a k x k GF inversion plus ec_init_tables (a few us); a
// degraded stripe's pattern repeats for every stripe on the same lost pools.
// The sources are always the first k present shards, so (shape, missing
// shards, which of them are produced) identifies the tables: a number < 2^42.
const decodeTables = new Map<number, Buffer>();
function decodeTablesFor(k: number, m: number, sourceIndexes: number[], missing: number[], dataOnly: boolean): Buffer {
  let missingMask = 0;
  for (const i of missing) missingMask |= 1 << i;
  const key = ((k * 64 + m) * 2 + (dataOnly ? 1 : 0)) * 2 ** 30 + (missingMask >>> 0);
  let tables = decodeTables.get(key);
  if (tables !== undefined) {
    decodeTables.delete(key);
  } else {
    const targets = dataOnly ? missing.filter((i) => i < k) : missing;
    tables = isal.tables(k, m, Uint8Array.from(sourceIndexes), Uint8Array.from(targets));
    if (decodeTables.size >= EC_DECODE_TABLES_MAX) decodeTables.delete(decodeTables.keys().next().value!);
  }
  decodeTables.set(key, tables);
  return tables;
}

function checkPolicyShape(policy: ErasureCodingPolicy): number {
  const k = policy.dataShards;
  const m = policy.parityShards;
  const shardBytes = policy.stripeSizeBytes / k;
  // ISA-L takes any shard length; validated policies give 4 KiB multiples.
  if (!Number.isInteger(shardBytes) || shardBytes < 1 || shardBytes > 0x7fffffff || k < 1 || m < 1 || k + m > 30) {
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
  if (parityInto !== undefined && parityInto.length !== shardBytes * m) {
    throw new EcInputInvalid(`parityInto is ${parityInto.length} bytes, expected ${shardBytes * m}`);
  }
  // allocUnsafe is safe: ec_encode_data stores every byte of every target
  // shard (it never reads them); the all-loss-patterns tests would see stale bytes.
  const parity = parityInto ?? Buffer.allocUnsafe(shardBytes * m);
  const shards = shardViews(stripe, parity, k, m, shardBytes);
  await runCode(encodeTablesFor(k, m), shards.slice(0, k), shards.slice(k), shardBytes, policy.stripeSizeBytes);
  return shards;
}

/** Validate the slots; return the first k present shard indexes (data first) and the missing ones. */
function survey(
  policy: ErasureCodingPolicy,
  shards: ReadonlyArray<Buffer | undefined>,
  shardBytes: number,
): { sourceIndexes: number[]; missing: number[] } {
  const k = policy.dataShards;
  const total = k + policy.parityShards;
  if (shards.length !== total) {
    throw new EcInputInvalid(`expected ${total} shard slots (k + m), got ${shards.length}`);
  }
  const present: number[] = [];
  const missing: number[] = [];
  for (let i = 0; i < total; i++) {
    const shard = shards[i];
    if (shard === undefined) {
      missing.push(i);
      continue;
    }
    if (shard.length !== shardBytes) {
      throw new EcInputInvalid(`shard ${i} is ${shard.length} bytes, expected ${shardBytes}`);
    }
    present.push(i);
  }
  if (present.length < k) throw new InsufficientShards(present.length, k);
  return { sourceIndexes: present.slice(0, k), missing };
}

/** True when `shard` already sits at byte `offset` of `target` (the caller read it in place). */
function inPlace(shard: Buffer, target: Buffer, offset: number): boolean {
  return shard.buffer === target.buffer && shard.byteOffset === target.byteOffset + offset;
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
  const { sourceIndexes, missing } = survey(policy, shards, shardBytes);
  if (missing.length === 0) return shards as Buffer[];
  // Unzeroed: present shards are copied over, missing ones are targets ISA-L writes in full.
  const out = shardViews(Buffer.allocUnsafe(shardBytes * k), Buffer.allocUnsafe(shardBytes * m), k, m, shardBytes);
  await runCode(
    decodeTablesFor(k, m, sourceIndexes, missing, false),
    sourceIndexes.map((i) => shards[i]!),
    missing.map((i) => out[i]!),
    shardBytes,
    policy.stripeSizeBytes,
  );
  for (let i = 0; i < k + m; i++) shards[i]?.copy(out[i]!);
  return out;
}

/**
 * Rebuild only the missing shards (undefined slots) of a stripe, for a
 * reconstruction that writes just those: unlike reconstruct(), the present
 * shards are neither copied nor returned (on a rebuild after a pool loss that
 * copy was 1.25 MiB of 1.5 MiB allocated per 4+2 stripe for 256 KiB of output).
 * Returns one shard per missing slot, in slot order (the order of
 * `missing`); an empty array when nothing is missing. The shards are views of
 * `into` when given (one buffer of at least shardBytes per missing slot, e.g.
 * a record's payload so the shard is decoded in place), else fresh. The
 * present shards may be reused by the caller once the promise settles.
 */
export async function reconstructMissing(
  policy: ErasureCodingPolicy,
  shards: ReadonlyArray<Buffer | undefined>,
  into?: Buffer[],
): Promise<{ missing: number[]; rebuilt: Buffer[] }> {
  const shardBytes = checkPolicyShape(policy);
  const k = policy.dataShards;
  const m = policy.parityShards;
  const { sourceIndexes, missing } = survey(policy, shards, shardBytes);
  if (missing.length === 0) return { missing, rebuilt: [] };
  let rebuilt: Buffer[];
  if (into !== undefined) {
    if (into.length !== missing.length || into.some((b) => b.length < shardBytes)) {
      throw new EcInputInvalid(`into: need ${missing.length} buffers of >= ${shardBytes} bytes, got ${into.map((b) => b.length).join(",")}`);
    }
    rebuilt = into.map((b) => b.subarray(0, shardBytes));
  } else {
    // Unzeroed: ISA-L writes every byte of every target.
    const all = Buffer.allocUnsafe(shardBytes * missing.length);
    rebuilt = missing.map((_, t) => all.subarray(t * shardBytes, (t + 1) * shardBytes));
  }
  await runCode(
    decodeTablesFor(k, m, sourceIndexes, missing, false),
    sourceIndexes.map((i) => shards[i]!),
    rebuilt,
    shardBytes,
    policy.stripeSizeBytes,
  );
  return { missing, rebuilt };
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
  const { sourceIndexes, missing } = survey(policy, shards, shardBytes);
  const data = into ?? Buffer.allocUnsafe(shardBytes * k);
  const missingData = missing.filter((i) => i < k);
  if (missingData.length > 0) {
    // Lost data shards are produced straight into their place in `data`; no parity scratch.
    await runCode(
      decodeTablesFor(k, m, sourceIndexes, missing, true),
      sourceIndexes.map((i) => shards[i]!),
      missingData.map((i) => data.subarray(i * shardBytes, (i + 1) * shardBytes)),
      shardBytes,
      policy.stripeSizeBytes,
    );
  }
  for (let i = 0; i < k; i++) {
    const shard = shards[i];
    if (shard !== undefined && !inPlace(shard, data, i * shardBytes)) shard.copy(data, i * shardBytes);
  }
  return data;
}

// Tables for "these k sources produce these targets", keyed by shape and both
// shard masks (71 bits: a string, not a double); same LRU bound as decodeTables.
const targetTables = new Map<string, Buffer>();
function targetTablesFor(k: number, m: number, sourceIndexes: readonly number[], targetIndexes: readonly number[]): Buffer {
  let sourceMask = 0;
  let targetMask = 0;
  for (const i of sourceIndexes) sourceMask |= 1 << i;
  for (const i of targetIndexes) targetMask |= 1 << i;
  const key = `${k}.${m}.${sourceMask >>> 0}.${targetMask >>> 0}`;
  let tables = targetTables.get(key);
  if (tables !== undefined) {
    targetTables.delete(key);
  } else {
    tables = isal.tables(k, m, Uint8Array.from(sourceIndexes), Uint8Array.from(targetIndexes));
    if (targetTables.size >= EC_DECODE_TABLES_MAX) targetTables.delete(targetTables.keys().next().value!);
  }
  targetTables.set(key, tables);
  return tables;
}

/**
 * Produce shards `targetIndexes` of a stripe from exactly k others
 * (`sourceIndexes`, ascending, with their shards in `sources`), into
 * `targets` (one buffer of at least shardBytes each). For a pool rebuild that
 * reads only k survivors and writes only the lost shard: nothing else is
 * decoded or copied.
 */
export async function decodeTargets(
  policy: ErasureCodingPolicy,
  sourceIndexes: readonly number[],
  sources: readonly Buffer[],
  targetIndexes: readonly number[],
  targets: readonly Buffer[],
): Promise<void> {
  const shardBytes = checkPolicyShape(policy);
  const k = policy.dataShards;
  const m = policy.parityShards;
  if (sourceIndexes.length !== k || sources.length !== k) throw new EcInputInvalid(`need exactly ${k} sources, got ${sources.length}`);
  if (targetIndexes.length < 1 || targetIndexes.length !== targets.length) throw new EcInputInvalid(`need one target buffer per target index`);
  for (const [i, s] of sources.entries()) {
    if (s.length !== shardBytes) throw new EcInputInvalid(`source ${sourceIndexes[i]} is ${s.length} bytes, expected ${shardBytes}`);
  }
  for (const t of targets) if (t.length < shardBytes) throw new EcInputInvalid(`target buffer of ${t.length} bytes, need ${shardBytes}`);
  for (const i of [...sourceIndexes, ...targetIndexes]) {
    if (!Number.isInteger(i) || i < 0 || i >= k + m) throw new EcInputInvalid(`shard index ${i} out of range for ${k}+${m}`);
  }
  if (targetIndexes.some((t) => sourceIndexes.includes(t))) throw new EcInputInvalid(`a target is also a source`);
  await runCode(
    targetTablesFor(k, m, sourceIndexes, targetIndexes),
    sources as Buffer[],
    targets.map((t) => t.subarray(0, shardBytes)),
    shardBytes,
    policy.stripeSizeBytes,
  );
}

/**
 * A pool rebuild's kernel, for `tables.length` stripes of one shape, on the
 * libuv threadpool (no JS per record, so groups in flight use both cores):
 * source record s*k+i (64 + shardBytes bytes) is pread from fds[s*k+i] at
 * offsets[s*k+i] (the caller keeps those descriptors open until this
 * settles) into a one-stripe buffer and its CRC32C checked while still in
 * cache; ok[] says which read and passed. For every stripe whose k sources
 * all pass, its one lost shard is decoded (tables from lostShardTables) into
 * the payload of outs[s] (a whole record, header filled by the caller) and
 * that record's CRC written. Each source's header is copied to
 * headers[(s*k+i)*64..] for the caller's identity checks, which must pass
 * before outs[s] is used; a stripe with a failed source is left untouched.
 */
export function readRebuildLostShards(
  fds: Int32Array,
  offsets: Float64Array,
  tables: Buffer[],
  outs: Buffer[],
  k: number,
  shardBytes: number,
  headers: Buffer,
  ok: Uint8Array,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    try {
      isal.rebuildReadAsync(fds, offsets, tables, outs, k, shardBytes, headers, ok, (error) => (error ? reject(error) : resolve()));
    } catch (error) {
      reject(asInputInvalid(error));
    }
  });
}

/** Tables producing shard `target` from shards `sourceIndexes` (k, ascending), cached (LRU). */
export function lostShardTables(k: number, m: number, sourceIndexes: readonly number[], target: number): Buffer {
  return targetTablesFor(k, m, sourceIndexes, [target]);
}

/**
 * Starts the disk write of `length` bytes at `offset` of an open file
 * without waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE), so that a
 * later fdatasync finds the pages already on their way. Not a durability
 * point: only fdatasync is.
 */
export function startWriteback(fd: number, offset: number, length: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    try {
      isal.writebackAsync(fd, offset, length, (error) => (error ? reject(error) : resolve()));
    } catch (error) {
      reject(error as Error);
    }
  });
}
