// Cold S3 object stripes as a stripe holder source for the Reconstructor
// (pool rebuild, scrub, reconstruction queue): lists the stripes of cold
// objects and multipart parts, and flips one stripe reference of a record
// with a compare-and-swap inside one LMDB transaction (moveColdStripes, the
// mechanism segment compaction uses).
import type { Database } from 'lmdb';
import type { MetaStore } from '../meta/store.js';
import { sameStripeAt, type StripeHolderSource } from '../ec/reconstruction.js';
import type { HolderStripeContext, StripeRef, StripeStore } from '../ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, moveColdStripes, type ColdSegment } from './cold-segments.js';

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
 * stripe, "p/<part index key hex>/<ownerId>/<chunk>" for a part's. The
 * ownerId names the segment (ids are never reused), the chunk its stripe.
 */
export class ColdObjectHolders implements StripeHolderSource {
  readonly prefix = COLD_OBJECT_SOURCE;
  private readonly objects: Database<RecordWithSegments, Buffer>;
  private readonly parts: Database<PartWithSegment, Buffer>;

  constructor(
    private readonly meta: MetaStore,
    private readonly stripes: Pick<StripeStore, 'releaseReplaced'>,
  ) {
    this.objects = meta.openDB<RecordWithSegments, Buffer>(OBJECTS_DB);
    this.parts = meta.openDB<PartWithSegment, Buffer>(PARTS_DB);
  }

  *list(): Iterable<[string, StripeRef]> {
    for (const { key, value } of this.objects.getRange(ALL_OBJECT_KEYS)) yield* refsOf('o', Buffer.from(key), value.segments);
    for (const { key, value } of this.parts.getRange(ALL_OBJECT_KEYS)) yield* refsOf('p', Buffer.from(key), [value.segment]);
  }

  count(): number {
    let n = 0;
    for (const _ of this.list()) n++;
    return n;
  }

  current(key: string): StripeRef | undefined {
    const h = parseKey(key);
    if (h === null) return undefined;
    const segments = h.kind === 'o' ? this.objects.get(h.indexKey)?.segments : ((s) => (s ? [s] : undefined))(this.parts.get(h.indexKey)?.segment);
    if (segments === undefined) return undefined;
    for (const seg of segments) {
      if (seg.kind !== 'cold') continue;
      const ref = (seg as ColdSegment).stripes[h.chunkIndex];
      if (ref !== undefined && ref.ownerId === h.ownerId) return ref;
    }
    return undefined;
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
            if (h.kind === 'o') {
              const rec = this.objects.get(h.indexKey);
              const segments = rec ? moveColdStripes(rec.segments, move) : undefined;
              if (!rec || !segments) return false;
              void this.objects.put(h.indexKey, { ...rec, segments });
              return true;
            }
            const rec = this.parts.get(h.indexKey);
            const segments = rec ? moveColdStripes([rec.segment], move) : undefined;
            if (!rec || !segments) return false;
            void this.parts.put(h.indexKey, { ...rec, segment: segments[0]! });
            return true;
          });
    if (flipped) await this.meta.durable();
    this.stripes.releaseReplaced(expected, next, flipped);
    return flipped;
  }
}

function* refsOf(kind: 'o' | 'p', indexKey: Buffer, segments: readonly { kind: string }[]): Iterable<[string, StripeRef]> {
  const hex = indexKey.toString('hex');
  for (const seg of segments) {
    if (seg.kind !== 'cold') continue;
    for (const ref of (seg as ColdSegment).stripes) yield [kind === 'o' ? objectStripeContext(hex, ref).key : `p/${hex}/${ref.ownerId}/${ref.chunkIndex}`, ref];
  }
}

function parseKey(key: string): { kind: 'o' | 'p'; indexKey: Buffer; ownerId: string; chunkIndex: number } | null {
  const [kind, hex, ownerId, chunk] = key.split('/');
  if ((kind !== 'o' && kind !== 'p') || hex === undefined || ownerId === undefined || chunk === undefined) return null;
  return { kind, indexKey: Buffer.from(hex, 'hex'), ownerId, chunkIndex: Number(chunk) };
}
