// Pins the lmdb-js internal that ColdObjectHolders.current()'s record cache
// decodes with (db.decoder, what lmdb-js's own get() calls): without it the
// cache falls back to db.get() (correct, but a large object's pool rebuild
// ran at about a third of the rate: bench/ec-rebuild MODE=large-object), so
// an lmdb upgrade that drops or changes it must fail here, not go unnoticed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';

test('the object index database has the msgpack decoder current() uses, and it decodes stored bytes as get() does', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-flip-decoder-'));
  const meta = MetaStore.open(dir);
  t.after(async () => {
    try {
      await meta.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  const db = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const key = Buffer.from([1, 0, 0, 0, 1, 0x61]);
  const rec = {
    sizeBytes: 3,
    segments: [
      { kind: 'inline', lengthBytes: 3 },
      { kind: 'cold', stripes: [{ ownerId: 'ab', chunkIndex: 0, generation: 1, dataShards: 4, parityShards: 2, stripeSizeBytes: 65536, dataLengthBytes: 3, shards: [{ pool: 'cold-0', segment: 1, offsetBytes: 0, lengthBytes: 16 }] }] },
    ],
    userMeta: { 'x-amz-meta-a': 'b' },
  };
  await db.put(key, rec);
  const decoder = (db as unknown as { decoder?: { decode(bytes: Buffer): unknown } }).decoder;
  assert.equal(typeof decoder?.decode, 'function', 'lmdb-js no longer exposes db.decoder: current() lost its cache');
  const bytes = db.getBinary(key)!;
  assert.deepEqual(decoder!.decode(bytes), db.get(key));
  assert.deepEqual(decoder!.decode(bytes), rec);
  // Decoding leaves the stored copy as it was (current() keeps it to compare).
  assert.ok(bytes.equals(db.getBinary(key)!));
  // current() compares against lmdb-js's reusable buffer without a copy: a view of its
  // first `length` bytes (the README's contract) is the stored value.
  const fast = db.getBinaryFast(key)!;
  assert.ok(Buffer.from(fast.buffer, fast.byteOffset, fast.length).equals(bytes), 'getBinaryFast: the value is the first `length` bytes');
});
