// Space accounting of a rebuilt record that lands at the very place a stale
// reference names (a replaced pool's fresh segments reuse the old places)
// and whose flip loses its compare-and-swap to an overwrite: that record is
// counted dead exactly once. The overwrite's free of the old stripe counts
// the stale place, which is now that record's place, so releaseReplaced must
// not count it again (a "fix" comparing identity there would count it
// twice). In process, with the real stripe store, segment files, LMDB index
// and Reconstructor, so the overwrite lands exactly between the rebuilt
// record becoming durable and its flip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ShardRef, StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { coldObjectIndex, coldStores, MiB, patternBytes } from './helpers/cold.js';

const key = (n: number) => Buffer.from([1, 0, 0, 0, 1, 0x61 + n]);
const at = (s: ShardRef) => `${s.pool}/${s.segment}/${s.offsetBytes}`;

test('an unflipped rebuilt record at the very place of the stale reference is counted dead once', async (t) => {
  const { dir, meta, stripes, rc } = coldStores(t, 'couchestor-same-place-');
  // What ObjectStore.putObject does: stripes durable, the index record, then the replaced version's stripes freed.
  const { objects, putObject } = coldObjectIndex({ meta, stripes }, { freeReplaced: true });

  await putObject(key(0), patternBytes(MiB, 1)); // one stripe: its cold-2 shard is cold-2's first record
  const stale = objects.get(key(0))!.segments[0]!.stripes[0]!;
  const staleOnPool = stale.shards.find((s) => s.pool === 'cold-2')!;
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));

  const dead: string[] = [];
  stripes.onShardsDead = (shards) => dead.push(...shards.map(at));
  let rebuilt: StripeRef | null = null;
  // The pool rebuild lands object stripes through landLostShards (the batched path).
  const land = stripes.landLostShards.bind(stripes);
  stripes.landLostShards = async (pool, store, items) => {
    const next = await land(pool, store, items);
    rebuilt = next[0]!;
    await putObject(key(0), patternBytes(MiB + 5, 2)); // the overwrite wins the race to the index
    return next;
  };
  const report = await rc.rebuildPool('cold-2');
  assert.ok(rebuilt !== null, 'the overwrite ran between landing and flip');
  assert.equal(report.stripesRebuilt, 0, JSON.stringify(report));
  const orphan = (rebuilt as StripeRef).shards.find((s) => s.pool === 'cold-2')!;
  // The scenario: the rebuilt record sits exactly where the stale reference points.
  assert.equal(at(orphan), at(staleOnPool), 'rebuilt record at the stale place');
  // Counted dead once: by the overwrite's free of the old stripe (its stale place), not again by the failed flip.
  assert.equal(dead.filter((p) => p === at(orphan)).length, 1, `dead places: ${JSON.stringify(dead)}`);
});
