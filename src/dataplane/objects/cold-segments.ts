// Cold-tier object bytes: each 1 MiB chunk of a segment becomes one
// erasure-coded stripe through the StripeStore (src/dataplane/ec/stripe-store.ts).
// The StripeStore is passed in by the daemon; without a cold tier, cold
// buckets are refused at creation (ObjectStore checks `stripes` is present).
import { IncompleteBody, InsufficientShards, TooLarge } from '../errors.js';
import type { SegmentStore } from '../ec/segment-store.js';
import type { ReadContext, ShardRef, StripeRef, StripeStore } from '../ec/stripe-store.js';
import { type ByteObserver, type WriteLimits } from './hot-segments.js';

/** What cold objects need of the stripe store (the daemon passes its StripeStore). */
export type StripeStoreApi = Pick<StripeStore, 'policy' | 'writeStripe' | 'readStripe' | 'free' | 'beginWrite' | 'endWrite' | 'hold' | 'segmentStore' | 'resolve' | 'mayHoldStalePlaces' | 'holdsShard'>;
export type { StripeRef };

export interface ColdSegment {
  kind: 'cold';
  /** Owner id given to the stripe store (segment file id, as 16 bytes). */
  fileId: number;
  lengthBytes: number;
  /** Data bytes per stripe (the EC policy's stripe size when written). */
  chunkBytes: number;
  stripes: StripeRef[];
}

function ownerId(fileId: number): Buffer {
  // 'S3OB' marks object-store stripes; the id is unique per segment forever.
  const b = Buffer.alloc(16);
  b.write('S3OB', 0, 'latin1');
  b.writeBigUInt64BE(BigInt(fileId), 8);
  return b;
}

/**
 * The write session (StripeStore.beginWrite) of each segment written but not
 * yet settled: segment compaction must not delete a segment holding its
 * stripes before the object index points at them. Bounded by uploads in flight.
 */
const sessions = new WeakMap<ColdSegment, { stripes: StripeStoreApi; token: number }>();

/**
 * The index flip that installs `seg` (or drops it) has been issued: its
 * stripes are now either referenced or freed. Idempotent.
 */
export function settleColdSegment(seg: ColdSegment): void {
  const s = sessions.get(seg);
  if (s === undefined) return;
  sessions.delete(seg);
  s.stripes.endWrite(s.token);
}

/**
 * Streams `body` into stripes (1 MiB by default); at most one chunk buffer is
 * held per upload. The caller flips its index, then settleColdSegment(), or
 * frees the segment (freeColdSegment settles it too).
 */
export async function writeColdSegment(stripes: StripeStoreApi, fileId: number, body: AsyncIterable<Buffer>, limits: WriteLimits, observe: ByteObserver): Promise<ColdSegment> {
  const token = stripes.beginWrite();
  let seg: ColdSegment | undefined;
  try {
    seg = await writeStripes(stripes, fileId, body, limits, observe);
    sessions.set(seg, { stripes, token });
    return seg;
  } finally {
    if (seg === undefined) stripes.endWrite(token);
  }
}

