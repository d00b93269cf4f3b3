// Cold S3 object stripes as a stripe holder source for the Reconstructor
// (pool rebuild, scrub, reconstruction queue): lists the stripes of cold
// objects and multipart parts, and flips stripe references with a
// compare-and-swap per stripe inside one LMDB transaction per batch, each
// record written once per batch. Also owns the check of a stored object or
// part record's shape and the report of damaged ones (count(): metrics, API).
// Tells the object store's pool-disks record of complete pool rebuilds.
import type { Database } from 'lmdb';
import { log } from '../../log.js';
import type { MetaStore } from '../meta/store.js';
import { sameStripeAt, type HolderFlip, type StripeHolderSource } from '../ec/reconstruction.js';
import type { HolderStripeContext, StripeRef, StripeStore } from '../ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, UPLOADS_DB, type ColdSegment } from './cold-segments.js';
import type { PoolDisks } from './pool-disks.js';

/** The source's prefix: queue keys "s3:<holder key>", and what reads name in their context. */
export const COLD_OBJECT_SOURCE = 's3';

/**
 * What an object's reader passes with each stripe read (ObjectStore): a
 * degraded read is queued under the object's holder key straight from it,
 * whenever the object was opened (no window of recent opens to fall out of).
 */
export function objectStripeContext(indexKeyHex: string, ref: StripeRef): HolderStripeContext {
  return { source: COLD_OBJECT_SOURCE, key: `o/${indexKeyHex}/${ref.ownerId}/${ref.chunkIndex}` };
}

interface RecordWithSegments {
  segments: { kind: string }[];
}
interface PartWithSegment {
  segment: { kind: string };
}

/**
 * Holder keys: "o/<object index key hex>/<ownerId>/<chunk>" for an object's
 * stripe, "p/<part index key hex>/<ownerId>/<chunk>/<object index key hex>"
 * for a part's (the last field: the object its upload completes into). The
 * ownerId names the segment (ids are never reused), the chunk its stripe.
 * A part's key stays valid once its upload completes: the segment is then
 * the object's (same ownerId, same stripes), so current() and replace()
 * look there when the part record is gone. Without that, a rebuild that
 * listed a part before the completion lost its flip and dropped the stripe
 * (test/review-cold-complete-during-rebuild: the pool rebuild reported
 * notRebuilt 0 with 7 stripes still missing their shard).
 */
export class ColdObjectHolders implements StripeHolderSource {
  readonly prefix = COLD_OBJECT_SOURCE;
  private readonly objects: Database<RecordWithSegments, Buffer>;
  private readonly parts: Database<PartWithSegment, Buffer>;
  private readonly uploads: Database<{ uploadId: string }, Buffer>;

  constructor(
    private readonly meta: MetaStore,
    private readonly stripes: Pick<StripeStore, 'releaseReplaced'>,
    /** The object store's record of cold pools' disks (ObjectStore.coldPoolDisks): told of whole-pool rebuilds, so a complete one ends its pool's distrust. */
    private readonly disks?: Pick<PoolDisks, 'rebuildStarting' | 'rebuilt'>,
  ) {
    this.objects = openIndexDB<RecordWithSegments>(meta, OBJECTS_DB);
    this.parts = openIndexDB<PartWithSegment>(meta, PARTS_DB);
    this.uploads = openIndexDB<{ uploadId: string }>(meta, UPLOADS_DB);
    holdersOf.set(meta, this);
  }

