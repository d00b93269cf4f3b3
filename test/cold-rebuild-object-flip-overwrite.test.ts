// A cold object overwritten while a pool rebuild's window holds rebuilt
// records of its old stripes: the batched flip (ColdObjectHolders.replaceMany)
// compares each stripe's whole reference, so nothing of the old object flips
// into the new one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { patternBytes } from './helpers/cold.js';
import { OBJECT_BYTES, STRIPES_PER_OBJECT, readAll, setupFlipBatch } from './helpers/cold-flip-batch.js';

test('an object overwritten mid-window: none of its old stripes flip into the new object, whose bytes stay intact; the other object still flips', async (t) => {
  const { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore } = await setupFlipBatch(t);
  const old = patternBytes(OBJECT_BYTES, 21);
  const other = patternBytes(OBJECT_BYTES, 22);
  await put('big', old);
  await put('other', other);
  const oldOwners = new Set((store.headObject('cold', 'big').segments as ColdSegment[]).flatMap((s) => s.stripes.map((r) => r.ownerId)));
  await loseCold2();

  // Overwrite 'big' once the first of its rebuilt records are written, before the window's sync and flips.
  const fresh = patternBytes(OBJECT_BYTES + 4321, 23);
  let freshSegments: string | undefined;
  const land = stripes.landLostShards.bind(stripes);
  stripes.landLostShards = async (pool, segStore, items) => {
    const next = await land(pool, segStore, items);
    if (freshSegments === undefined && items.some((it) => oldOwners.has(it.ref.ownerId))) {
      await put('big', fresh);
      freshSegments = JSON.stringify(store.headObject('cold', 'big').segments);
    }
    return next;
  };

  const writesBefore = holders.recordWrites;
  const report = await rc.rebuildPool('cold-2');
  assert.ok(freshSegments !== undefined, 'the overwrite ran between landing and flip');
  // No stale flip: the new object's record is exactly what its PUT wrote.
  assert.ok(JSON.stringify(store.headObject('cold', 'big').segments) === freshSegments, "the new object's record is exactly what its PUT wrote (no stripe of the old object flipped into it)");
  assert.equal(await missingCold2('big'), 0, 'the new object was written whole onto the new cold-2');
  // 'other' flipped, in one write; 'big' (a new record under the same key) not written by the flips.
  assert.equal(await missingCold2('other'), 0);
  assert.equal(holders.recordWrites - writesBefore, 1, JSON.stringify(report));
  assert.ok(report.stripesRebuilt >= STRIPES_PER_OBJECT && report.stripesRebuilt < 2 * STRIPES_PER_OBJECT, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0);

  loseTwoMore();
  assert.ok((await readAll(store, 'cold', 'big')).equals(fresh), 'new object byte-exact with cold-0 and cold-5 lost');
  assert.ok((await readAll(store, 'cold', 'other')).equals(other), 'other byte-exact with cold-0 and cold-5 lost');
});