async function writeStripes(stripes: StripeStoreApi, fileId: number, body: AsyncIterable<Buffer>, limits: WriteLimits, observe: ByteObserver): Promise<ColdSegment> {
  const OBJECT_CHUNK_BYTES = stripes.policy.stripeSizeBytes;
  const refs: StripeRef[] = [];
  const owner = ownerId(fileId);
  let chunk = Buffer.allocUnsafe(OBJECT_CHUNK_BYTES);
  let fill = 0;
  let lengthBytes = 0;
  let ok = false;
  try {
    for await (const raw of body) {
      let piece = raw;
      if (lengthBytes + piece.length > limits.maxBytes) throw new TooLarge(`object exceeds ${limits.maxBytes} bytes`);
      if (limits.expectedBytes !== undefined && lengthBytes + piece.length > limits.expectedBytes) {
        throw new IncompleteBody(`body is longer than the declared ${limits.expectedBytes} bytes`);
      }
      observe(piece);
      lengthBytes += piece.length;
      while (piece.length > 0) {
        const take = Math.min(piece.length, OBJECT_CHUNK_BYTES - fill);
        piece.copy(chunk, fill, 0, take);
        fill += take;
        piece = piece.subarray(take);
        if (fill === OBJECT_CHUNK_BYTES) {
          refs.push(await stripes.writeStripe(owner, refs.length, 1, chunk));
          chunk = Buffer.allocUnsafe(OBJECT_CHUNK_BYTES);
          fill = 0;
        }
      }
    }
    if (limits.expectedBytes !== undefined && lengthBytes !== limits.expectedBytes) {
      throw new IncompleteBody(`body ended after ${lengthBytes} of ${limits.expectedBytes} declared bytes`);
    }
    if (fill > 0) refs.push(await stripes.writeStripe(owner, refs.length, 1, chunk.subarray(0, fill)));
    ok = true;
    return { kind: 'cold', fileId, lengthBytes, chunkBytes: OBJECT_CHUNK_BYTES, stripes: refs };
  } finally {
    if (!ok) for (const r of refs) stripes.free(r);
  }
}

/** `contextOf` names each stripe's holder for the read (a degraded read is queued under it). */
export async function* readColdSegment(stripes: StripeStoreApi, seg: ColdSegment, offsetBytes: number, lengthBytes: number, contextOf?: (ref: StripeRef) => ReadContext): AsyncGenerator<Buffer> {
  const endBytes = offsetBytes + lengthBytes;
  const chunkBytes = seg.chunkBytes;
  for (let i = Math.floor(offsetBytes / chunkBytes); i * chunkBytes < endBytes; i++) {
    const ref = seg.stripes[i]!;
    const data = await stripes.readStripe(ref, contextOf?.(ref));
    const chunkStart = i * chunkBytes;
    yield data.subarray(Math.max(offsetBytes, chunkStart) - chunkStart, Math.min(endBytes, chunkStart + data.length) - chunkStart);
  }
}

/**
 * Refuses (InsufficientShards, S3 500 as a GET of it answers) segments one
 * of whose stripes has more shards gone than its parity repairs, judged from
 * what the daemon knows without reading a shard's data: a shard is gone when
 * its pool is unknown or offline (directory missing or not writable, disk
 * not mounted: a stat), or when its place (compaction forwards followed)
 * lies outside what the pool's current segment store has written (a disk
 * replaced by an empty one, not yet rebuilt). On a pool whose store was
 * opened empty in this process after holding records (replaced:
 * mayHoldStalePlaces), a place inside what is written may be another
 * record's, written since: there the shard's 64-byte header is read
 * (holdsShard), as a read checks it. A shard that is there but damaged is
 * found by the read (or the scrub), not here. Cost: one store look-up per
 * distinct pool, then in-memory extents per shard; header reads only on a
 * replaced pool, and only for a stripe those places could make unreadable
 * (none while at most parity-many of its shards are on replaced pools).
 *
 * `since` carries that knowledge across restarts: `writtenMs` is when the
 * segments' stripes were written (at the latest), and `replacedSince(pool)`
 * when the pool's current disk replaced one the index may still name places
 * of (pool-disks.ts, kept in the index; 0: none). A shard on a pool whose
 * disk took over at or after `writtenMs` is unsure as on a store replaced in
 * this process. A stripe rebuilt onto that disk since is unsure too (its
 * object keeps its time): its headers are read, and found its own, when more
 * than parity-many of its shards are so (3 of 4+2 pools replaced since the
 * object was written), until a whole-pool rebuild onto that disk completes
 * (pool-disks.ts rebuilt: the pool is then sure again, also for a store
 * opened empty in this process). Resolves to the number of headers read.
 */