  /**
   * Every cold stripe of the objects and parts, with its holder key. A
   * damaged record (see recordDamage) throws DamagedIndexRecord, naming it:
   * the pool rebuild and the scrub list through here, and skipping a record
   * whose stripes may be on the lost pool would let a rebuild answer
   * complete with them not rebuilt. `onDamaged` given: the record is skipped
   * and reported to it instead (the counting paths: count()).
   */
  *list(onDamaged?: (d: DamagedRecord) => void): Iterable<[string, StripeRef]> {
    const damaged = (db: DamagedRecord['db'], key: Buffer, problem: string): void => {
      const d: DamagedRecord = { db, key, problem };
      if (onDamaged === undefined) throw new DamagedIndexRecord(d, this.describe(d));
      onDamaged(d);
    };
    for (const { key, value } of this.objects.getRange(ALL_OBJECT_KEYS)) {
      const k = Buffer.from(key);
      const problem = recordDamage(value, 'segments');
      // Strict (pool rebuild): only damage that can hide cold stripes stops it; a hot segment's
      // bad fileId or length cannot, and must not stop the rebuild of a lost cold pool.
      if (problem !== null && (onDamaged !== undefined || recordDamage(value, 'segments', 'stripes') !== null)) damaged('objects', k, problem);
      else yield* refsOf('o', k, value.segments);
    }
    // Upload id -> the object index key its upload completes into (bounded by the open uploads).
    const objectOf = new Map<string, string>();
    for (const key of this.uploads.getKeys({ ...ALL_OBJECT_KEYS })) {
      // An upload's key is the object's index key, a 0 byte, then the upload id (objects/store.ts
      // uploadKey: 32 characters). Both from the key, never the record: one damaged into another
      // live upload's id named its own object for that upload's parts, and once that upload
      // completed, current() of its parts' keys answered "gone" (test/review-holders-upload-damaged-id).
      const k = Buffer.from(key);
      if (k.length <= UPLOAD_ID_CHARS + 1) continue;
      objectOf.set(k.subarray(k.length - UPLOAD_ID_CHARS).toString('latin1'), k.subarray(0, k.length - 1 - UPLOAD_ID_CHARS).toString('hex'));
    }
    for (const { key, value } of this.parts.getRange(ALL_OBJECT_KEYS)) {
      const k = Buffer.from(key);
      const problem = recordDamage(value, 'segment');
      if (problem !== null && (onDamaged !== undefined || recordDamage(value, 'segment', 'stripes') !== null)) {
        damaged('parts', k, problem);
        continue;
      }
      // A part's key is 1, the upload id, then the part number as 2 bytes (objects/store.ts partKey).
      yield* refsOf('p', k, [value.segment], objectOf.get(k.subarray(1, k.length - 2).toString('latin1')));
    }
  }

  /**
   * The number of cold object and part stripes, for the metrics scrape and
   * GET /v1/cold: a damaged record is skipped (one bad record must not blank
   * every figure of the node), counted in damaged() and named in the log the
   * first time this process sees it (one line per scan at most).
   */
  count(): number {
    let n = 0;
    const found: DamagedRecord[] = [];
    for (const _ of this.list((d) => found.push(d))) n++;
    const counts = { objects: 0, parts: 0 };
    for (const d of found) counts[d.db]++;
    this.damaged_ = counts;
    logDamagedRecords(this.meta, found);
    return n;
  }

  /** Damaged object and part records found by the last count() (null: none has run). */
  damaged(): { objects: number; parts: number } | null {
    return this.damaged_;
  }
  private damaged_: { objects: number; parts: number } | null = null;

  /** "bucket/key" of a damaged record, from its index key (the bucket's name looked up; the record itself may be unreadable). */
  describe(d: DamagedRecord): string {
    return describeIndexKey(this.meta, d.db, d.key);
  }

  poolRebuildStarting(pool: string, store: object): void {
    this.disks?.rebuildStarting(pool, store);
  }

  async poolRebuilt(pool: string, store: object): Promise<void> {
    await this.disks?.rebuilt(pool, store);
  }

  current(key: string): StripeRef | undefined {
    const h = parseKey(key);
    if (h === null) return undefined;
    const find = (segments: readonly { kind: string }[] | undefined): StripeRef | undefined => {
      for (const seg of segments ?? []) {
        if (seg.kind !== 'cold') continue;
        const ref = (seg as ColdSegment).stripes[h.chunkIndex];
        if (ref !== undefined && ref.ownerId === h.ownerId) return ref;
      }
      return undefined;
    };
    if (h.kind === 'o') return find(this.readRecord(this.objects, h.indexKey)?.segments);
    const part = this.readRecord(this.parts, h.indexKey)?.segment;
    // Completed: the part's segment is now its object's.
    return find(part ? [part] : undefined) ?? (h.objectKey ? find(this.readRecord(this.objects, h.objectKey)?.segments) : undefined);
  }

