// The object store: buckets, immutable object versions and multipart state in
// LMDB; bytes in segments (hot: data files, cold: EC stripes). A write makes
// its bytes durable first, then flips the index in one transaction; replaced
// bytes are freed after the flip (or after the last reader lets go).
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Database } from 'lmdb';
import { crc32c } from '@node-rs/crc32';
import {
  AlreadyExists,
  Corrupt,
  DigestMismatch,
  IncompleteBody,
  InsufficientShards,
  InvalidArgument,
  InvalidPart,
  InvalidPartOrder,
  NoSuchBucket,
  NoSuchObject,
  NoSuchUpload,
  NoSuitablePool,
  NotEmpty,
  ObjectDataLost,
  PartTooSmall,
  StorageError,
  TooLarge,
} from '../errors.js';
import type { VolumeManager } from '../volumes/manager.js';
import type { Pool } from '../pools/pool.js';
import { log } from '../../log.js';
import { logDamagedRecords, objectStripeContext, openIndexDB, recordDamage, type DamagedRecord } from './cold-holders.js';
import { uploadDamage } from './quarantine.js';
import { OBJECTS_DB, PARTS_DB, UPLOADS_DB, assertColdShardsKnownKept, coldStripeRefs, freeColdSegment, readColdSegment, settleColdSegment, writeColdSegment, type ColdSegment, type StripeStoreApi } from './cold-segments.js';
import { OffloadedMd5 } from './md5-offload.js';
import { PoolDisks } from './pool-disks.js';
import { freeHotSegment, listHotFileIds, prepareHotPool, readHotSegment, sendHotSegment, writeHotSegment, type HotSegment, type PieceSink, type WriteLimits } from './hot-segments.js';

/**
 * A small object of a hot bucket kept inside its index record: its bytes
 * become durable in the same LMDB commit that makes the object visible. A
 * 4 KiB PUT to a data file paid a file fdatasync and then the index commit
 * (MinIO likewise inlines small objects into its xl.meta).
 */
export interface InlineSegment {
  kind: 'inline';
  lengthBytes: number;
  crc32c: number;
  bytes: Buffer;
}

export type Segment = HotSegment | ColdSegment | InlineSegment;
export type BucketTier = 'hot' | 'cold';

export const MAX_KEY_BYTES = 1024;
/** S3 limits: single PUT and each part 5 GiB, parts 1..10000, all but the last part >= 5 MiB. */
export const MAX_PUT_BYTES = 5 * 1024 ** 3;
export const MAX_OBJECT_BYTES = 5 * 1024 ** 4;
export const MAX_PART_NUMBER = 10_000;
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** Bound on multipart uploads in flight (each holds index entries and part data). */
export const MAX_OPEN_UPLOADS = 100_000;
/**
 * Bodies at least this long (by their declared length) are MD5'd on the
 * worker thread (md5-offload.ts); below it the round trip costs more than
 * hashing on the event loop.
 */
const OFFLOAD_MD5_MIN_BYTES = 256 * 1024;
/** Hot-bucket single PUTs up to this size are stored inline (InlineSegment). */
export const INLINE_MAX_BYTES = 16 * 1024;
/**
 * Inline bytes in the index, all objects together: the LMDB map (4 GiB) is
 * shared with the volumes' chunk map, so past this small PUTs go to data
 * files again.
 */
export const INLINE_CAP_BYTES = 256 * 1024 * 1024;
/** Ids are reserved from LMDB in blocks so a PUT does not pay a sync commit for its id. */
const ID_BLOCK = 4096;

/**
 * One S3 tag, [key, value], in the order the client gave them. Records
 * written before tagging existed have no `tags` field: read as none.
 */
export type Tag = [key: string, value: string];

export interface BucketRecord {
  name: string;
  id: number;
  tier: BucketTier;
  createdMs: number;
  /** Absent: no tag set (GetBucketTagging answers NoSuchTagSet); [] is a stored empty set. */
  tags?: Tag[];
}

/** Content-* and friends, stored as given and returned verbatim (lowercase names). */
export type ContentHeaders = Record<string, string>;

export interface ObjectRecord {
  key: string;
  versionId: number;
  sizeBytes: number;
  /** Hex MD5 for single-part, "hex-N" for multipart (no quotes). */
  etag: string;
  lastModifiedMs: number;
  contentHeaders: ContentHeaders;
  /** x-amz-meta-* without the prefix, lowercase names. */
  userMeta: Record<string, string>;
  segments: Segment[];
  /**
   * A completed multipart upload's part numbers as the client listed them, one
   * per segment (GetObjectAttributes ObjectParts). Absent on single PUTs and
   * copies, and on multipart records written before the numbers were kept.
   */
  partNumbers?: number[];
  /** Object tags; absent (never written empty) when the object has none. */
  tags?: Tag[];
  /**
   * The S3 storage class the object was written with (x-amz-storage-class),
   * recorded only: it picks no tier. Absent for STANDARD, and on records
   * written before it was kept: both read as STANDARD.
   */
  storageClass?: string;
  /**
   * A completed multipart upload's initiation: its parts' bytes were written
   * after it (lastModifiedMs is the completion). Absent on single PUTs and
   * copies (written by lastModifiedMs), and on multipart records written
   * before it was kept (their data's time unknown: cold-segments.ts
   * assertColdShardsKnownKept then takes any disk replacement as after it).
   */
  partsFromMs?: number;
}

export interface UploadRecord {
  uploadId: string;
  bucket: string;
  key: string;
  initiatedMs: number;
  contentHeaders: ContentHeaders;
  userMeta: Record<string, string>;
  /** Tags the completed object gets (x-amz-tagging on CreateMultipartUpload). */
  tags?: Tag[];
  /** The completed object's storage class (ObjectRecord.storageClass); absent: STANDARD. */
  storageClass?: string;
}

/**
 * An upload as ListMultipartUploads lists it. `damage`: its record is
 * damaged (quarantine.ts uploadDamage, or its bytes do not decode); key and
 * uploadId are then its index key's, the other fields neutral (initiatedMs 0).
 */
export type ListedUpload = UploadRecord & { damage?: string };

/**
 * A CompleteMultipartUpload names a part whose record is damaged (partDamage):
 * InvalidPart (S3 400) naming the damage, never the 500 a client retries.
 */
export class DamagedPartRecord extends InvalidPart {
  override name = 'DamagedPartRecord';
  constructor(
    readonly uploadId: string,
    readonly partNumber: number,
    readonly damage: string,
  ) {
    super(`Part ${partNumber} cannot be used: its stored record is damaged (${damage}). Upload part ${partNumber} again or abort the upload.`);
  }
}

/**
 * CompleteMultipartUpload names a part whose bytes were on a hot pool whose
 * disk was replaced with `pools replace --discard-volumes`
 * (HotSegment.lostWithPool): InvalidPart (S3 400) saying which part and why,
 * before anything is published; the upload is kept, so the client can upload
 * that part again and complete.
 */
export class LostPart extends InvalidPart {
  override name = 'LostPart';
  constructor(
    readonly uploadId: string,
    readonly partNumber: number,
    readonly pool: string,
  ) {
    super(
      `One or more of the specified parts could not be found: part ${partNumber}'s data was ${lostWith([pool])}. Upload part ${partNumber} again, then complete the upload again (the upload and its other parts are kept).`,
    );
  }
}

/**
 * CompleteMultipartUpload names a cold part one of whose stripes has more
 * shards known gone than parity repairs (cold-segments.ts
 * assertColdShardsKnownKept): InvalidPart (S3 400) saying which part and
 * why, before anything is published; the upload is kept, so the client can
 * upload that part again and complete. Published, every GET of the object
 * would answer 500.
 */
export class UnreadablePart extends InvalidPart {
  override name = 'UnreadablePart';
  constructor(
    readonly uploadId: string,
    readonly partNumber: number,
    why: string,
  ) {
    super(`One or more of the specified parts could not be found: part ${partNumber}'s data cannot be read: ${why}. Upload part ${partNumber} again, then complete the upload again (the upload and its other parts are kept).`);
  }
}

