// Hot S3 object data on one pool, found in the object index without the S3
// front end (`couchestor pools replace` runs with the daemon stopped too):
// which objects and multipart parts a dead hot pool's disk held, and marking
// their segments lost when the operator discards them.
import type { MetaStore } from '../meta/store.js';
import { OBJECTS_DB, PARTS_DB } from './cold-segments.js';
import { openIndexDB, recordDamage } from './cold-holders.js';
import type { HotSegment } from './hot-segments.js';

const ALL_KEYS: Readonly<{ start: Buffer }> = Object.freeze({ start: Buffer.from([1]) });

interface SegmentsHolder {
  key?: string;
  segments?: { kind: string; pool?: string }[];
  segment?: { kind: string; pool?: string };
}

function onPool(seg: { kind: string; pool?: string; lostWithPool?: string } | undefined, pool: string): boolean {
  return seg !== undefined && seg.kind === 'hot' && seg.pool === pool && (seg as HotSegment).lostWithPool === undefined;
}

/** Bucket name by id (the index key's bytes 1-4). */
function bucketNames(meta: MetaStore): Map<number, string> {
  const names = new Map<number, string>();
  for (const { value } of meta.openDB<{ name: string; id: number }, string>('s3-buckets').getRange()) names.set(value.id, value.name);
  return names;
}

/**
 * The objects ("bucket/key") and multipart uploads' parts whose data is, in
 * part or whole, on hot pool `pool` and not yet marked lost. A damaged record
 * is skipped (fsck names it).
 */
export function hotObjectsOnPool(meta: MetaStore, pool: string): { objects: string[]; parts: number } {
  const buckets = bucketNames(meta);
  const objects: string[] = [];
  for (const { key, value } of openIndexDB<SegmentsHolder>(meta, OBJECTS_DB).getRange(ALL_KEYS)) {
    if (recordDamage(value, 'segments') !== null) continue;
    if (!value.segments!.some((s) => onPool(s, pool))) continue;
    const k = Buffer.from(key);
    objects.push(`${buckets.get(k.readUInt32BE(1)) ?? `bucket#${k.readUInt32BE(1)}`}/${value.key ?? k.subarray(5).toString('utf8')}`);
  }
  let parts = 0;
  for (const { value } of openIndexDB<SegmentsHolder>(meta, PARTS_DB).getRange(ALL_KEYS)) {
    if (recordDamage(value, 'segment') === null && onPool(value.segment, pool)) parts++;
  }
  return { objects, parts };
}

/**
 * Marks every hot segment on `pool` lost with its disk (HotSegment.lostWithPool):
 * a GET of its object answers an error saying so, never the new disk's bytes
 * or zeros; a DELETE removes it. Runs inside the caller's index transaction
 * (puts are synchronous there).
 */
export function markHotObjectsLost(meta: MetaStore, pool: string): number {
  let marked = 0;
  const mark = (s: { kind: string; pool?: string }) => (onPool(s, pool) ? (marked++, { ...s, lostWithPool: pool }) : s);
  const objects = openIndexDB<SegmentsHolder>(meta, OBJECTS_DB);
  for (const { key, value } of objects.getRange(ALL_KEYS)) {
    if (recordDamage(value, 'segments') !== null || !value.segments!.some((s) => onPool(s, pool))) continue;
    objects.put(Buffer.from(key), { ...value, segments: value.segments!.map(mark) });
  }
  const parts = openIndexDB<SegmentsHolder>(meta, PARTS_DB);
  for (const { key, value } of parts.getRange(ALL_KEYS)) {
    if (recordDamage(value, 'segment') !== null || !onPool(value.segment, pool)) continue;
    parts.put(Buffer.from(key), { ...value, segment: mark(value.segment!) });
  }
  return marked;
}
