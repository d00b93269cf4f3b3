// `couchestor fsck --quarantine-damaged`: moves damaged S3 index records
// (cold-holders.ts recordDamage, what fsck reports) out of the live object
// and part databases into the quarantine database, raw bytes kept. Offline
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
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB } from './cold-segments.js';
import { describeIndexKey, recordDamage } from './cold-holders.js';

/**
 * The quarantine database: "<db>/<SHA-256 of the index key, hex>/<quarantinedMs>"
 * -> QuarantinedRecord (the whole index key is in the record). Not the key
 * itself in hex: an S3 key past ~980 bytes made that longer than LMDB's
 * 1978-byte key limit, the put threw and the run died on that record.
 */
export const QUARANTINE_DB = 's3-quarantine';

export interface QuarantinedRecord {
  /** The live database the record was in (s3-objects or s3-parts). */
  db: typeof OBJECTS_DB | typeof PARTS_DB;
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

const SOURCES = [
  { db: OBJECTS_DB, kind: 'objects', field: 'segments' },
  { db: PARTS_DB, kind: 'parts', field: 'segment' },
] as const;

/** Damaged keys collected by one range read before they are moved (bounds the memory of a run). */
const KEYS_PER_SCAN = 1024;

/**
 * Moves every damaged object and part record into the quarantine, one LMDB
 * transaction per record (a record is in exactly one of the two databases at
 * every commit; a crash part-way leaves the rest live, and a second run moves
 * them), each durable before `moved` is told of it. Returns how many it moved.
 * The caller holds the data directory offline: nothing else writes meanwhile.
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
        if (readStoredRecord(live, k, src.field).problem !== null) damaged.push(k);
      }
      for (const key of damaged) {
        const q = await meta.transaction(() => moveOne(meta, live, quarantine, src, key));
        if (q === null) continue;
        await meta.durable();
        n++;
        moved(q);
      }
      if (next === null) break;
      start = next;
    }
  }
  return n;
}

function moveOne(meta: MetaStore, live: Database<unknown, Buffer>, quarantine: Database<QuarantinedRecord, string>, src: (typeof SOURCES)[number], key: Buffer): QuarantinedRecord | null {
  // Read again inside the transaction: moved only if still there and still damaged.
  const raw = live.getBinary(key);
  if (raw === undefined) return null;
  const problem = readStoredRecord(live, key, src.field).problem;
  if (problem === null) return null;
  const quarantinedMs = Date.now();
  const q: QuarantinedRecord = { db: src.db, key, record: describeIndexKey(meta, src.kind, key), problem, quarantinedMs, raw: Buffer.from(raw) };
  void quarantine.put(`${src.db}/${createHash('sha256').update(key).digest('hex')}/${quarantinedMs}`, q);
  void live.remove(key);
  return q;
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