/** "lost with pool P's disk (...)": how a loss by `pools replace --discard-volumes` is said to S3 clients. */
function lostWith(pools: readonly string[]): string {
  const disks = pools.length === 1 ? `pool ${pools[0]}'s disk` : `the disks of pools ${pools.join(', ')}`;
  return `lost with ${disks} (replaced with \`pools replace --discard-volumes\`)`;
}

/** The pools whose replaced disks took bytes of `segments` (HotSegment.lostWithPool), each once; [] when none. */
export function lostPools(segments: readonly Segment[]): string[] {
  const pools: string[] = [];
  for (const s of segments) if (s.kind === 'hot' && s.lostWithPool !== undefined && !pools.includes(s.lostWithPool)) pools.push(s.lostWithPool);
  return pools;
}

/**
 * Refuses an object any of whose bytes were lost with a replaced disk: every
 * path that presents the object as data (GET of any range or part, HEAD,
 * GetObjectAttributes, a copy or part copy from it) answers the loss, never
 * the old size and ETag as if it were whole. Its index record is intact: it
 * is listed, and DELETE removes it.
 */
export function assertObjectDataKept(rec: ObjectRecord): void {
  const pools = lostPools(rec.segments);
  if (pools.length > 0) throw new ObjectDataLost(`the object's data was ${lostWith(pools)}: it can only be deleted`);
}

/**
 * A conditional write (S3 If-None-Match: * / If-Match on PutObject, CopyObject,
 * CompleteMultipartUpload), judged against the key's current version inside
 * the index transaction that installs the new one (flip), never by a read
 * before the upload: of writers racing on one key exactly one create (or one
 * compare-and-swap) wins, whatever their body sizes and tiers.
 * `absent`: only if the key has no object, a damaged record included.
 * `etagIn`: only if the current version's ETag (unquoted, lowercase) is one of
 * `etags`, '*' matching any; a key with no object is NoSuchObject (S3: 404
 * NoSuchKey), a damaged record matches nothing.
 */
export type WriteCondition = { kind: 'absent' } | { kind: 'etagIn'; etags: readonly string[] };

/**
 * A conditional delete (S3 DeleteObject If-Match, x-amz-if-match-size,
 * x-amz-if-match-last-modified-time; DeleteObjects' ETag, Size,
 * LastModifiedTime), judged against the key's current version inside the
 * index transaction that removes it: of deletes and conditional writes racing
 * on one version exactly one wins. Every condition given must hold. A key
 * with no object is NoSuchObject (S3: 404 NoSuchKey) when `etags` is given,
 * else nothing to delete (204); a damaged record matches nothing.
 */
export interface DeleteCondition {
  /** ETags (unquoted, lowercase), '*' matching any. */
  etags?: readonly string[];
  /** Compared in whole seconds (Last-Modified's precision). */
  lastModifiedMs?: number;
  sizeBytes?: number;
}

/** A WriteCondition or DeleteCondition did not hold: nothing was written or deleted, the current version stays. */
export class PreconditionFailed extends StorageError {
  override name = 'PreconditionFailed';
  constructor(
    /** The request header whose condition failed (S3's Condition element). */
    readonly condition: 'If-None-Match' | 'If-Match' | 'x-amz-if-match-size' | 'x-amz-if-match-last-modified-time' | 'x-amz-if-match-initiated-time',
    message: string,
  ) {
    super(message);
  }
}

function judgeWriteCondition(cond: WriteCondition, current: unknown, bucket: string, key: string): void {
  if (cond.kind === 'absent') {
    if (current !== undefined) throw new PreconditionFailed('If-None-Match', `${bucket}/${key} exists (If-None-Match: * writes only a key that has no object)`);
    return;
  }
  if (current === undefined) throw new NoSuchObject(`${bucket}/${key} has no object to match If-Match against`);
  // A damaged record (recordDamage) matches nothing, even by an ETag field that still reads: what it stores cannot be trusted.
  const etag = recordDamage(current, 'segments') === null ? (current as { etag?: unknown }).etag : undefined;
  if (typeof etag !== 'string' || !cond.etags.some((e) => e === '*' || e === etag)) {
    throw new PreconditionFailed('If-Match', `the ETag of ${bucket}/${key} is not one If-Match names`);
  }
}

/** Throws unless `cond` holds for the key's current record `current` (DeleteCondition); false: no object, nothing to delete. */
function judgeDeleteCondition(cond: DeleteCondition, current: unknown, bucket: string, key: string): boolean {
  if (current === undefined) {
    if (cond.etags !== undefined) throw new NoSuchObject(`${bucket}/${key} has no object to match If-Match against`);
    return false;
  }
  // A damaged record (recordDamage) matches nothing, even by fields that still read: what it stores cannot be trusted.
  const rec = recordDamage(current, 'segments') === null ? (current as ObjectRecord) : undefined;
  if (cond.etags !== undefined && (rec === undefined || !cond.etags.some((e) => e === '*' || e === rec.etag))) {
    throw new PreconditionFailed('If-Match', `the ETag of ${bucket}/${key} is not one If-Match names`);
  }
  if (cond.sizeBytes !== undefined && rec?.sizeBytes !== cond.sizeBytes) {
    throw new PreconditionFailed('x-amz-if-match-size', `${bucket}/${key} is not ${cond.sizeBytes} bytes`);
  }
  if (cond.lastModifiedMs !== undefined && (rec === undefined || Math.floor(rec.lastModifiedMs / 1000) !== Math.floor(cond.lastModifiedMs / 1000))) {
    throw new PreconditionFailed('x-amz-if-match-last-modified-time', `${bucket}/${key} was not last modified at ${new Date(cond.lastModifiedMs).toISOString()}`);
  }
  return true;
}

/**
 * What is wrong with a stored part record as multipart reads it (ListParts,
 * CompleteMultipartUpload), or null: recordDamage (its segment), or a field
 * those answer or sum unreadable (a record damaged into null, say).
 */
export function partDamage(p: unknown): string | null {
  const segment = recordDamage(p, 'segment');
  if (segment !== null) return segment;
  const r = p as Partial<PartRecord>;
  for (const f of ['partNumber', 'sizeBytes', 'lastModifiedMs'] as const) if (!Number.isFinite(r[f])) return `${f} is ${JSON.stringify(r[f]) ?? 'undefined'}`;
  if (typeof r.etag !== 'string') return `etag is ${JSON.stringify(r.etag) ?? 'undefined'}`;
  return null;
}

export interface PartRecord {
  partNumber: number;
  etag: string;
  sizeBytes: number;
  lastModifiedMs: number;
  segment: Segment;
}

export interface PutOptions {
  contentHeaders: ContentHeaders;
  userMeta: Record<string, string>;
  expectedBytes?: number;
  /** Content-MD5 as raw 16 bytes: mismatch = DigestMismatch, nothing stored. */
  expectedMd5?: Buffer;
  /** The new version's tags (an overwrite never keeps the old version's). */
  tags?: Tag[];
  /** Install the new version only if this holds (judged in the flip; refused: its bytes are freed). */
  condition?: WriteCondition;
  /** The new version's storage class (ObjectRecord.storageClass); absent or STANDARD: none stored. */
  storageClass?: string;
}

/** `tags` as a record field: only a non-empty set is stored, so untagged records stay as before. */
function tagField(tags: Tag[] | undefined): { tags?: Tag[] } {
  return tags !== undefined && tags.length > 0 ? { tags } : {};
}

/** `storageClass` as a record field: STANDARD is not stored, so such records stay as before. */
function storageClassField(storageClass: string | undefined): { storageClass?: string } {
  return storageClass !== undefined && storageClass !== 'STANDARD' ? { storageClass } : {};
}

export interface ListOptions {
  prefix: string;
  delimiter: string;
  /** Exclusive: listing starts strictly after this key (or common prefix). */
  after: string;
  maxKeys: number;
}

export interface ListPage {
  objects: ObjectRecord[];
  commonPrefixes: string[];
  isTruncated: boolean;
  /** The last key or common prefix returned (the next page starts after it). */
  lastItem: string | undefined;
}

export interface UploadListOptions {
  prefix: string;
  keyMarker: string;
  uploadIdMarker: string;
  maxUploads: number;
}

