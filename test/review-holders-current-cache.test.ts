// Review of 0f63dd0: ColdObjectHolders.current() compares lmdb-js's reusable
// read buffer (getBinaryFast) with the record bytes it last decoded. Pins
// that no caller gets a reference decoded from another record or generation:
// records larger than lmdb-js's shared buffer, one byte changed at the same
// length, another key with the very same bytes, reads of other keys and
// databases in between, inside a write transaction, after a flip, a delete and
// a completed upload. Real LMDB index; the stripe store is not needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB, PARTS_DB } from '../src/dataplane/objects/cold-segments.js';

function stripe(owner: string, chunkIndex: number, offsetBytes: number): StripeRef {
  return {
    ownerId: owner,
    chunkIndex,
    generation: 1,
    dataShards: 4,
    parityShards: 2,
    stripeSizeBytes: 65536,
    dataLengthBytes: 65536,
    shards: Array.from({ length: 6 }, (_, i) => ({ pool: `cold-${i}`, segment: 1, offsetBytes, lengthBytes: 16448 })),
  } as StripeRef;
}

function objectRec(owner: string, stripes: number, offsetOf: (c: number) => number) {
  return { sizeBytes: stripes * 65536, segments: [{ kind: 'cold', fileId: 1, lengthBytes: stripes * 65536, chunkBytes: 65536, stripes: Array.from({ length: stripes }, (_, c) => stripe(owner, c, offsetOf(c))) }] };
}

function objectKey(name: string): Buffer {
  return Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.from(name)]);
}

test('current() never answers from a record it decoded before: same-length changes, twin records, interleaved reads, large records, write transactions, flips, deletes and completed uploads', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-holders-cache-'));
  const meta = MetaStore.open(dir);
  t.after(async () => {
    try {
      await meta.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  const released: boolean[] = [];
  const holders = new ColdObjectHolders(meta, { releaseReplaced: (_o, _n, flipped) => void released.push(flipped) });
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const parts = meta.openDB<unknown, Buffer>(PARTS_DB);
  const owner = 'aa'.repeat(16);
  const offsetAt = (key: string) => holders.current(key)?.shards[0]!.offsetBytes;

  // Large records (4096 stripes: far past lmdb-js's 32 KiB reusable buffer), and a small one.
  for (const stripes of [4096, 3]) {
    const a = objectKey(`a${stripes}`);
    const b = objectKey(`b${stripes}`);
    const hexA = a.toString('hex');
    const hexB = b.toString('hex');
    const keyA = (c: number) => `o/${hexA}/${owner}/${c}`;
    const keyB = (c: number) => `o/${hexB}/${owner}/${c}`;
    const last = stripes - 1;
    await objects.put(a, objectRec(owner, stripes, (c) => 1000 + c));
    // b: the very same bytes under another key.
    await objects.put(b, objectRec(owner, stripes, (c) => 1000 + c));
    assert.ok(Buffer.from(objects.getBinary(a)!).equals(objects.getBinary(b)!), 'twin records');
    assert.equal(offsetAt(keyA(last)), 1000 + last);
    assert.equal(offsetAt(keyB(last)), 1000 + last);
    assert.ok(objects.getBinary(a)!.length > (stripes > 100 ? 0x8000 : 0), 'the large record is past the reusable buffer');

    // One byte differs, same length (1000 -> 1001 encodes the same size), right after a read
    // of the same key: decoded afresh.
    assert.equal(offsetAt(keyA(last)), 1000 + last);
    await objects.put(a, objectRec(owner, stripes, (c) => (c === last ? 1000 + last + 1 : 1000 + c)));
    assert.equal(objects.getBinary(a)!.length, objects.getBinary(b)!.length, 'same length');
    assert.equal(offsetAt(keyA(last)), 1000 + last + 1, 'a same-length change is seen');
    // The twin is untouched, read right after: its own bytes, not a's.
    assert.equal(offsetAt(keyB(last)), 1000 + last);
    assert.equal(offsetAt(keyA(last)), 1000 + last + 1);

    // Reads of other keys and of the parts database in between (they reuse lmdb-js's buffer).
    await parts.put(Buffer.from([1, 9, 9, 0, 1]), { segment: objectRec(owner, 2, () => 7).segments[0] });
    for (let i = 0; i < 3; i++) {
      assert.equal(offsetAt(keyA(0)), 1000);
      objects.getBinaryFast(b);
      parts.getBinaryFast(Buffer.from([1, 9, 9, 0, 1]));
      assert.equal(offsetAt(keyA(last)), 1000 + last + 1);
      assert.equal(offsetAt(keyB(last)), 1000 + last);
    }

    // Inside a write transaction: the record as written there, then as committed.
    assert.equal(offsetAt(keyA(last)), 1000 + last + 1);
    await meta.transaction(() => {
      void objects.put(a, objectRec(owner, stripes, (c) => (c === last ? 1000 + last + 2 : 1000 + c)));
      assert.equal(offsetAt(keyA(last)), 1000 + last + 2, 'the transaction sees its own write');
    });
    assert.equal(offsetAt(keyA(last)), 1000 + last + 2);

    // A flip through replaceMany: current() answers the flipped reference at once.
    const before = holders.current(keyA(last))!;
    const next = { ...before, shards: before.shards.map((s, i) => (i === 2 ? { ...s, segment: 9, offsetBytes: 5 } : s)) };
    assert.deepEqual(await holders.replaceMany([{ key: keyA(last), expected: before, next }]), [true]);
    assert.equal(holders.current(keyA(last))!.shards[2]!.segment, 9);
    // The cached record cannot be edited by a caller (frozen references).
    const got = holders.current(keyA(last))!;
    assert.throws(() => ((got.shards[2] as { offsetBytes: number }).offsetBytes = 77), TypeError);
    assert.equal(holders.current(keyA(last))!.shards[2]!.offsetBytes, 5);

    // Deleted: undefined, though the twin holds the very bytes decoded last.
    await objects.remove(a);
    assert.equal(holders.current(keyA(last)), undefined);
    assert.equal(offsetAt(keyB(last)), 1000 + last);
    assert.equal(holders.current(keyA(last)), undefined);
  }

  // A part whose upload completed: the part record gone, its segment now the object's.
  const part = Buffer.from([1, 7, 7, 0, 2]);
  const done = objectKey('done');
  const partOwner = 'bb'.repeat(16);
  await parts.put(part, { segment: objectRec(partOwner, 2, () => 300).segments[0] });
  const partKey = `p/${part.toString('hex')}/${partOwner}/1/${done.toString('hex')}`;
  assert.equal(offsetAt(partKey), 300);
  await meta.transaction(() => {
    void parts.remove(part);
    void objects.put(done, objectRec(partOwner, 2, () => 301));
  });
  assert.equal(offsetAt(partKey), 301, 'the completed object is read, not the part decoded before');
});
