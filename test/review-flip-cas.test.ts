// ColdObjectHolders.replaceMany (a pool rebuild window's flips in one LMDB
// transaction): each stripe's compare-and-swap against the record as the
// earlier flips of the same batch left it, failed compares isolated, answers
// and final record identical to one replace() per flip, a part's key
// following its segment into the completed object, and current() answering
// what is stored after the batch (its cached record not served stale).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HolderFlip } from '../src/dataplane/ec/reconstruction.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { patternBytes } from './helpers/cold.js';
import { STRIPE_BYTES, setupFlipBatch } from './helpers/cold-flip-batch.js';

const STRIPES = 4;

async function* bodyOf(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}

/** Another reference to the same stripe (same ownerId/chunk) at other places: what a rebuild's flip installs. */
function movedRef(ref: StripeRef, by: number): StripeRef {
  return { ...ref, shards: ref.shards.map((s) => ({ ...s, offsetBytes: s.offsetBytes + by })) };
}

function stripesOf(segments: readonly { kind: string }[]): StripeRef[] {
  return segments.filter((s) => s.kind === 'cold').flatMap((s) => (s as ColdSegment).stripes);
}

/** The flip sequence on one object's stripes r[] and keys k[] (a stale compare, a wrong generation, a flip over a flip). */
function sequence(k: string[], r: StripeRef[]): { flips: HolderFlip[]; answers: boolean[]; final: StripeRef[] } {
  const n0 = movedRef(r[0]!, 1_000_000);
  const m0 = movedRef(r[0]!, 2_000_000);
  const n1 = movedRef(r[1]!, 1_000_000);
  const n2 = movedRef(r[2]!, 1_000_000);
  const flips: HolderFlip[] = [
    { key: k[0]!, expected: r[0]!, next: n0 },
    { key: k[1]!, expected: { ...r[1]!, generation: r[1]!.generation + 1 }, next: n1 }, // not what is stored
    { key: k[2]!, expected: r[2]!, next: n2 },
    { key: k[0]!, expected: r[0]!, next: m0 }, // stale: r0 was flipped by the first flip of this batch
    { key: k[0]!, expected: n0, next: m0 }, // against the record as the first flip left it
    { key: k[1]!, expected: r[1]!, next: n1 }, // after the failed compare on the same stripe
  ];
  return { flips, answers: [true, false, true, false, true, true], final: [m0, n1, n2, r[3]!] };
}

test('replaceMany: several stripes of one object compared against the batch-updated record, a failed compare isolated, same answers and record as one replace() per flip, one record write', async (t) => {
  const { holders, store, put } = await setupFlipBatch(t);
  await put('a', patternBytes(STRIPES * STRIPE_BYTES, 1));
  await put('b', patternBytes(STRIPES * STRIPE_BYTES, 2));
  await put('gone', patternBytes(STRIPE_BYTES, 3));
  const keysOf = (name: string) => {
    const refs = stripesOf(store.headObject('cold', name).segments);
    const byRef = new Map([...holders.list()].map(([k, ref]) => [`${ref.ownerId}/${ref.chunkIndex}`, k]));
    return { refs, keys: refs.map((ref) => byRef.get(`${ref.ownerId}/${ref.chunkIndex}`)!) };
  };
  const a = keysOf('a');
  const b = keysOf('b');
  const gone = keysOf('gone');
  assert.equal(a.refs.length, STRIPES);
  assert.equal(new Set(a.keys).size, STRIPES);
  assert.ok(a.keys.every((k) => k.startsWith('o/')));
  await store.deleteObject('cold', 'gone');

  // current() reads (and keeps) a's record before the batch.
  assert.deepEqual(holders.current(a.keys[0]!), a.refs[0]);

  const seqA = sequence(a.keys, a.refs);
  const goneFlip: HolderFlip = { key: gone.keys[0]!, expected: gone.refs[0]!, next: movedRef(gone.refs[0]!, 1_000_000) };
  const writesBefore = holders.recordWrites;
  const answers = await holders.replaceMany([goneFlip, ...seqA.flips, goneFlip]);
  assert.deepEqual(answers, [false, ...seqA.answers, false]);
  assert.equal(holders.recordWrites - writesBefore, 1, 'a written once; the deleted object not re-created');
  assert.throws(() => store.headObject('cold', 'gone'));
  assert.deepEqual(stripesOf(store.headObject('cold', 'a').segments), seqA.final);
  // current() answers the record as stored now, not the one it kept.
  seqA.final.forEach((ref, i) => assert.deepEqual(holders.current(a.keys[i]!), ref));

  // The same flips one replace() at a time: the same answers and the same record.
  const seqB = sequence(b.keys, b.refs);
  const one: boolean[] = [];
  for (const f of seqB.flips) one.push(await holders.replace(f.key, f.expected, f.next));
  assert.deepEqual(one, seqB.answers);
  assert.deepEqual(stripesOf(store.headObject('cold', 'b').segments), seqB.final);

  // A reference current() hands out cannot be changed under the cache by its caller.
  const ref = holders.current(a.keys[3]!)!;
  assert.throws(() => ((ref.shards[0] as { pool: string }).pool = 'cold-9'), TypeError);
  assert.throws(() => ref.shards.push(ref.shards[0]!), TypeError);
  assert.deepEqual(holders.current(a.keys[3]!), a.refs[3]);
});