/** An object pinned for reading: its bytes stay until `release` (or the stream closes). */
export interface ObjectHandle {
  rec: ObjectRecord;
  /** Bytes [offsetBytes, offsetBytes+lengthBytes); the stream's close releases the handle. */
  read(offsetBytes: number, lengthBytes: number): Readable;
  /**
   * Bytes [offsetBytes, offsetBytes+lengthBytes) to `sink` piece by piece
   * (pieces are borrowed, see PieceSink); releases the handle when it settles.
   * The GET path: pooled read blocks, reads overlapped with socket writes.
   */
  send(offsetBytes: number, lengthBytes: number, sink: PieceSink): Promise<void>;
  release(): void;
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
/**
 * Whole-database scans must say where to start: lmdb-js's default getRange()
 * and getCount() silently skip keys whose first byte is this low (checked).
 * Frozen: lmdb-js's getKeys/getKeysCount/getCount set fields (values,
 * onlyCount) on the options object they are given, and a shared range so
 * marked made every later getRange(ALL_KEYS) in the process a count (the
 * second ObjectStore.open threw; test/review-flip-reopen). Pass those a copy.
 */
const ALL_KEYS: Readonly<{ start: Buffer }> = Object.freeze({ start: Buffer.from([1]) });

// Index keys are raw byte strings starting with 0x01 (which lmdb's
// ordered-binary keeps as raw bytes), so LMDB order is UTF-8 byte order,
// which is S3's listing order.
function objectKey(bucketId: number, key: string): Buffer {
  const k = utf8(key);
  const b = Buffer.allocUnsafe(5 + k.length);
  b[0] = 1;
  b.writeUInt32BE(bucketId, 1);
  k.copy(b, 5);
  return b;
}

/**
 * An object record as a listing reads it. A damaged one (cold-holders.ts
 * recordDamage; its value not a record, or its key or listed fields gone) is
 * listed under the key its index key holds, with neutral fields, so one bad
 * record does not make its whole bucket unlistable (500) and the client can
 * see and DELETE it (GET answers the damage).
 */
function asListed(indexKey: Buffer | Uint8Array, value: unknown): ObjectRecord {
  const r = (typeof value === 'object' && value !== null ? value : {}) as Partial<ObjectRecord>;
  if (typeof r.key === 'string' && Number.isFinite(r.lastModifiedMs) && Number.isFinite(r.sizeBytes) && typeof r.etag === 'string') return r as ObjectRecord;
  return {
    ...r,
    key: typeof r.key === 'string' ? r.key : Buffer.from(indexKey).subarray(5).toString('utf8'),
    lastModifiedMs: Number.isFinite(r.lastModifiedMs) ? r.lastModifiedMs! : 0,
    sizeBytes: Number.isFinite(r.sizeBytes) ? r.sizeBytes! : 0,
    etag: typeof r.etag === 'string' ? r.etag : '',
  } as ObjectRecord;
}

function bucketStart(bucketId: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = 1;
  b.writeUInt32BE(bucketId, 1);
  return b;
}

/** Damaged records ObjectStore.open names in the log (bounds its list; the stripe counts name the others). */
const DAMAGED_NAMED_AT_OPEN = 16;

/** An upload id's length: 16 random bytes in hex (createUpload); getUpload refuses any other. */
const UPLOAD_ID_CHARS = 32;

function uploadKey(bucketId: number, key: string, uploadId: string): Buffer {
  return Buffer.concat([objectKey(bucketId, key), Buffer.from([0]), Buffer.from(uploadId, 'latin1')]);
}

function partKey(uploadId: string, partNumber: number): Buffer {
  const b = Buffer.allocUnsafe(1 + uploadId.length + 2);
  b[0] = 1;
  b.write(uploadId, 1, 'latin1');
  b.writeUInt16BE(partNumber, 1 + uploadId.length);
  return b;
}

/** Smallest byte string greater than every string starting with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      b[i]!++;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
}

/**
 * An inline segment's bytes, or Corrupt if they no longer match their CRC32C.
 * The bytes are the decoded record's own: lmdb-js decodes embedded buffers
 * with copyBuffers: true (lmdb/open.js), never as views of its read buffer,
 * so they stay valid while a socket write still holds them.
 */
function checkedInline(seg: InlineSegment): Buffer {
  if (crc32c(seg.bytes) !== seg.crc32c || seg.bytes.length !== seg.lengthBytes) throw new Corrupt('inline object bytes fail their CRC32C');
  return seg.bytes;
}

/**
 * The segments of `rec` that overlap [offsetBytes, offsetBytes + lengthBytes),
 * in order, each with the byte range within it to read (`from`, `len`) and
 * whether it is the last one the range touches.
 */
function* overlappingSegments(rec: ObjectRecord, offsetBytes: number, lengthBytes: number): Generator<{ seg: Segment; from: number; len: number; isLast: boolean }> {
  let segStart = 0;
  const end = offsetBytes + lengthBytes;
  for (const seg of rec.segments) {
    const segEnd = segStart + seg.lengthBytes;
    if (segEnd > offsetBytes && segStart < end) {
      const from = Math.max(offsetBytes, segStart) - segStart;
      const len = Math.min(end, segEnd) - segStart - from;
      yield { seg, from, len, isLast: segEnd >= end };
    }
    segStart = segEnd;
    if (segStart >= end) break;
  }
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(utf8(a), utf8(b));
}

export function validateKey(key: string): void {
  if (key.length === 0) throw new InvalidArgument('object key is empty');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw new InvalidArgument(`object key is longer than ${MAX_KEY_BYTES} bytes`);
  // NUL separates key and upload id in the uploads index.
  if (key.includes('\u0000')) throw new InvalidArgument('object key contains NUL');
}

export function multipartEtag(partEtags: string[]): string {
  const h = createHash('md5');
  for (const e of partEtags) h.update(Buffer.from(e, 'hex'));
  return `${h.digest('hex')}-${partEtags.length}`;
}

export class ObjectStore {
  private readonly buckets: Database<BucketRecord, string>;
  private readonly objects: Database<ObjectRecord, Buffer>;
  private readonly uploads: Database<UploadRecord, Buffer>;
  private readonly parts: Database<PartRecord, Buffer>;
  private readonly counters: Database<number, string>;
  private nextId = 0;
  private idLimit = 0;
  private reserving: Promise<void> | null = null;
  private openUploads = 0;
  /**
   * PUT bodies, part uploads and open read handles in flight. At 1 (only
   * the caller) small reads take hot-segments' fast path (SYNC_MAX_BYTES
   * says why).
   */
  private active = 0;
  /** Sum of InlineSegment lengths in the index (bounded by INLINE_CAP_BYTES). */
  private inlineBytes = 0;
  /** versionId -> readers; bounded by the number of open GET streams. */
  private readonly pins = new Map<number, number>();
  /** versionId -> segments to free when its last reader closes. */
  private readonly deferredFree = new Map<number, Segment[]>();

  private constructor(
    private readonly manager: VolumeManager,
    private readonly stripes: StripeStoreApi | undefined,
  ) {
    const meta = manager.meta;
    this.buckets = meta.openDB<BucketRecord, string>('s3-buckets');
    // A record whose bytes do not decode reads as an UndecodableRecord (openIndexDB), damage like any other.
    this.objects = openIndexDB<ObjectRecord>(meta, OBJECTS_DB);
    this.uploads = openIndexDB<UploadRecord>(meta, UPLOADS_DB);
    this.parts = openIndexDB<PartRecord>(meta, PARTS_DB);
    this.counters = meta.openDB<number, string>('s3-counters');
    const coldPath = (name: string) => {
      const p = manager.pools.get(name);
      return p?.rec.tier === 'cold' ? p.rec.path : undefined;
    };
    this.poolDisks = stripes === undefined ? undefined : new PoolDisks(meta, coldPath);
  }

  /** Cold pools' disks as last seen, kept across restarts (pool-disks.ts): undefined without a cold tier. */
  private readonly poolDisks: PoolDisks | undefined;

