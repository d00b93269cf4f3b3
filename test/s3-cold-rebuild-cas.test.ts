// The index flip of a rebuilt cold-object stripe is a compare-and-swap, in
// process with the real stripe store, segment files, LMDB index and
// Reconstructor (so the test can overwrite the object exactly between the
// rebuilt records becoming durable and the flip, which no client can time):
// the overwritten object keeps its new record, the rebuilt records are
// marked dead; an object left alone is flipped and reads with two more
// pools lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ShardRef, StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { coldObjectIndex, coldStores, MiB, patternBytes, type ColdObjectRec as Rec } from './helpers/cold.js';

const key = (n: number) => Buffer.from([1, 0, 0, 0, 1, 0x61 + n]);

test('an object overwritten between a rebuilt stripe landing and its flip keeps its new record', async (t) => {
  const cold = coldStores(t, 'couchestor-s3-rebuild-cas-');
  const { dir, stripes, rc } = cold;
  // What ObjectStore.putObject does: stripes durable, then the index record (the replaced version's stripes are not freed here).
  const { objects, putObject } = coldObjectIndex(cold, { freeReplaced: false });
  const raced = patternBytes(2 * MiB, 1);
  const kept = patternBytes(3 * MiB, 2);
  await putObject(key(0), raced);
  await putObject(key(1), kept);
  // Lose and replace cold-2.
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  // A new object first takes the start of the new cold-2 segment: every rebuilt record then
  // lands at another place than object 0's first stripe had (a record at the very place an old
  // reference names is not told apart by releaseReplaced, which compares places).
  await putObject(key(2), patternBytes(1000, 4));

  const dead: ShardRef[] = [];
  stripes.onShardsDead = (shards) => dead.push(...shards);
  // Overwrite object 0 once its first rebuilt stripe is durable, before that stripe's flip.
  const newer = patternBytes(MiB + 3, 3);
  let overwritten: Rec | null = null;
  let rebuiltOfRaced: StripeRef | null = null;
  // The pool rebuild lands object stripes in batches (landLostShards), durable and flipped per window.
  const land = stripes.landLostShards.bind(stripes);
  const racedOwner = objects.get(key(0))!.segments[0]!.stripes[0]!.ownerId;
  stripes.landLostShards = async (pool, store, items) => {
    const next = await land(pool, store, items);
    const t = items.findIndex((it) => it.ref.ownerId === racedOwner && it.ref.chunkIndex === 0);
    if (t >= 0) {
      rebuiltOfRaced = next[t]!;
      overwritten = await putObject(key(0), newer);
    }
    return next;
  };

  const report = await rc.rebuildPool('cold-2');
  // Object 2 has its cold-2 shard: checked, not rebuilt.
  assert.equal(report.objectStripesChecked, 2 + 3 + 1);
  assert.ok(overwritten !== null && rebuiltOfRaced !== null, 'the overwrite ran between landing and flip');
  // The CAS kept the overwrite: the record is exactly the one the overwrite wrote.
  assert.deepEqual(objects.get(key(0)), overwritten);
  // The rebuilt record on cold-2 nobody references is dead (compaction reclaims it).
  const orphan = (rebuiltOfRaced as StripeRef).shards.find((s) => s.pool === 'cold-2')!;
  assert.notEqual(orphan.offsetBytes, 0);
  assert.ok(dead.some((d) => d.pool === 'cold-2' && d.segment === orphan.segment && d.offsetBytes === orphan.offsetBytes), 'unflipped rebuilt record marked dead');
  // Object 1 (3 stripes) was flipped onto new cold-2 records; at most object 0's second stripe
  // was rebuilt too, if it landed before the overwrite (then the overwrite freed it).
  assert.ok(report.stripesRebuilt >= 3 && report.stripesRebuilt <= 4, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0);

  // Two other pools lost: both objects read byte-exact from the index as it stands.
  fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
  fs.rmSync(path.join(dir, 'cold-5'), { recursive: true });
  const read = async (k: Buffer) => Buffer.concat(await Promise.all(objects.get(k)!.segments[0]!.stripes.map((r) => stripes.readStripe(r))));
  assert.ok((await read(key(1))).equals(kept), 'object left alone reads with cold-0 and cold-5 lost');
  assert.ok((await read(key(0))).equals(newer), 'overwritten object reads its new bytes');
});
