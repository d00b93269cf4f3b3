// ColdObjectHolders.replaceMany (a pool rebuild window's stripe flips in one
// LMDB transaction) when a record it flips is damaged where its stripes are
// by the time of the flip (listed whole, then its stored bytes no longer
// decode, or it became null). Before: the damaged record read as a record
// threw a bare TypeError ("Cannot read properties of undefined (reading
// 'map')") and the whole batch failed, the good records' flips with it. Now
// the damaged record's flip is not made (false), nothing is written to it
// (its stored bytes stay as they were), the other flips land, and an error
// log line names the record. In process (real ObjectStore, stripe store,
// segment files, LMDB index): no S3 call reaches the moment between a
// rebuild's listing and its flip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RootDatabase } from 'lmdb';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import type { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB, type ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { patternBytes } from './helpers/cold.js';
import { STRIPE_BYTES, setupFlipBatch } from './helpers/cold-flip-batch.js';

/** The same stripe at other places: what a rebuild's flip installs. */
function movedRef(ref: StripeRef, by: number): StripeRef {
  return { ...ref, shards: ref.shards.map((s) => ({ ...s, offsetBytes: s.offsetBytes + by })) };
}

/** A handle on `db` that reads and writes raw stored bytes, in the open data directory's LMDB environment. */
function rawDB(meta: MetaStore, db: string) {
  return (meta as unknown as { root: RootDatabase }).root.openDB<Buffer, Buffer>({ name: db, encoding: 'binary' });
}

/** Runs `fn` with stderr captured (the logger writes there); returns what was written. */
async function stderrOf(fn: () => Promise<unknown>): Promise<string> {
  const write = process.stderr.write.bind(process.stderr);
  let out = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = write;
  }
  return out;
}

for (const damage of ['torn', 'null'] as const) {
  test(`replaceMany: a record ${damage === 'torn' ? 'whose stored bytes no longer decode' : 'damaged into null'} since the listing is not flipped (nothing written to it) and named; the batch's other flips land`, async (t) => {
    const { holders, store, put } = await setupFlipBatch(t);
    const meta = (holders as unknown as { meta: MetaStore }).meta;
    await put('good', patternBytes(STRIPE_BYTES, 1));
    await put('victim', patternBytes(STRIPE_BYTES, 2));
    const listed = [...holders.list()];
    const refOf = (name: string) => (store.headObject('cold', name).segments[0] as ColdSegment).stripes[0]!;
    const keyOf = (ref: StripeRef) => listed.find(([, r]) => r.ownerId === ref.ownerId && r.chunkIndex === ref.chunkIndex)![0];
    const good = refOf('good');
    const victim = refOf('victim');

    // The victim's record damaged after the listing.
    const raw = rawDB(meta, OBJECTS_DB);
    const victimIndexKey = Buffer.from(keyOf(victim).split('/')[1]!, 'hex');
    const stored = Buffer.from(raw.getBinary(victimIndexKey)!);
    const damaged = damage === 'torn' ? stored.subarray(0, stored.length >> 1) : Buffer.from([0xc0]); // msgpack nil
    await raw.put(victimIndexKey, damaged);

    const flips = [
      { key: keyOf(victim), expected: victim, next: movedRef(victim, 1_000_000) },
      { key: keyOf(good), expected: good, next: movedRef(good, 1_000_000) },
    ];
    let answers: boolean[] | undefined;
    const logged = await stderrOf(async () => {
      answers = await holders.replaceMany(flips);
    });
    assert.deepEqual(answers, [false, true], 'the damaged record not flipped, the good one flipped');
    assert.deepEqual(refOf('good'), flips[1]!.next);
    assert.ok(Buffer.from(raw.getBinary(victimIndexKey)!).equals(damaged), 'nothing written to the damaged record');
    assert.match(logged, /stripe flips not made: the S3 index record holding them is damaged[^\n]*objects cold\/victim: (the stored bytes do not decode|the record is null)/);
  });
}