test("replaceMany: a part's keys follow its segment into the completed object, mixed with the object's own keys in one batch, each compared against the batch-updated record", async (t) => {
  const { holders, store } = await setupFlipBatch(t);
  await store.createBucket('mp', 'cold');
  const upload = await store.createUpload('mp', 'obj', {}, {});
  const bytes = patternBytes(STRIPES * STRIPE_BYTES, 7);
  const part = await store.uploadPart('mp', 'obj', upload.uploadId, 1, bodyOf(bytes), { expectedBytes: bytes.length });
  const refs = stripesOf([part.segment]);
  assert.equal(refs.length, STRIPES);
  const partKeys = new Map([...holders.list()].filter(([k]) => k.startsWith('p/')).map(([k, ref]) => [ref.chunkIndex, k]));
  assert.equal(partKeys.size, STRIPES);
  assert.deepEqual(holders.current(partKeys.get(0)!), refs[0]);

  await store.completeUpload('mp', 'obj', upload.uploadId, [{ partNumber: 1, etag: part.etag }]);
  const objectKeys = new Map([...holders.list()].filter(([k]) => k.startsWith('o/')).map(([k, ref]) => [`${ref.ownerId}/${ref.chunkIndex}`, k]));
  const objKey1 = objectKeys.get(`${refs[1]!.ownerId}/${refs[1]!.chunkIndex}`)!;
  assert.ok(objKey1 !== undefined);
  // The part's key still finds its stripe, now in the object.
  assert.deepEqual(holders.current(partKeys.get(0)!), refs[0]);

  const n0 = movedRef(refs[0]!, 1_000_000);
  const n1 = movedRef(refs[1]!, 1_000_000);
  const m1 = movedRef(refs[1]!, 2_000_000);
  const n2 = movedRef(refs[2]!, 1_000_000);
  const writesBefore = holders.recordWrites;
  const answers = await holders.replaceMany([
    { key: partKeys.get(0)!, expected: refs[0]!, next: n0 },
    { key: objKey1, expected: refs[1]!, next: n1 }, // the object's own key
    { key: partKeys.get(1)!, expected: n1, next: m1 }, // the part's key, against the object as the flip before left it
    { key: partKeys.get(2)!, expected: { ...refs[2]!, generation: refs[2]!.generation + 1 }, next: n2 }, // not stored
    { key: partKeys.get(3)!, expected: refs[3]!, next: refs[3]! }, // a flip to itself: compared, stored unchanged
  ]);
  assert.deepEqual(answers, [true, true, true, false, true]);
  assert.equal(holders.recordWrites - writesBefore, 1, 'the completed object written once');
  assert.deepEqual(stripesOf(store.headObject('mp', 'obj').segments), [n0, m1, refs[2], refs[3]]);
  assert.deepEqual(holders.current(partKeys.get(1)!), m1);
  assert.deepEqual(holders.current(objKey1), m1);
});