  /**
   * Opens the object index, accounts its bytes to the pools, and removes
   * segment files no index entry references (uploads cut short by a crash).
   */
  static async open(manager: VolumeManager, stripes?: StripeStoreApi): Promise<ObjectStore> {
    const store = new ObjectStore(manager, stripes);
    // Before any check: a cold pool whose disk was replaced while the daemon was down is known as such.
    store.poolDisks?.recordAll([...manager.pools.values()].filter((p) => p.rec.tier === 'cold').map((p) => p.name));
    const referenced = new Set<number>();
    const account = (seg: Segment) => {
      if (seg.kind === 'inline') store.inlineBytes += seg.lengthBytes;
      if (seg.kind !== 'hot' || seg.lostWithPool !== undefined) return;
      referenced.add(seg.fileId);
      const p = manager.pools.get(seg.pool);
      if (p) p.usedBytes += seg.lengthBytes;
    };
    // A damaged record (cold-holders.ts recordDamage) is skipped, not fatal (the S3 front end
    // serves every other object), and turns the sweep off: a hot file it may name must be kept.
    let damaged = 0;
    // The first few named in the log now (the rest by the stripe counts), whether or not anything scrapes the metrics.
    const named: DamagedRecord[] = [];
    const found = (db: DamagedRecord['db'], key: Buffer | Uint8Array, problem: string) => {
      if (damaged++ < DAMAGED_NAMED_AT_OPEN) named.push({ db, key: Buffer.from(key), problem });
    };
    for (const { key, value } of store.objects.getRange(ALL_KEYS)) {
      const problem = recordDamage(value, 'segments');
      if (problem !== null) found('objects', key, problem);
      else for (const s of value.segments) account(s);
    }
    for (const { key, value } of store.parts.getRange(ALL_KEYS)) {
      const problem = recordDamage(value, 'segment');
      if (problem !== null) found('parts', key, problem);
      else account(value.segment);
    }
    logDamagedRecords(manager.meta, named);
    store.openUploads = store.uploads.getKeysCount({ ...ALL_KEYS }); // a copy: it marks its options (ALL_KEYS)
    let swept = 0;
    if (damaged > 0) log.error('object store: damaged index records; unreferenced segment files are kept (not swept) while one is there, `couchestor fsck` names them and `couchestor fsck --quarantine-damaged` (daemon stopped) moves them out', { records: damaged });
    for (const pool of manager.pools.values()) {
      if (pool.rec.tier !== 'hot' || !pool.isOnline()) continue;
      prepareHotPool(pool);
      if (damaged > 0) continue;
      for (const id of listHotFileIds(pool)) {
        if (referenced.has(id)) continue;
        await freeHotSegment(pool, { kind: 'hot', pool: pool.name, fileId: id, lengthBytes: 0, chunkCrc32c: [] });
        swept++;
      }
    }
    if (swept > 0) log.info('object store: removed unreferenced segment files', { count: swept });
    store.nextId = store.idLimit = store.counters.get('idLimit') ?? 1;
    return store;
  }

  private async allocId(): Promise<number> {
    while (this.nextId >= this.idLimit) {
      if (!this.reserving) {
        const limit = this.idLimit + ID_BLOCK;
        this.reserving = (async () => {
          await this.counters.put('idLimit', limit);
          await this.manager.meta.durable();
          this.idLimit = limit;
        })().finally(() => (this.reserving = null));
      }
      await this.reserving;
    }
    return this.nextId++;
  }

  // ---- buckets ----------------------------------------------------------

  listBuckets(): BucketRecord[] {
    return [...this.buckets.getRange()].map((e) => e.value);
  }

  getBucket(name: string): BucketRecord {
    const b = this.buckets.get(name);
    if (!b) throw new NoSuchBucket(`bucket ${name} does not exist`);
    return b;
  }

  async createBucket(name: string, tier: BucketTier): Promise<BucketRecord> {
    if (tier === 'cold' && !this.stripes) throw new NoSuitablePool('cold buckets need the erasure-coded stripe store, which this daemon was started without');
    const rec = await this.manager.meta.transaction(() => {
      if (this.buckets.get(name)) throw new AlreadyExists(`bucket ${name} already exists`);
      const id = (this.counters.get('bucketId') ?? 0) + 1;
      const r: BucketRecord = { name, id, tier, createdMs: Date.now() };
      this.counters.put('bucketId', id);
      this.buckets.put(name, r);
      return r;
    });
    await this.manager.meta.durable();
    return rec;
  }

  /** Refused while objects remain; in-flight multipart uploads are aborted with it. */
  async deleteBucket(name: string): Promise<void> {
    const freed: Segment[] = [];
    let aborted = 0;
    await this.manager.meta.transaction(() => {
      const b = this.getBucket(name);
      const start = bucketStart(b.id);
      const end = prefixEnd(start);
      for (const _ of this.objects.getKeys({ start, end, limit: 1 })) throw new NotEmpty(`bucket ${name} is not empty`);
      for (const key of this.uploads.getKeys({ start, end })) {
        // The upload id from the index key (uploadKey: it ends with the id), not the record: an
        // upload record damaged into null threw here mid-transaction (lmdb-js keeps the removals
        // before it), and a damaged one's parts must go with it.
        const uploadId = Buffer.from(key).subarray(-UPLOAD_ID_CHARS).toString('latin1');
        for (const p of this.parts.getRange({ start: partKey(uploadId, 0), end: partKey(uploadId, 0xffff) })) {
          if (recordDamage(p.value, 'segment') === null) freed.push(p.value.segment); // a damaged one frees nothing it names
          this.parts.remove(p.key);
        }
        this.uploads.remove(key);
        aborted++;
      }
      this.buckets.remove(name);
    });
    await this.manager.meta.durable();
    this.openUploads -= aborted;
    await this.freeSegments(freed);
  }

  /**
   * Replaces the bucket's tag set (undefined: removes it). Durable before it
   * resolves. The record is re-read in the transaction, so a bucket deleted
   * meanwhile is NoSuchBucket, never re-created.
   */
  async setBucketTags(name: string, tags: Tag[] | undefined): Promise<void> {
    await this.manager.meta.transaction(() => {
      const { tags: _old, ...rest } = this.getBucket(name);
      this.buckets.put(name, tags === undefined ? rest : { ...rest, tags });
    });
    await this.manager.meta.durable();
  }

  // ---- objects ----------------------------------------------------------

  /**
   * Replaces the current version's tags (empty: removes them), in place: the
   * version, its bytes and its pins are untouched. Read and written in one
   * transaction, so it lands on whichever version is current then (never
   * re-creates a deleted object) and cannot undo a concurrent stripe flip.
   */
  async setObjectTags(bucketName: string, key: string, tags: Tag[]): Promise<void> {
    const bucket = this.getBucket(bucketName);
    if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new NoSuchObject(`no object ${key} in bucket ${bucketName}`);
    const k = objectKey(bucket.id, key);
    await this.manager.meta.transaction(() => {
      const cur = this.objects.get(k);
      if (!cur) throw new NoSuchObject(`no object ${key} in bucket ${bucketName}`);
      // Rewritten, a damaged record would lose what is left of it (an undecodable one, its stored bytes).
      const damage = recordDamage(cur, 'segments');
      if (damage !== null) throw new Corrupt(`the index record of ${bucketName}/${key} is damaged (${damage}); \`couchestor fsck\` lists such records`);
      const { tags: _old, ...rest } = cur;
      this.objects.put(k, { ...rest, ...tagField(tags) });
    });
    await this.manager.meta.durable();
  }

  headObject(bucket: string, key: string): ObjectRecord {
    const b = this.getBucket(bucket);
    const rec = this.objects.get(objectKey(b.id, key));
    // undefined, not falsy: a record damaged into null is there (listed, deletable), and damaged.
    if (rec === undefined) throw new NoSuchObject(`no object ${key} in bucket ${bucket}`);
    // A damaged record answers what it is (S3 InternalError "stored data is damaged: ..."), not a TypeError's "try again".
    const damage = recordDamage(rec, 'segments');
    if (damage !== null) throw new Corrupt(`the index record of ${bucket}/${key} is damaged (${damage}); \`couchestor fsck\` lists such records`);
    return rec;
  }