  /**
   * The record at `key` as stored now, decoded once per stored content: a
   * pool rebuild asks current() once per stripe, and decoding a large
   * object's whole record each time was O(stripes^2) (bench/ec-rebuild
   * MODE=large-object, 1024 stripes in one object: 555 of 733 ms of a
   * rebuild's CPU in msgpack decode). The stored bytes are compared with
   * the ones last decoded (equal bytes: the same record), so a record
   * changed meanwhile is always decoded afresh. One entry (bounded); the
   * cached value's stripe references are frozen (shared between callers,
   * who only read them).
   */
  private readRecord<V>(db: Database<V, Buffer>, key: Buffer): V | undefined {
    const decoder = (db as unknown as { decoder?: { decode(bytes: Buffer): V } }).decoder;
    // lmdb-js 3.x internal (what its get() decodes with), pinned by test/review-flip-decoder; without it, no cache.
    if (decoder === undefined) return db.get(key); // not msgpack-encoded: no cache
    // The stored bytes without a copy: lmdb-js's shared read buffer, valid until its next
    // read, so compared at once and copied only when they are a record not decoded yet.
    // (getBinary copied the whole record per call: with 1024 stripes of one object, a
    // rebuild's current() per stripe, O(stripes^2) bytes allocated and copied.)
    const fast = db.getBinaryFast(key);
    if (fast === undefined) return undefined;
    // A reusable buffer's `length` is the value's, its byteLength the whole area (lmdb-js
    // README): a plain view of the value's bytes, for equals() and the copy.
    const stored = Buffer.from(fast.buffer, fast.byteOffset, fast.length);
    const last = this.lastRead;
    if (last !== null && last.db === db && last.key.equals(key) && last.bytes.equals(stored)) return last.value as V;
    const bytes = Buffer.from(stored);
    const value = decoder.decode(bytes);
    freezeStripes(value);
    this.lastRead = { db, key: Buffer.from(key), bytes, value };
    return value;
  }
  private lastRead: { db: object; key: Buffer; bytes: Buffer; value: unknown } | null = null;

  /** Index record puts issued by flips (replace/replaceMany), for tests: one per record per transaction. */
  recordWrites = 0;

  /** One compare-and-swap: replaceMany with one flip. */
  async replace(key: string, expected: StripeRef, next: StripeRef): Promise<boolean> {
    return (await this.replaceMany([{ key, expected, next }]))[0]!;
  }

