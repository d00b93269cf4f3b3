// Cold S3 object stripes as a stripe holder source for the Reconstructor
// (pool rebuild, scrub, reconstruction queue): lists the stripes of cold
// objects and multipart parts, and flips one stripe reference of a record
// with a compare-and-swap inside one LMDB transaction (moveColdStripes, the
// mechanism segment compaction uses).
import type { Database } from 'lmdb';
import type { MetaStore } from '../meta/store.js';
import { sameStripeAt, type StripeHolderSource } from '../ec/reconstruction.js';
import type { HolderStripeContext, StripeRef, StripeStore } from '../ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, UPLOADS_DB, moveColdStripes, type ColdSegment } from './cold-segments.js';

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
  ) {
    this.objects = meta.openDB<RecordWithSegments, Buffer>(OBJECTS_DB);
    this.parts = meta.openDB<PartWithSegment, Buffer>(PARTS_DB);
    this.uploads = meta.openDB<{ uploadId: string }, Buffer>(UPLOADS_DB);
  }

  *list(): Iterable<[string, StripeRef]> {
    for (const { key, value } of this.objects.getRange(ALL_OBJECT_KEYS)) yield* refsOf('o', Buffer.from(key), value.segments);
    // Upload id -> the object index key its upload completes into (bounded by the open uploads).
    const objectOf = new Map<string, string>();
    for (const { key, value } of this.uploads.getRange(ALL_OBJECT_KEYS)) {
      // An upload's key is the object's index key, a 0 byte, then the upload id (objects/store.ts uploadKey).
      const k = Buffer.from(key);
      objectOf.set(value.uploadId, k.subarray(0, k.length - 1 - Buffer.byteLength(value.uploadId, 'latin1')).toString('hex'));
    }
    for (const { key, value } of this.parts.getRange(ALL_OBJECT_KEYS)) {
      const k = Buffer.from(key);
      // A part's key is 1, the upload id, then the part number as 2 bytes (objects/store.ts partKey).
      yield* refsOf('p', k, [value.segment], objectOf.get(k.subarray(1, k.length - 2).toString('latin1')));
    }
  }

  count(): number {
    let n = 0;
    for (const _ of this.list()) n++;
    return n;
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
    if (h.kind === 'o') return find(this.objects.get(h.indexKey)?.segments);
    const part = this.parts.get(h.indexKey)?.segment;
    // Completed: the part's segment is now its object's.
    return find(part ? [part] : undefined) ?? (h.objectKey ? find(this.objects.get(h.objectKey)?.segments) : undefined);
  }

  /**
   * Compare-and-swap in one transaction: the record at the key is re-read
   * there and `expected` replaced by `next` only if the record still holds
   * it at the same places (overwritten, deleted, completed into an object
   * or moved by compaction meanwhile: not flipped). Durable before it
   * resolves; then the replaced records (or, not flipped, the new ones) are
   * marked dead for compaction.
   */
  async replace(key: string, expected: StripeRef, next: StripeRef): Promise<boolean> {
    const h = parseKey(key);
    const move = (r: StripeRef): StripeRef | null => (sameStripeAt(r, expected) ? next : null);
    // Issued in this tick: the caller's write session (landRebuild) has just ended.
    const flipped =
      h === null
        ? false
        : await this.meta.transaction(() => {
            const inObject = (objectKey: Buffer): boolean => {
              const rec = this.objects.get(objectKey);
              const segments = rec ? moveColdStripes(rec.segments, move) : undefined;
              if (!rec || !segments) return false;
              void this.objects.put(objectKey, { ...rec, segments });
              return true;
            };
            if (h.kind === 'o') return inObject(h.indexKey);
            const rec = this.parts.get(h.indexKey);
            const segments = rec ? moveColdStripes([rec.segment], move) : undefined;
            if (rec && segments) {
              void this.parts.put(h.indexKey, { ...rec, segment: segments[0]! });
              return true;
            }
            // The upload completed since the part was listed: its segment (ownerIds are never
            // reused) is the object's now, and `move` still compares the whole reference.
            return h.objectKey !== undefined && inObject(h.objectKey);
          });
    if (flipped) await this.meta.durable();
    this.stripes.releaseReplaced(expected, next, flipped);
    return flipped;
  }
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