  /**
   * Refuses a cold object a stripe of which has more shards known gone than
   * parity repairs (cold-segments.ts assertColdShardsKnownKept), as a GET of
   * it would: every path that presents the object as data (GET, HEAD,
   * GetObjectAttributes, copies from it) asks this, so none answers 200 with
   * the old size and ETag where a GET answers 500. Hot and inline objects: at once.
   */
  async assertShardsKnownKept(rec: ObjectRecord): Promise<void> {
    if (this.stripes === undefined || !rec.segments.some((s) => s.kind === 'cold')) return;
    // When the stripes were written at the latest: a multipart object's parts after its upload began.
    const multipart = rec.partNumbers !== undefined || rec.etag.includes('-');
    const writtenMs = multipart ? (rec.partsFromMs ?? 0) : rec.lastModifiedMs;
    this.coldHeaderReads += await assertColdShardsKnownKept(this.stripes, rec.segments, this.sinceCheck(writtenMs));
  }

  /** Shard headers read by the lost-shard checks (assertColdShardsKnownKept) of HEAD, GET, copies and completions: couchestor_s3_cold_header_reads_total. */
  coldHeaderReads = 0;

  /** Cold pools' disks as the object store judges them (pool-disks.ts): undefined without a cold tier. */
  get coldPoolDisks(): PoolDisks | undefined {
    return this.poolDisks;
  }

  /** assertColdShardsKnownKept's knowledge of disks replaced after `writtenMs` (pool-disks.ts). */
  private sinceCheck(writtenMs: number) {
    const disks = this.poolDisks;
    return disks === undefined ? undefined : { writtenMs, replacedSince: (pool: string, store: object, openedEmpty: boolean) => disks.replacedSince(pool, store, openedEmpty) };
  }