  /**
   * Compare-and-swap of several stripes in one transaction: each record a
   * flip names is read once there, each flip's `expected` is replaced by
   * its `next` only if the record still holds `expected` at the same places
   * (overwritten, deleted, completed into an object or moved by compaction
   * meanwhile: not flipped), checked flip by flip in order (the same answers
   * as one transaction per flip), and each changed record is written once.
   * A pool rebuild's window holds up to 256 stripes of one object, and one
   * put per stripe rewrote the object's whole record each time: O(stripes^2)
   * bytes for a large object (bench/ec-rebuild MODE=large-object: 0.07x the
   * rate of small objects). Durable before it resolves; then the replaced
   * records (or, not flipped, the new ones) are marked dead for compaction.
   */
  async replaceMany(flips: readonly HolderFlip[]): Promise<boolean[]> {
    // Issued in this tick: the caller's write session (landRebuild) has just ended.
    // A record damaged where its stripes are (recordDamage 'stripes'; its bytes not decoding, say) is
    // not flipped, and named: read as a record it threw a bare TypeError ("reading 'map'") that failed
    // every flip of the batch, the good records' too. Nothing is written to it (its bytes stay as they are).
    const damaged = new Map<string, DamagedRecord>();
    const checked = <R>(db: Database<R, Buffer>, name: DamagedRecord['db'], field: 'segments' | 'segment') => (k: Buffer): R | undefined => {
      const rec = db.get(k);
      const problem = rec === undefined ? null : recordDamage(rec, field, 'stripes');
      if (problem === null) return rec;
      damaged.set(`${name}/${k.toString('hex')}`, { db: name, key: Buffer.from(k), problem });
      return undefined;
    };
    const flipped = await this.meta.transaction(() => {
      const objects = new Map<string, EditedRecord<RecordWithSegments>>();
      const parts = new Map<string, EditedRecord<PartWithSegment>>();
      const inObject = (objectKey: Buffer, f: HolderFlip): boolean => {
        const e = edited(objects, objectKey, checked(this.objects, 'objects', 'segments'), (rec) => rec.segments);
        return e !== undefined && e.flip(f.expected, f.next);
      };
      const results = flips.map((f) => {
        const h = parseKey(f.key);
        if (h === null) return false;
        if (h.kind === 'o') return inObject(h.indexKey, f);
        const part = edited(parts, h.indexKey, checked(this.parts, 'parts', 'segment'), (rec) => [rec.segment]);
        if (part !== undefined && part.flip(f.expected, f.next)) return true;
        // The upload completed since the part was listed: its segment (ownerIds are never
        // reused) is the object's now, and the flip still compares the whole reference.
        return h.objectKey !== undefined && inObject(h.objectKey, f);
      });
      for (const e of objects.values()) {
        if (!e.changed) continue;
        void this.objects.put(e.key, { ...e.rec, segments: e.segments });
        this.recordWrites++;
      }
      for (const e of parts.values()) {
        if (!e.changed) continue;
        void this.parts.put(e.key, { ...e.rec, segment: e.segments[0]! });
        this.recordWrites++;
      }
      return results;
    });
    if (damaged.size > 0) {
      log.error('stripe flips not made: the S3 index record holding them is damaged where its stripes are (nothing written to it); `couchestor fsck` lists such records', {
        records: [...damaged.values()].map((d) => `${d.db} ${this.describe(d)}: ${d.problem}`).join('; '),
      });
    }
    if (flipped.some(Boolean)) await this.meta.durable();
    flips.forEach((f, i) => this.stripes.releaseReplaced(f.expected, f.next, flipped[i]!));
    return flipped;
  }
}

/**
 * A record read once inside a flip transaction, its cold segments copied
 * (stripes arrays too) so flips edit them in place, and an index from a
 * stripe's ownerId/chunk to where such references sit (usually one place).
 */
class EditedRecord<R> {
  changed = false;
  private readonly at = new Map<string, { seg: number; i: number }[]>();
  constructor(
    readonly key: Buffer,
    readonly rec: R,
    readonly segments: { kind: string }[],
  ) {
    this.reindex();
  }

  /** Every reference equal to `expected` at the same places becomes `next` (as moveColdStripes does); whether any did. */
  flip(expected: StripeRef, next: StripeRef): boolean {
    let moved = false;
    for (const { seg, i } of this.at.get(`${expected.ownerId}/${expected.chunkIndex}`) ?? []) {
      const stripes = (this.segments[seg] as ColdSegment).stripes;
      if (!sameStripeAt(stripes[i], expected)) continue;
      stripes[i] = next;
      moved = true;
    }
    if (moved) {
      this.changed = true;
      // `next` may carry another ownerId/chunk in principle: index it too.
      const id = `${next.ownerId}/${next.chunkIndex}`;
      if (id !== `${expected.ownerId}/${expected.chunkIndex}`) this.reindex();
    }
    return moved;
  }

  private reindex(): void {
    this.at.clear();
    this.segments.forEach((seg, s) => {
      if (seg.kind !== 'cold') return;
      (seg as ColdSegment).stripes.forEach((r, i) => {
        const id = `${r.ownerId}/${r.chunkIndex}`;
        const places = this.at.get(id);
        if (places) places.push({ seg: s, i });
        else this.at.set(id, [{ seg: s, i }]);
      });
    });
  }
}

