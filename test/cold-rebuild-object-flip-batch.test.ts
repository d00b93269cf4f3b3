// A pool rebuild flips a large cold object's rebuilt stripes with one write
// of the object's index record per window (ColdObjectHolders.replaceMany),
// each stripe still compare-and-swapped on its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { REBUILD_SYNC_BYTES } from '../src/dataplane/ec/reconstruction.js';
import { patternBytes } from './helpers/cold.js';
import { OBJECT_BYTES, STRIPES_PER_OBJECT, readAll, setupFlipBatch } from './helpers/cold-flip-batch.js';

test('objects of many stripes: one index record write per object per window, every stripe flipped, byte-exact with two more pools lost', async (t) => {
  const { rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const a = patternBytes(OBJECT_BYTES, 11);
  const b = patternBytes(OBJECT_BYTES, 12);
  await put('a', a);
  await put('b', b);
  await loseCold2();
  // Both objects' rebuilt shards fit in one window: one record write each.
  assert.ok((2 * OBJECT_BYTES) / 4 < REBUILD_SYNC_BYTES);

  const writesBefore = holders.recordWrites;
  const report = await rc.rebuildPool('cold-2');
  assert.equal(report.stripesRebuilt, 2 * STRIPES_PER_OBJECT, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0);
  // Per-stripe flips wrote 2 x 64 records here.
  assert.equal(holders.recordWrites - writesBefore, 2, 'one record write per object in the window');
  assert.equal(await missingCold2('a'), 0);
  assert.equal(await missingCold2('b'), 0);
  // current() (which keeps the last record it decoded) answers the flipped references: the
  // rebuild read both records through it before the flips.
  const listed = [...holders.list()];
  assert.equal(listed.length, 2 * STRIPES_PER_OBJECT + 1);
  for (const [key, ref] of listed) assert.deepEqual(holders.current(key), ref, key);
  // And a record changed after current() read it is read afresh (a flip to the next generation
  // at the same places, releasing nothing, then back).
  const [key, ref] = listed[0]!;
  assert.deepEqual(holders.current(key), ref);
  const bumped = { ...ref, generation: ref.generation + 1 };
  assert.equal(await holders.replace(key, ref, bumped), true);
  assert.deepEqual(holders.current(key), bumped, 'current() after a flip');
  assert.equal(await holders.replace(key, bumped, ref), true);
  assert.deepEqual(holders.current(key), ref, 'current() after the flip back');

  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'a')).equals(a), 'a byte-exact with cold-0 and cold-5 lost');
  assert.ok((await readAll(store, 'cold', 'b')).equals(b), 'b byte-exact with cold-0 and cold-5 lost');
});

