// `couchestor fsck --quarantine-damaged`: moves damaged S3 index records
// (cold-holders.ts recordDamage, uploadDamage here: what fsck reports) out of
// the live object, part and upload databases into the quarantine database,
// raw bytes kept. Offline
// only (the CLI holds the data directory's lock, no daemon runs).
//
// While a damaged record is live, compaction refuses every pass node-wide
// (it cannot tell which cold stripes the record holds) and the start-up
// sweep of unreferenced hot files is off (it cannot tell which file the
// record names). Quarantined, the record is no longer in the index: what it
// named becomes unreferenced, so the next start's recount counts its cold
// stripes dead (compaction reclaims them) and the start-up sweep deletes its
// hot file. That data was already unreadable (GET answered 500); the raw
// record is kept so an operator can still salvage by hand what it names
// before those run.
import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import type { MetaStore } from '../meta/store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, UPLOADS_DB } from './cold-segments.js';
import { UndecodableRecord, describeIndexKey, recordDamage } from './cold-holders.js';

/**
 * The quarantine database: "<db>/<SHA-256 of the index key, hex>/<quarantinedMs>"
 * -> QuarantinedRecord (the whole index key is in the record). Not the key
 * itself in hex: an S3 key past ~980 bytes made that longer than LMDB's
 * 1978-byte key limit, the put threw and the run died on that record.
 */
export const QUARANTINE_DB = 's3-quarantine';

export interface QuarantinedRecord {
  /** The live database the record was in (s3-objects, s3-parts or s3-uploads). */
  db: typeof OBJECTS_DB | typeof PARTS_DB | typeof UPLOADS_DB;
  /** Its index key there. */
  key: Buffer;
  /** "bucket/key" (a part: its upload and number), as fsck named it. */
  record: string;
  /** What recordDamage found wrong. */
  problem: string;
  quarantinedMs: number;
  /** The stored bytes, exactly as they were (msgpack, as lmdb-js wrote them). */
  raw: Buffer;
}

/** A live database the quarantine scans: what is wrong with the record at a key (null: nothing). */
interface Source {
  db: QuarantinedRecord['db'];
  damage(live: Database<unknown, Buffer>, key: Buffer): string | null;
}

const SOURCES: readonly Source[] = [
  // Uploads first: a damaged one takes its parts with it (moveOne).
  { db: UPLOADS_DB, damage: (live, key) => readUploadDamage(live, key) },
  { db: OBJECTS_DB, damage: (live, key) => readStoredRecord(live, key, 'segments').problem },
  { db: PARTS_DB, damage: (live, key) => readStoredRecord(live, key, 'segment').problem },
];

/** Damaged keys collected by one range read before they are moved (bounds the memory of a run). */
const KEYS_PER_SCAN = 1024;

/**
 * Moves every damaged upload, object and part record into the quarantine,
 * one LMDB transaction per record (a record is in exactly one of the two
 * databases at every commit; a crash part-way leaves the rest live, and a
 * second run moves them), each durable before `moved` is told of it. A
 * damaged upload record (uploadDamage) takes every part record of its upload
 * with it in its transaction: no S3 call reaches a part whose upload record
 * is gone, and left live such a part would hold its data for ever. Returns
 * how many records it moved. The caller holds the data directory offline:
 * nothing else writes meanwhile.
 */
export async function quarantineDamagedRecords(meta: MetaStore, moved: (q: QuarantinedRecord) => void = () => undefined): Promise<number> {
  const quarantine = meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB);
  let n = 0;
  for (const src of SOURCES) {
    const live = meta.openDB<unknown, Buffer>(src.db);
    // Keys first (up to KEYS_PER_SCAN), then one transaction each: no write under an open range read.
    let start = ALL_OBJECT_KEYS.start;
    for (;;) {
      const damaged: Buffer[] = [];
      let next: Buffer | null = null;
      // Keys, each record decoded on its own (readStoredRecord): a range read of the values threw
      // at a record whose bytes do not decode, and the run died before moving anything.
      for (const key of live.getKeys({ start })) {
        const k = Buffer.from(key);
        if (damaged.length === KEYS_PER_SCAN) {
          next = k;
          break;
        }
        if (src.damage(live, k) !== null) damaged.push(k);
      }
      for (const key of damaged) {
        const qs = await meta.transaction(() => moveOne(meta, live, quarantine, src, key));
        if (qs.length === 0) continue;
        await meta.durable();
        n += qs.length;
        for (const q of qs) moved(q);
      }
      if (next === null) break;
      start = next;
    }
  }
  return n;
}