/** The record at `key` as edited in this transaction (read on first use); undefined if there is none. */
function edited<R>(cache: Map<string, EditedRecord<R>>, key: Buffer, read: (k: Buffer) => R | undefined, segmentsOf: (rec: R) => readonly { kind: string }[]): EditedRecord<R> | undefined {
  const hex = key.toString('hex');
  const hit = cache.get(hex);
  if (hit !== undefined) return hit;
  const rec = read(key);
  if (rec === undefined) return undefined; // gone: read again on the next flip naming it (same answer in one transaction)
  // Copies of the cold segments and their stripes arrays: flips edit these in place; the record is written back only if one did.
  const segments = segmentsOf(rec).map((seg) => (seg.kind === 'cold' ? ({ ...seg, stripes: [...(seg as ColdSegment).stripes] } as { kind: string }) : seg));
  const e = new EditedRecord(key, rec, segments);
  cache.set(hex, e);
  return e;
}

/** Freezes the stripe references (and their shards) of a decoded object or part record. */
function freezeStripes(rec: unknown): void {
  const r = rec as Partial<RecordWithSegments & PartWithSegment> | undefined;
  for (const seg of [...(r?.segments ?? []), ...(r?.segment ? [r.segment] : [])]) {
    if (seg.kind !== 'cold') continue;
    for (const ref of (seg as ColdSegment).stripes) {
      for (const sh of ref.shards) Object.freeze(sh);
      Object.freeze(ref.shards);
      Object.freeze(ref);
    }
  }
}

/**
 * What a handle of openIndexDB reads where the stored bytes do not decode
 * (msgpack cut short or garbled: a torn or corrupted LMDB value), in place
 * of the record: recordDamage and quarantine.ts uploadDamage name it as
 * damage, and in every scope (what it held, cold stripes included, is
 * unknown). Never written back: every writer checks the damage first.
 */
export class UndecodableRecord {
  constructor(readonly problem: string) {}
}

/**
 * A handle on an S3 index database (objects, parts, uploads) whose reads
 * give an UndecodableRecord for a value that does not decode, instead of
 * throwing: a range read threw at such a record, so one torn value stopped
 * the daemon's start ("cannot listen for S3 on port 0: Unexpected end of
 * buffer reading string"), every listing of its bucket and every count.
 * Only this handle's decoder is wrapped (lmdb-js gives each openDB its own),
 * and only the decode is caught: an LMDB read error still throws.
 */
export function openIndexDB<V>(meta: MetaStore, name: string): Database<V, Buffer> {
  const db = meta.openDB<V, Buffer>(name);
  // lmdb-js 3.x internal, what get() and getRange() decode with (pinned by test/review-flip-decoder).
  const decoder = (db as unknown as { decoder?: { decode(bytes: Buffer, options?: unknown): unknown } }).decoder;
  if (decoder !== undefined) {
    const decode = decoder.decode.bind(decoder);
    decoder.decode = (bytes: Buffer, options?: unknown): unknown => {
      try {
        return decode(bytes, options);
      } catch (err) {
        return new UndecodableRecord(`the stored bytes do not decode (${(err as Error).message})`);
      }
    };
  }
  return db;
}

/** An upload id's length (objects/store.ts createUpload: 16 random bytes in hex); an upload's index key ends with it. */
const UPLOAD_ID_CHARS = 32;

/** The holder source of each index (the S3 front end makes one): the metrics read its damaged() through it. */
const holdersOf = new WeakMap<MetaStore, ColdObjectHolders>();

/** Damaged object and part records the last stripe count of this index found (null: no count ran, no S3 front end). */
export function damagedIndexRecords(meta: MetaStore): { objects: number; parts: number } | null {
  return holdersOf.get(meta)?.damaged() ?? null;
}

/** A damaged object or part record: which database, its index key, what is wrong. */
export interface DamagedRecord {
  db: 'objects' | 'parts';
  key: Buffer;
  problem: string;
}

/** A stored object or part record that does not have the shape its stripes are read from. A TypeError, as reading it threw before. */
export class DamagedIndexRecord extends TypeError {
  override name = 'DamagedIndexRecord';
  constructor(
    readonly record: DamagedRecord,
    described: string,
  ) {
    super(`damaged S3 index record (${record.db}) ${described}: ${record.problem}`);
  }
}