  /**
   * Looks the object up and pins its version in the same tick, so an
   * overwrite that commits later cannot free the bytes under the reader.
   */
  openObject(bucket: string, key: string): ObjectHandle {
    const rec = this.headObject(bucket, key);
    assertObjectDataKept(rec);
    // Every stripe read names this object's holder key, so a degraded read queues its stripe (cold-holders.ts).
    const indexKeyHex = objectKey(this.getBucket(bucket).id, key).toString('hex');
    this.pins.set(rec.versionId, (this.pins.get(rec.versionId) ?? 0) + 1);
    // The pin keeps an overwrite from freeing the cold stripes; the hold keeps
    // segment compaction from deleting them (it copies them, reads follow).
    const unhold = this.stripes?.hold([...coldStripeRefs(rec.segments)]);
    this.active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.active--;
      unhold?.();
      this.unpin(rec.versionId);
    };
    return {
      rec,
      release,
      read: (offsetBytes, lengthBytes) => {
        if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > rec.sizeBytes) throw new InvalidArgument('read range outside the object');
        const stream = Readable.from(this.readSegments(rec, indexKeyHex, offsetBytes, lengthBytes), { objectMode: false, highWaterMark: 1024 * 1024 });
        stream.once('close', release);
        return stream;
      },
      send: async (offsetBytes, lengthBytes, sink) => {
        try {
          if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > rec.sizeBytes) throw new InvalidArgument('read range outside the object');
          await this.sendSegments(rec, indexKeyHex, offsetBytes, lengthBytes, sink);
        } finally {
          release();
        }
      },
    };
  }

  private unpin(versionId: number): void {
    const n = (this.pins.get(versionId) ?? 1) - 1;
    if (n > 0) {
      this.pins.set(versionId, n);
      return;
    }
    this.pins.delete(versionId);
    const segs = this.deferredFree.get(versionId);
    if (segs) {
      this.deferredFree.delete(versionId);
      void this.freeSegments(segs);
    }
  }

  private async *readSegments(rec: ObjectRecord, indexKeyHex: string, offsetBytes: number, lengthBytes: number): AsyncGenerator<Buffer> {
    for (const { seg, from, len } of overlappingSegments(rec, offsetBytes, lengthBytes)) {
      if (seg.kind === 'inline') {
        yield checkedInline(seg).subarray(from, from + len);
      } else if (seg.kind === 'hot') {
        const pool = this.hotPoolOf(seg);
        yield* readHotSegment(pool, seg, from, len);
      } else {
        yield* readColdSegment(this.requireStripes(), seg, from, len, (ref) => objectStripeContext(indexKeyHex, ref));
      }
    }
  }

  private async sendSegments(rec: ObjectRecord, indexKeyHex: string, offsetBytes: number, lengthBytes: number, sink: PieceSink): Promise<void> {
    for (const { seg, from, len, isLast } of overlappingSegments(rec, offsetBytes, lengthBytes)) {
      if (seg.kind === 'inline') {
        await sink(checkedInline(seg).subarray(from, from + len), isLast);
      } else if (seg.kind === 'hot') {
        const pool = this.hotPoolOf(seg);
        await sendHotSegment(pool, seg, from, len, sink, isLast, this.active === 1);
      } else {
        // Stripe reads hand over their own buffers, so each piece is simply awaited.
        let pending: Buffer | undefined;
        for await (const piece of readColdSegment(this.requireStripes(), seg, from, len, (ref) => objectStripeContext(indexKeyHex, ref))) {
          if (pending) await sink(pending, false);
          pending = piece;
        }
        if (pending) await sink(pending, isLast);
      }
    }
  }

  /**
   * The pool to read hot segment `seg` from: online (an offline pool's object
   * answers 503, not a missing file's 500), and not lost with a replaced disk.
   */
  private hotPoolOf(seg: HotSegment): Pool {
    // openObject refuses a lost object; this is a disk replaced while the handle was open.
    if (seg.lostWithPool !== undefined) throw new ObjectDataLost(`the object's data was ${lostWith([seg.lostWithPool])}: it can only be deleted`);
    const pool = this.manager.pools.get(seg.pool);
    if (!pool) throw new NoSuitablePool(`object data is on pool ${seg.pool}, which is not configured`);
    pool.assertOnline();
    return pool;
  }

  private requireStripes(): StripeStoreApi {
    if (!this.stripes) throw new NoSuitablePool('object data is on the cold tier, but the stripe store is not available');
    return this.stripes;
  }

  /** Writes the body durably; returns where it went and its MD5 (the ETag). */
  private async writeSegment(bucket: BucketRecord, body: AsyncIterable<Buffer>, limits: WriteLimits): Promise<{ seg: Segment; md5: Buffer }> {
    const fileId = await this.allocId();
    const expected = limits.expectedBytes ?? 0;
    if (bucket.tier === 'cold' || expected < OFFLOAD_MD5_MIN_BYTES) {
      const md5 = createHash('md5');
      const observe = (piece: Buffer) => void md5.update(piece);
      const seg =
        bucket.tier === 'cold'
          ? await writeColdSegment(this.requireStripes(), fileId, body, limits, observe)
          : await writeHotSegment(this.manager.choosePool('hot', expected), fileId, body, limits, observe);
      return { seg, md5: md5.digest() };
    }
    const pool = this.manager.choosePool('hot', expected);
    const md5 = new OffloadedMd5();
    let digest: Promise<Buffer> | undefined;
    let seg: HotSegment;
    try {
      // The digest is asked for as soon as the body has ended, so the
      // worker's last batch overlaps with the file's fdatasync.
      seg = await writeHotSegment(pool, fileId, body, limits, (piece) => md5.update(piece), () => {
        digest = md5.digest();
        digest.catch(() => undefined);
      });
    } catch (err) {
      if (!digest) md5.drop();
      throw err;
    }
    try {
      return { seg, md5: await digest! };
    } catch (err) {
      await this.freeSegments([seg]);
      throw err;
    }
  }

  private async freeSegments(segs: Segment[]): Promise<void> {
    for (const seg of segs) {
      try {
        if (seg.kind === 'inline') {
          this.inlineBytes -= seg.lengthBytes;
        } else if (seg.kind === 'hot') {
          const pool = this.manager.pools.get(seg.pool);
          // A segment lost with its pool's disk (`pools replace --discard-volumes`) has no file, and its
          // bytes are not counted on the new disk (replacePool set its usage to 0): nothing to free.
          if (pool && seg.lostWithPool === undefined) await freeHotSegment(pool, seg);
        } else if (this.stripes) {
          freeColdSegment(this.stripes, seg);
        }
      } catch (err) {
        // A leaked file is swept at the next start; never fail the request for it.
        log.warn('object store: freeing segment failed', { err: (err as Error).message });
      }
    }
  }

  /** Frees a replaced version now, or when its last reader closes. */
  private retire(rec: ObjectRecord): Promise<void> {
    // A damaged record (deleted or overwritten by the client) frees nothing: what it names
    // cannot be trusted. Its files and stripes are left for fsck (orphans) and compaction.
    const damage = recordDamage(rec, 'segments');
    if (damage !== null) {
      log.warn('object store: replaced a damaged index record without freeing what it names', { key: (rec as Partial<ObjectRecord> | null)?.key, damage });
      return Promise.resolve();
    }
    if (this.pins.has(rec.versionId)) {
      this.deferredFree.set(rec.versionId, rec.segments);
      return Promise.resolve();
    }
    return this.freeSegments(rec.segments);
  }

  /** Writes a new version durably, then makes it the object's current version in one transaction. */
  async putObject(bucketName: string, key: string, body: AsyncIterable<Buffer>, opts: PutOptions): Promise<ObjectRecord> {
    this.active++;
    try {
      return await this.putObjectActive(bucketName, key, body, opts);
    } finally {
      this.active--;
    }
  }

  private async putObjectActive(bucketName: string, key: string, body: AsyncIterable<Buffer>, opts: PutOptions): Promise<ObjectRecord> {
    validateKey(key);
    const bucket = this.getBucket(bucketName);
    const expected = opts.expectedBytes;
    if (bucket.tier === 'hot' && expected !== undefined && expected <= INLINE_MAX_BYTES && this.inlineBytes + expected <= INLINE_CAP_BYTES) {
      return this.putInline(bucket, key, body, expected, opts);
    }
    const { seg, md5: digest } = await this.writeSegment(bucket, body, { maxBytes: MAX_PUT_BYTES, expectedBytes: opts.expectedBytes });
    let old: ObjectRecord | undefined;
    let rec: ObjectRecord;
    try {
      if (opts.expectedMd5 && !digest.equals(opts.expectedMd5)) throw new DigestMismatch('Content-MD5 does not match the bytes received');
      const versionId = await this.allocId();
      rec = {
        key,
        versionId,
        sizeBytes: seg.lengthBytes,
        etag: digest.toString('hex'),
        lastModifiedMs: Date.now(),
        contentHeaders: opts.contentHeaders,
        userMeta: opts.userMeta,
        segments: [seg],
        ...tagField(opts.tags),
        ...storageClassField(opts.storageClass),
      };
      const built = rec;
      old = await this.flip(bucket, key, () => built, opts.condition);
      if (seg.kind === 'cold') settleColdSegment(seg); // referenced now: compaction may move its stripes
    } catch (err) {
      await this.freeSegments([seg]);
      throw err;
    }
    if (old) await this.retire(old);
    return rec;
  }

  /** A small hot object: body in memory, then one index commit makes bytes and key durable and visible together. */
  private async putInline(bucket: BucketRecord, key: string, body: AsyncIterable<Buffer>, expectedBytes: number, opts: PutOptions): Promise<ObjectRecord> {
    const pieces: Buffer[] = [];
    let lengthBytes = 0;
    for await (const piece of body) {
      if (lengthBytes + piece.length > expectedBytes) throw new IncompleteBody(`body is longer than the declared ${expectedBytes} bytes`);
      pieces.push(piece);
      lengthBytes += piece.length;
    }
    if (lengthBytes !== expectedBytes) throw new IncompleteBody(`body ended after ${lengthBytes} of ${expectedBytes} declared bytes`);
    const bytes = Buffer.concat(pieces, lengthBytes);
    const digest = createHash('md5').update(bytes).digest();
    if (opts.expectedMd5 && !digest.equals(opts.expectedMd5)) throw new DigestMismatch('Content-MD5 does not match the bytes received');
    const seg: InlineSegment = { kind: 'inline', lengthBytes, crc32c: crc32c(bytes), bytes };
    const rec: ObjectRecord = {
      key,
      versionId: await this.allocId(),
      sizeBytes: lengthBytes,
      etag: digest.toString('hex'),
      lastModifiedMs: Date.now(),
      contentHeaders: opts.contentHeaders,
      userMeta: opts.userMeta,
      segments: [seg],
      ...tagField(opts.tags),
      ...storageClassField(opts.storageClass),
    };
    // Counted before the commit so concurrent small PUTs cannot overshoot the cap.
    this.inlineBytes += lengthBytes;
    let old: ObjectRecord | undefined;
    try {
      old = await this.flip(bucket, key, () => rec, opts.condition);
    } catch (err) {
      this.inlineBytes -= lengthBytes;
      throw err;
    }
    if (old) await this.retire(old);
    return rec;
  }

  /**
   * Judges `condition` against the key's current version now, writing
   * nothing: PreconditionFailed / NoSuchObject as the flip would throw them.
   * A write whose condition already fails is refused before its body is
   * stored (a copy reads no source byte, a PUT's body is read and dropped);
   * one that passes here is judged again in the flip, which decides races.
   * Refusing on this read is as correct as in the flip: the condition failed
   * at an instant during the request.
   */
  checkWriteCondition(bucketName: string, key: string, condition: WriteCondition): void {
    validateKey(key);
    const bucket = this.getBucket(bucketName);
    judgeWriteCondition(condition, this.objects.get(objectKey(bucket.id, key)), bucket.name, key);
  }

  /**
   * One transaction: checks the bucket still exists and `condition` against
   * the key's current record, runs `build`, installs its record. Writes are
   * serialised, so the condition is judged against what no other write can
   * change before this one commits. `build` may throw to abort, but only
   * before it writes: lmdb-js keeps writes made before a throw (checked: it
   * does not roll back); so the condition is judged before `build` runs.
   */
  private async flip(bucket: BucketRecord, key: string, build: () => ObjectRecord, condition?: WriteCondition): Promise<ObjectRecord | undefined> {
    const k = objectKey(bucket.id, key);
    const old = await this.manager.meta.transaction(() => {
      const b = this.buckets.get(bucket.name);
      if (!b || b.id !== bucket.id) throw new NoSuchBucket(`bucket ${bucket.name} was deleted during the upload`);
      const prev = this.objects.get(k);
      if (condition !== undefined) judgeWriteCondition(condition, prev, bucket.name, key);
      const rec = build();
      this.objects.put(k, rec);
      return prev;
    });
    await this.manager.meta.durable();
    return old;
  }

  /**
   * Returns whether an object was there (S3 answers 204 either way). A
   * `condition` is judged in the transaction that removes the key
   * (PreconditionFailed / NoSuchObject: nothing deleted).
   */
  async deleteObject(bucketName: string, key: string, condition?: DeleteCondition): Promise<boolean> {
    const bucket = this.getBucket(bucketName);
    if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
      if (condition?.etags !== undefined) throw new NoSuchObject(`no object ${key} in bucket ${bucketName}`);
      return false;
    }
    const k = objectKey(bucket.id, key);
    const old = await this.manager.meta.transaction(() => {
      const prev = this.objects.get(k);
      // Judged before the remove: lmdb-js keeps writes made before a throw.
      if (condition !== undefined && !judgeDeleteCondition(condition, prev, bucket.name, key)) return undefined;
      // A record damaged into null (or 0, "") is removed too: the client's only way to clear it.
      if (prev !== undefined) this.objects.remove(k);
      return prev;
    });
    if (old === undefined) return false;
    await this.manager.meta.durable();
    await this.retire(old);
    return true;
  }

  list(bucketName: string, opts: ListOptions): ListPage {
    const bucket = this.getBucket(bucketName);
    const page: ListPage = { objects: [], commonPrefixes: [], isTruncated: false, lastItem: undefined };
    if (opts.maxKeys <= 0) return page;
    const base = bucketStart(bucket.id);
    const end = opts.prefix ? prefixEnd(objectKey(bucket.id, opts.prefix)) : prefixEnd(base);
    const afterBuf = utf8(opts.after);
    let start = compareUtf8(opts.after, opts.prefix) >= 0 ? objectKey(bucket.id, opts.after) : objectKey(bucket.id, opts.prefix);
    let skipEqual = compareUtf8(opts.after, opts.prefix) >= 0 && opts.after !== '';
    let count = 0;
    for (;;) {
      let reseek: Buffer | null = null;
      for (const { key: indexKey, value: stored } of this.objects.getRange({ start, end })) {
        const value = asListed(indexKey, stored);
        if (skipEqual && value.key === opts.after) continue;
        let cp: string | undefined;
        if (opts.delimiter) {
          const i = value.key.indexOf(opts.delimiter, opts.prefix.length);
          if (i >= 0) cp = value.key.slice(0, i + opts.delimiter.length);
        }
        // A group whose prefix sorts at or before the marker was returned on an earlier page.
        if (cp !== undefined && Buffer.compare(utf8(cp), afterBuf) <= 0 && opts.after !== '') {
          reseek = prefixEnd(objectKey(bucket.id, cp));
          break;
        }
        if (count >= opts.maxKeys) {
          page.isTruncated = true;
          return page;
        }
        count++;
        if (cp !== undefined) {
          page.commonPrefixes.push(cp);
          page.lastItem = cp;
          reseek = prefixEnd(objectKey(bucket.id, cp));
          break;
        }
        page.objects.push(value);
        page.lastItem = value.key;
      }
      if (!reseek) return page;
      start = reseek;
      skipEqual = false;
    }
  }

  // ---- multipart --------------------------------------------------------

  async createUpload(bucketName: string, key: string, contentHeaders: ContentHeaders, userMeta: Record<string, string>, tags?: Tag[], storageClass?: string): Promise<UploadRecord> {
    validateKey(key);
    const bucket = this.getBucket(bucketName);
    if (this.openUploads >= MAX_OPEN_UPLOADS) throw new TooLarge(`too many multipart uploads in progress (limit ${MAX_OPEN_UPLOADS})`);
    const rec: UploadRecord = { uploadId: randomBytes(16).toString('hex'), bucket: bucketName, key, initiatedMs: Date.now(), contentHeaders, userMeta, ...tagField(tags), ...storageClassField(storageClass) };
    this.openUploads++;
    try {
      await this.uploads.put(uploadKey(bucket.id, key, rec.uploadId), rec);
      await this.manager.meta.durable();
    } catch (err) {
      this.openUploads--;
      throw err;
    }
    return rec;
  }

  /**
   * The upload's record. A damaged one (quarantine.ts uploadDamage: null,
   * another uploadId, bytes that do not decode) is NoSuchUpload naming the
   * damage: its content headers and metadata cannot be trusted, so no part
   * is added to it and no object built from it; AbortMultipartUpload
   * (`damaged` 'allow') removes it with its parts.
   */
  getUpload(bucketName: string, key: string, uploadId: string, damaged: 'refuse' | 'allow' = 'refuse'): UploadRecord {
    const bucket = this.getBucket(bucketName);
    const uk = /^[0-9a-f]{32}$/.test(uploadId) ? uploadKey(bucket.id, key, uploadId) : undefined;
    const rec = uk !== undefined ? this.uploads.get(uk) : undefined;
    // undefined, not falsy: a record damaged into null is there, and damaged.
    if (rec === undefined) throw new NoSuchUpload(`no multipart upload ${uploadId} for ${key}`);
    const damage = uploadDamage(rec, uk!);
    if (damage !== null && damaged === 'refuse') {
      throw new NoSuchUpload(`the record of multipart upload ${uploadId} of ${bucketName}/${key} is damaged (${damage}); AbortMultipartUpload removes it, \`couchestor fsck\` lists such records`);
    }
    return rec;
  }

  async uploadPart(bucketName: string, key: string, uploadId: string, partNumber: number, body: AsyncIterable<Buffer>, opts: { expectedBytes?: number; expectedMd5?: Buffer }): Promise<PartRecord> {
    this.active++;
    try {
      return await this.uploadPartActive(bucketName, key, uploadId, partNumber, body, opts);
    } finally {
      this.active--;
    }
  }

  private async uploadPartActive(bucketName: string, key: string, uploadId: string, partNumber: number, body: AsyncIterable<Buffer>, opts: { expectedBytes?: number; expectedMd5?: Buffer }): Promise<PartRecord> {
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > MAX_PART_NUMBER) throw new InvalidArgument(`part number must be an integer between 1 and ${MAX_PART_NUMBER}`);
    const bucket = this.getBucket(bucketName);
    this.getUpload(bucketName, key, uploadId);
    const { seg, md5: digest } = await this.writeSegment(bucket, body, { maxBytes: MAX_PUT_BYTES, expectedBytes: opts.expectedBytes });
    let old: PartRecord | undefined;
    let rec: PartRecord;
    try {
      if (opts.expectedMd5 && !digest.equals(opts.expectedMd5)) throw new DigestMismatch('Content-MD5 does not match the bytes received');
      rec = { partNumber, etag: digest.toString('hex'), sizeBytes: seg.lengthBytes, lastModifiedMs: Date.now(), segment: seg };
      const uk = uploadKey(bucket.id, key, uploadId);
      const pk = partKey(uploadId, partNumber);
      old = await this.manager.meta.transaction(() => {
        if (!this.uploads.get(uk)) throw new NoSuchUpload(`multipart upload ${uploadId} was completed or aborted during the part upload`);
        const prev = this.parts.get(pk);
        this.parts.put(pk, rec);
        return prev;
      });
      if (seg.kind === 'cold') settleColdSegment(seg); // referenced now: compaction may move its stripes
      await this.manager.meta.durable();
    } catch (err) {
      await this.freeSegments([seg]);
      throw err;
    }
    // A damaged part record (cold-holders.ts recordDamage) overwritten frees nothing it names, as
    // retire() for an object: its fields cannot be trusted (a fileId may name another object's file).
    // Its file and stripes are left for the start-up sweep and the recount (dead once unreferenced).
    if (old !== undefined && recordDamage(old, 'segment') !== null) {
      log.warn('object store: replaced a damaged part record without freeing what it names', { uploadId, partNumber, damage: recordDamage(old, 'segment') });
    } else if (old) await this.freeSegments([old.segment]);
    return rec;
  }

  /**
   * Stitches the listed parts into one object version (no bytes are copied:
   * the parts' segments become the object's) and drops the upload, in one
   * transaction. Parts uploaded but not listed are freed. A `condition` that
   * does not hold changes nothing: the upload and its parts stay, to be
   * completed again or aborted (as S3 keeps the upload on a 412).
   */
  async completeUpload(bucketName: string, key: string, uploadId: string, list: { partNumber: number; etag: string }[], condition?: WriteCondition): Promise<ObjectRecord> {
    const bucket = this.getBucket(bucketName);
    const upload = this.getUpload(bucketName, key, uploadId);
    if (list.length === 0) throw new InvalidArgument('CompleteMultipartUpload lists no parts');
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.partNumber <= list[i - 1]!.partNumber) throw new InvalidPartOrder('parts must be listed in ascending part number order');
    }
    // Cold parts with a stripe known unreadable (async, so before the flip's synchronous checks).
    if (this.stripes !== undefined) {
      for (const want of list) {
        const p = this.parts.get(partKey(uploadId, want.partNumber));
        if (p == null || partDamage(p) !== null || p.segment.kind !== 'cold') continue;
        try {
          this.coldHeaderReads += await assertColdShardsKnownKept(this.stripes, [p.segment], this.sinceCheck(p.lastModifiedMs));
        } catch (err) {
          if (err instanceof InsufficientShards) throw new UnreadablePart(uploadId, want.partNumber, err.message);
          throw err;
        }
      }
    }
    const versionId = await this.allocId();
    const unused: Segment[] = [];
    let rec!: ObjectRecord;
    const uk = uploadKey(bucket.id, key, uploadId);
    const old = await this.flip(bucket, key, () => {
      // lmdb-js does not roll back a transaction whose callback throws after
      // writing, so every check happens before the first write.
      if (!this.uploads.get(uk)) throw new NoSuchUpload(`multipart upload ${uploadId} was completed or aborted`);
      const stored = new Map<number, { key: Buffer; part: PartRecord }>();
      for (const { key: pk, value } of this.parts.getRange({ start: partKey(uploadId, 0), end: partKey(uploadId, 0xffff) })) {
        // Numbered by its index key: a damaged record (null, say) is still that part.
        const k = Buffer.from(pk);
        stored.set(k.readUInt16BE(k.length - 2), { key: k, part: value });
      }
      // A damaged part record (partDamage) must not become an object the client was told
      // exists and every GET refuses: refused (400 InvalidPart, not a 500), nothing changed.
      const segments: Segment[] = [];
      const etags: string[] = [];
      let sizeBytes = 0;
      list.forEach((want, i) => {
        const p = stored.get(want.partNumber)?.part;
        const damage = p !== undefined ? partDamage(p) : null;
        if (damage !== null) throw new DamagedPartRecord(uploadId, want.partNumber, damage);
        // Its bytes went with a replaced disk: published, the object would answer 500 to every GET.
        const lost = p !== undefined ? lostPools([p.segment])[0] : undefined;
        if (lost !== undefined) throw new LostPart(uploadId, want.partNumber, lost);
        if (!p || p.etag !== want.etag.replace(/"/g, '').toLowerCase()) throw new InvalidPart(`part ${want.partNumber} was not uploaded or its ETag differs`);
        if (i < list.length - 1 && p.sizeBytes < MIN_PART_BYTES) throw new PartTooSmall(`part ${want.partNumber} is ${p.sizeBytes} bytes; all parts but the last need at least ${MIN_PART_BYTES}`);
        segments.push(p.segment);
        etags.push(p.etag);
        sizeBytes += p.sizeBytes;
      });
      if (sizeBytes > MAX_OBJECT_BYTES) throw new TooLarge(`object would be ${sizeBytes} bytes, over ${MAX_OBJECT_BYTES}`);
      const listed = new Set(list.map((p) => p.partNumber));
      for (const [n, { key: pk, part }] of stored) {
        if (!listed.has(n) && recordDamage(part, 'segment') === null) unused.push(part.segment); // a damaged one frees nothing it names
        this.parts.remove(pk);
      }
      this.uploads.remove(uk);
      rec = {
        key,
        versionId,
        sizeBytes,
        etag: multipartEtag(etags),
        lastModifiedMs: Date.now(),
        contentHeaders: upload.contentHeaders,
        userMeta: upload.userMeta,
        segments,
        partNumbers: list.map((p) => p.partNumber),
        ...tagField(upload.tags),
        ...storageClassField(upload.storageClass),
        partsFromMs: upload.initiatedMs,
      };
      return rec;
    }, condition).catch((err: unknown) => {
      unused.length = 0;
      throw err;
    });
    this.openUploads--;
    if (old) await this.retire(old);
    await this.freeSegments(unused);
    return rec;
  }

  /**
   * Drops the upload and its parts. `ifInitiatedMs` (S3's
   * x-amz-if-match-initiated-time): only if the upload was initiated in that
   * second, judged in the transaction that drops it (PreconditionFailed: kept;
   * a damaged record matches nothing); with it, no such upload is no error
   * (false), as S3 answers 204.
   */
  async abortUpload(bucketName: string, key: string, uploadId: string, ifInitiatedMs?: number): Promise<boolean> {
    const bucket = this.getBucket(bucketName);
    const conditional = ifInitiatedMs !== undefined;
    if (!/^[0-9a-f]{32}$/.test(uploadId) && conditional) return false;
    // A damaged upload record is removed with its parts too: the client's one way to clear it.
    if (!conditional) this.getUpload(bucketName, key, uploadId, 'allow');
    const freed: Segment[] = [];
    const aborted = await this.manager.meta.transaction(() => {
      const uk = uploadKey(bucket.id, key, uploadId);
      const upload = this.uploads.get(uk);
      if (upload === undefined) {
        if (conditional) return false;
        throw new NoSuchUpload(`multipart upload ${uploadId} was completed or aborted`);
      }
      const damage = uploadDamage(upload, uk);
      // Judged before the first remove: lmdb-js keeps writes made before a throw.
      if (conditional && (damage !== null || Math.floor(upload.initiatedMs / 1000) !== Math.floor(ifInitiatedMs / 1000))) {
        throw new PreconditionFailed('x-amz-if-match-initiated-time', `multipart upload ${uploadId} was not initiated at ${new Date(ifInitiatedMs).toISOString()}`);
      }
      if (damage !== null) log.warn('object store: aborted a multipart upload whose record is damaged', { bucket: bucketName, key, uploadId, damage });
      for (const { key: pk, value } of this.parts.getRange({ start: partKey(uploadId, 0), end: partKey(uploadId, 0xffff) })) {
        // A damaged part record is dropped and frees nothing it names (as retire() for an object):
        // reading it threw here, after lmdb-js had kept the removals before it.
        if (recordDamage(value, 'segment') === null) freed.push(value.segment);
        else log.warn('object store: dropped a damaged part record without freeing what it names', { uploadId, damage: recordDamage(value, 'segment') });
        this.parts.remove(pk);
      }
      this.uploads.remove(uk);
      return true;
    });
    if (!aborted) return false;
    await this.manager.meta.durable();
    this.openUploads--;
    await this.freeSegments(freed);
    return true;
  }

  /**
   * The part records after `afterPart`, each numbered by its index key: a
   * damaged record (null, say; cold-holders.ts recordDamage) is still that
   * part and is returned as stored, for the caller to judge.
   */
  listParts(bucketName: string, key: string, uploadId: string, afterPart: number, maxParts: number): { parts: { partNumber: number; record: unknown }[]; isTruncated: boolean } {
    this.getUpload(bucketName, key, uploadId);
    const parts: { partNumber: number; record: unknown }[] = [];
    for (const { key: pk, value } of this.parts.getRange({ start: partKey(uploadId, afterPart + 1), end: partKey(uploadId, 0xffff) })) {
      if (parts.length >= maxParts) return { parts, isTruncated: true };
      parts.push({ partNumber: Buffer.from(pk).readUInt16BE(pk.length - 2), record: value });
    }
    return { parts, isTruncated: false };
  }

  /**
   * Uploads in key, then upload id order. A damaged record (ListedUpload
   * `damage`) is listed under the key and upload id its index key holds, so
   * a listing walk (markers) passes it and a client can abort it.
   */
  listUploads(bucketName: string, opts: UploadListOptions): { uploads: ListedUpload[]; isTruncated: boolean } {
    const bucket = this.getBucket(bucketName);
    const uploads: ListedUpload[] = [];
    const end = opts.prefix ? prefixEnd(objectKey(bucket.id, opts.prefix)) : prefixEnd(bucketStart(bucket.id));
    let start = objectKey(bucket.id, opts.prefix);
    if (opts.keyMarker && compareUtf8(opts.keyMarker, opts.prefix) >= 0) {
      // After the marker key: its later uploads (by id) when an id marker is given, else none of it.
      start = opts.uploadIdMarker ? uploadKey(bucket.id, opts.keyMarker, opts.uploadIdMarker + '\u0000') : prefixEnd(Buffer.concat([objectKey(bucket.id, opts.keyMarker), Buffer.from([0])]));
    }
    for (const { key: k, value } of this.uploads.getRange({ start, end })) {
      if (uploads.length >= opts.maxUploads) return { uploads, isTruncated: true };
      const indexKey = Buffer.from(k);
      const damage = uploadDamage(value, indexKey);
      if (damage === null) uploads.push(value);
      else {
        // uploadKey: the object's index key (1, bucket id, key), 0, the upload id.
        const keyOf = indexKey.subarray(5, Math.max(5, indexKey.length - 1 - UPLOAD_ID_CHARS)).toString('utf8');
        uploads.push({ uploadId: indexKey.subarray(-UPLOAD_ID_CHARS).toString('latin1'), bucket: bucketName, key: keyOf, initiatedMs: 0, contentHeaders: {}, userMeta: {}, damage });
      }
    }
    return { uploads, isTruncated: false };
  }
}