export async function assertColdShardsKnownKept(
  stripes: StripeStoreApi,
  segments: readonly { kind: string }[],
  since?: { writtenMs: number; replacedSince: (pool: string, store: SegmentStore, openedEmpty: boolean) => number },
): Promise<number> {
  const pools = new Set<string>();
  for (const ref of coldStripeRefs(segments)) for (const s of ref.shards) pools.add(s.pool);
  const stores = new Map<string, SegmentStore | null>();
  for (const pool of pools) stores.set(pool, await stripes.segmentStore(pool));
  // Pools whose places of these segments may be another record's: replaced in this process, or (since) after the data was written.
  const stale = new Set<string>();
  for (const [pool, st] of stores) {
    if (st === null) continue;
    const openedEmpty = stripes.mayHoldStalePlaces(pool);
    // Data written at or before this time is unsure on the pool (pool-disks.ts: until a complete rebuild onto its disk).
    const unsureUpToMs = since === undefined ? (openedEmpty ? Number.MAX_SAFE_INTEGER : 0) : since.replacedSince(pool, st, openedEmpty);
    if (unsureUpToMs > 0 && (since?.writtenMs ?? 0) <= unsureUpToMs) stale.add(pool);
  }
  let headerReads = 0;
  let stripeIndex = 0;
  for (const ref of coldStripeRefs(segments)) {
    const why: string[] = [];
    // Places on a replaced pool's store: header-checked only when their loss could decide the stripe.
    const unsure: { index: number; at: ShardRef }[] = [];
    for (const [index, s] of ref.shards.entries()) {
      const st = stores.get(s.pool)!;
      if (st === null) {
        why.push(`${s.pool} (offline)`);
        continue;
      }
      const at = st.written(s) ? s : stripes.resolve(s);
      if (!st.written(at)) why.push(`${s.pool} (replaced, not rebuilt)`);
      else if (stale.has(s.pool)) unsure.push({ index, at });
    }
    if (why.length + unsure.length > ref.parityShards) {
      for (const { index, at } of unsure) {
        headerReads++;
        if ((await stripes.holdsShard(at, { ref, index })) !== true) why.push(`${at.pool} (replaced, not rebuilt)`);
      }
    }
    if (why.length > ref.parityShards) {
      throw new InsufficientShards(`stripe ${stripeIndex} of the object lost ${why.length} of ${ref.shards.length} shards (can repair ${ref.parityShards}): on pools ${[...new Set(why)].join(', ')}`);
    }
    stripeIndex++;
  }
  return headerReads;
}

export function freeColdSegment(stripes: StripeStoreApi, seg: ColdSegment): void {
  settleColdSegment(seg);
  for (const r of seg.stripes) stripes.free(r);
}

/** Names of the object-store databases that hold cold stripe references (objects/store.ts opens them too). */
export const OBJECTS_DB = 's3-objects';
export const PARTS_DB = 's3-parts';
/** Multipart uploads in progress (cold-holders.ts maps a part to the object its upload completes into). */
export const UPLOADS_DB = 's3-uploads';
/**
 * Whole-database scans start here (object-store keys begin with 0x01; see
 * objects/store.ts). Frozen: lmdb-js's getKeys/getKeysCount mark the options
 * they are given (see ALL_KEYS in objects/store.ts); pass those a copy.
 */
export const ALL_OBJECT_KEYS: Readonly<{ start: Buffer }> = Object.freeze({ start: Buffer.from([1]) });

/** Every cold stripe reference of an object's or part's segments. */
export function* coldStripeRefs(segments: readonly { kind: string }[]): Iterable<StripeRef> {
  for (const seg of segments) if (seg.kind === 'cold') yield* (seg as ColdSegment).stripes;
}

/**
 * `segments` with every cold stripe reference replaced by move(ref) where
 * that returns one (segment compaction); undefined when nothing changed.
 */
export function moveColdStripes<S extends { kind: string }>(segments: readonly S[], move: (ref: StripeRef) => StripeRef | null): S[] | undefined {
  let changed = false;
  const out = segments.map((seg) => {
    if (seg.kind !== 'cold') return seg;
    const cold = seg as unknown as ColdSegment;
    let moved = false;
    const refs = cold.stripes.map((r) => {
      const n = move(r);
      if (n === null) return r;
      moved = true;
      return n;
    });
    if (!moved) return seg;
    changed = true;
    return { ...cold, stripes: refs } as unknown as S;
  });
  return changed ? out : undefined;
}