/** Records named in the log per process, and per log line: bounded (the gauge counts every one). */
const MAX_DAMAGED_LOGGED = 1024;
const MAX_DAMAGED_NAMED = 16;
const loggedDamage = new Set<string>();
const damageId = (d: DamagedRecord): string => `${d.db}/${d.key.toString('hex')}/${d.problem}`;

/**
 * Names damaged records in the log, each once per process (the start-up
 * scan and every count report here): bounded, past MAX_DAMAGED_LOGGED no
 * more names (the gauge still counts them), MAX_DAMAGED_NAMED per line.
 */
export function logDamagedRecords(meta: MetaStore, found: readonly DamagedRecord[]): void {
  const fresh = found.filter((d) => !loggedDamage.has(damageId(d))).slice(0, Math.max(0, MAX_DAMAGED_LOGGED - loggedDamage.size));
  if (fresh.length === 0) return;
  // Only those this line names are marked: the rest are named by the next counts.
  const named = fresh.slice(0, MAX_DAMAGED_NAMED);
  for (const d of named) loggedDamage.add(damageId(d));
  log.error('damaged S3 index records skipped by the stripe count (metrics, GET /v1/cold) and the scrub; compaction stops on them, the pool rebuild on those that can hide cold stripes; `couchestor fsck` lists them all, `couchestor fsck --quarantine-damaged` (daemon stopped) moves them out', {
    records: named.map((d) => `${d.db} ${describeIndexKey(meta, d.db, d.key)}: ${d.problem}`).join('; '),
    ...(fresh.length > MAX_DAMAGED_NAMED ? { notNamed: fresh.length - MAX_DAMAGED_NAMED } : {}),
  });
}

/**
 * What is wrong with a stored object record (`field` 'segments': a list of
 * segments) or part record ('segment': one), as far as its cold stripes are
 * concerned, or null: each segment an object with a string kind, a hot
 * or inline one's lengthBytes a number (the open's accounting), a hot one's
 * pool a string, its fileId an integer and its chunkCrc32c a list (what the
 * start-up sweep keeps files by), an inline one's bytes binary (a segment
 * relabelled as another of the three kinds fails these), a cold one's
 * stripes a list of references each with a string ownerId, an integer
 * chunkIndex and a list of shards. `scope` 'stripes': only what can hide
 * cold stripes (a hot or inline segment's fileId or length cannot).
 * A record of another shape made every reader of the whole database throw
 * (TypeError: not iterable).
 */