function moveOne(meta: MetaStore, live: Database<unknown, Buffer>, quarantine: Database<QuarantinedRecord, string>, src: Source, key: Buffer): QuarantinedRecord[] {
  // Read again inside the transaction: moved only if still there and still damaged.
  const raw = live.getBinary(key);
  if (raw === undefined) return [];
  const problem = src.damage(live, key);
  if (problem === null) return [];
  const quarantinedMs = Date.now();
  const put = (db: QuarantinedRecord['db'], from: Database<unknown, Buffer>, k: Buffer, bytes: Buffer, why: string): QuarantinedRecord => {
    const q: QuarantinedRecord = { db, key: k, record: describeRecord(meta, db, k), problem: why, quarantinedMs, raw: Buffer.from(bytes) };
    void quarantine.put(`${db}/${createHash('sha256').update(k).digest('hex')}/${quarantinedMs}`, q);
    void from.remove(k);
    return q;
  };
  const out = [put(src.db, live, key, raw, problem)];
  if (src.db === UPLOADS_DB) {
    // Its parts (their keys: 1, the upload id, the part number; the id from the upload's key).
    const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
    const prefix = Buffer.concat([Buffer.from([1]), Buffer.from(uploadIdOfKey(key), 'latin1')]);
    const keys = [...parts.getKeys({ start: Buffer.concat([prefix, Buffer.from([0, 0])]), end: Buffer.concat([prefix, Buffer.from([0xff, 0xff])]) })].map((k) => Buffer.from(k));
    for (const k of keys) out.push(put(PARTS_DB, parts, k, parts.getBinary(k)!, `its upload's record is damaged (${problem}): no S3 call reaches the part`));
  }
  return out;
}

/** An upload id's length (objects/store.ts createUpload: 16 random bytes in hex); an upload's key ends with it. */
const UPLOAD_ID_CHARS = 32;

/** The upload id an upload record's index key ends with (objects/store.ts uploadKey: the object's key, 0, the id). */
function uploadIdOfKey(key: Buffer): string {
  return key.length > UPLOAD_ID_CHARS ? key.subarray(key.length - UPLOAD_ID_CHARS).toString('latin1') : '';
}

/**
 * What is wrong with a stored multipart upload record at `key`, or null:
 * an object whose uploadId is the one its key ends with and whose key is a
 * string (what ListMultipartUploads, AbortMultipartUpload and the holders'
 * part-to-object map read). One damaged into null answered every
 * ListMultipartUploads of its bucket 500 and AbortMultipartUpload
 * NoSuchUpload, its parts held for ever; fsck said nothing.
 */
export function uploadDamage(value: unknown, key: Buffer): string | null {
  if (value instanceof UndecodableRecord) return value.problem;
  if (typeof value !== 'object' || value === null) return `the record is ${value === null ? 'null' : typeof value}, not an object`;
  const v = value as { uploadId?: unknown; key?: unknown };
  const id = uploadIdOfKey(key);
  if (v.uploadId !== id) return `uploadId is ${describeValue(v.uploadId)}, not its index key's ${JSON.stringify(id)}`;
  if (typeof v.key !== 'string') return `key is ${describeValue(v.key)}`;
  return null;
}

/** uploadDamage of the upload record stored at `key`, or that its bytes do not decode (as readStoredRecord). */
export function readUploadDamage(db: Database<unknown, Buffer>, key: Buffer): string | null {
  const raw = db.getBinary(key);
  if (raw === undefined) return null;
  const decoder = (db as unknown as { decoder?: { decode(bytes: Buffer): unknown } }).decoder;
  let value: unknown;
  try {
    value = decoder !== undefined ? decoder.decode(raw) : db.get(key);
  } catch (err) {
    return `the stored bytes do not decode (${(err as Error).message})`;
  }
  return uploadDamage(value, key);
}

/** "bucket/key" of an object, "upload ID part N" of a part, "bucket/key upload ID" of an upload (from the index key). */
export function describeRecord(meta: MetaStore, db: QuarantinedRecord['db'], key: Buffer): string {
  if (db !== UPLOADS_DB) return describeIndexKey(meta, db === OBJECTS_DB ? 'objects' : 'parts', key);
  const id = uploadIdOfKey(key);
  return `${describeIndexKey(meta, 'objects', key.subarray(0, Math.max(0, key.length - UPLOAD_ID_CHARS - 1)))} upload ${JSON.stringify(id)}`;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'missing';
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

/**
 * The object or part record stored at `key` and what is wrong with it
 * (recordDamage), or, when its stored bytes do not decode at all (msgpack
 * cut short or garbled: a torn or corrupted LMDB value), that. A range read
 * of the values throws at such a record, so fsck and the quarantine read
 * keys and decode each record here on its own. Only the decode is caught:
 * an error reading the bytes from LMDB is no finding about the record and
 * is thrown (a good record must never be quarantined on it).
 */
export function readStoredRecord<V>(db: Database<V, Buffer>, key: Buffer, field: 'segments' | 'segment'): { value: V | undefined; problem: string | null } {
  const raw = db.getBinary(key);
  if (raw === undefined) return { value: undefined, problem: recordDamage(undefined, field) };
  // lmdb-js 3.x internal, what its get() decodes with (pinned by test/review-flip-decoder).
  const decoder = (db as unknown as { decoder?: { decode(bytes: Buffer): V } }).decoder;
  let value: V | undefined;
  try {
    value = decoder !== undefined ? decoder.decode(raw) : db.get(key);
  } catch (err) {
    return { value: undefined, problem: `the stored bytes do not decode (${(err as Error).message})` };
  }
  return { value, problem: recordDamage(value, field) };
}

/** Every quarantined record, in key order (database, index key's hash, time). */
export function* listQuarantine(meta: MetaStore): Iterable<QuarantinedRecord> {
  for (const { value } of meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB).getRange()) yield value;
}

/** The number of quarantined records. */
export function quarantineCount(meta: MetaStore): number {
  return meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB).getKeysCount();
}