export function recordDamage(value: unknown, field: 'segments' | 'segment', scope: 'all' | 'stripes' = 'all'): string | null {
  // Whatever it held is unknown, cold stripes included: damage in every scope.
  if (value instanceof UndecodableRecord) return value.problem;
  if (typeof value !== 'object' || value === null) return `the record is ${value === null ? 'null' : typeof value}, not an object`;
  const raw = (value as Record<string, unknown>)[field];
  if (field === 'segments' && !Array.isArray(raw)) return `segments is ${describeValue(raw)}, not a list`;
  const segments = field === 'segments' ? (raw as unknown[]) : [raw];
  for (const [i, seg] of segments.entries()) {
    const at = field === 'segments' ? `segments[${i}]` : 'segment';
    if (typeof seg !== 'object' || seg === null) return `${at} is ${describeValue(seg)}, not an object`;
    const kind = (seg as { kind?: unknown }).kind;
    if (kind !== 'cold' && kind !== 'hot' && kind !== 'inline') return `${at}.kind is ${describeValue(kind)}`;
    // What ObjectStore.open accounts and sweeps by: a hot segment's fileId that is not an
    // integer names no file, and the start-up sweep deleted the file it did name.
    const f = seg as { pool?: unknown; fileId?: unknown; lengthBytes?: unknown; chunkCrc32c?: unknown };
    if (scope === 'all' && kind !== 'cold' && (typeof f.lengthBytes !== 'number' || !(f.lengthBytes >= 0))) return `${at}.lengthBytes is ${describeValue(f.lengthBytes)}`;
    if (kind === 'hot') {
      if (typeof f.pool !== 'string') return `${at}.pool is ${describeValue(f.pool)}`;
      if (scope === 'all' && (!Number.isSafeInteger(f.fileId) || (f.fileId as number) < 0)) return `${at}.fileId is ${describeValue(f.fileId)}`;
      if (!Array.isArray(f.chunkCrc32c)) return `${at}.chunkCrc32c is ${describeValue(f.chunkCrc32c)}, not a list`;
    }
    // A cold segment whose kind reads "hot" (no pool, no chunkCrc32c: above) or "inline" (no
    // bytes) must not pass: its stripes would look unreferenced to compaction.
    if (kind === 'inline' && !((seg as { bytes?: unknown }).bytes instanceof Uint8Array)) return `${at}.bytes is ${describeValue((seg as { bytes?: unknown }).bytes)}, not bytes`;
    if (kind !== 'cold') continue;
    const stripes = (seg as { stripes?: unknown }).stripes;
    if (!Array.isArray(stripes)) return `${at}.stripes is ${describeValue(stripes)}, not a list`;
    for (const [j, ref] of stripes.entries()) {
      const r = ref as { ownerId?: unknown; chunkIndex?: unknown; shards?: unknown } | null;
      if (typeof r !== 'object' || r === null || typeof r.ownerId !== 'string' || !Number.isInteger(r.chunkIndex) || !Array.isArray(r.shards)) {
        return `${at}.stripes[${j}] is not a stripe reference`;
      }
    }
  }
  return null;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'missing';
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

/**
 * "bucket/key" of an object-store index key: an object's is 1, the bucket
 * id (4 bytes), the key (objects/store.ts objectKey); a part's is 1, the
 * upload id, the part number (2 bytes). Reads only the buckets database.
 */
export function describeIndexKey(meta: MetaStore, db: 'objects' | 'parts', key: Buffer): string {
  if (db === 'parts') return `upload ${JSON.stringify(key.subarray(1, Math.max(1, key.length - 2)).toString('latin1'))} part ${key.length >= 3 ? key.readUInt16BE(key.length - 2) : '?'}`;
  if (key.length < 5) return `index key ${key.toString('hex')}`;
  const id = key.readUInt32BE(1);
  let bucket = `bucket#${id}`;
  try {
    for (const { value } of meta.openDB<{ name?: unknown; id?: unknown }, string>('s3-buckets').getRange()) {
      if (value?.id === id && typeof value.name === 'string') bucket = value.name;
    }
  } catch {
    // The name is for the message only.
  }
  return `${bucket}/${key.subarray(5).toString('utf8')}`;
}

/** `objectKeyHex`: for a part, the object its upload completes into (unknown: the upload is gone). */
function* refsOf(kind: 'o' | 'p', indexKey: Buffer, segments: readonly { kind: string }[], objectKeyHex?: string): Iterable<[string, StripeRef]> {
  const hex = indexKey.toString('hex');
  for (const seg of segments) {
    if (seg.kind !== 'cold') continue;
    for (const ref of (seg as ColdSegment).stripes) {
      yield [kind === 'o' ? objectStripeContext(hex, ref).key : `p/${hex}/${ref.ownerId}/${ref.chunkIndex}${objectKeyHex === undefined ? '' : `/${objectKeyHex}`}`, ref];
    }
  }
}

function parseKey(key: string): { kind: 'o' | 'p'; indexKey: Buffer; ownerId: string; chunkIndex: number; objectKey?: Buffer } | null {
  const [kind, hex, ownerId, chunk, objectHex] = key.split('/');
  if ((kind !== 'o' && kind !== 'p') || hex === undefined || ownerId === undefined || chunk === undefined) return null;
  return { kind, indexKey: Buffer.from(hex, 'hex'), ownerId, chunkIndex: Number(chunk), ...(kind === 'p' && objectHex ? { objectKey: Buffer.from(objectHex, 'hex') } : {}) };
}
