// Review of b6573f1 (sliced recount): a pool whose store is replaced while
// the recount reads its snapshot must keep its running figures only (reset
// at the replacement, then what is told after it). Dead bytes told for the
// old store's places before the replacement (but after the recount's
// instant) name segments of a store that is gone: carried over from
// sinceRecount, they land on the new store's segment of the same number.
// In process: real ObjectStore, stripe store, segment files, LMDB index and
// SegmentCompactor (one entry per slice).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, MiB, patternBytes, readObject, tempDir } from './helpers/cold.js';

/** Chunk-map entries naming one real stripe: the recount (one entry a slice) is still reading while the steps below run. */
const PADDING_CHUNKS = 5_000;

test('a pool replaced while the recount reads: frees of its old store told meanwhile are not carried onto the new store', async (t) => {
  const dir = tempDir(t, 'couchestor-review-recount-replaced-');
  const pools = coldPoolsIn(dir, true);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0, recountSliceEntries: 1 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  t.after(async () => {
    await compactor.stop();
    await stripes.close();
    await meta.close();
  });
  const put = async (key: string, bytes: Buffer) => store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  await store.createBucket('cold', 'cold');
  await put('old', patternBytes(2 * MiB, 1));
  const padding = await stripes.writeStripe(Buffer.alloc(16, 0xee), 0, 1, patternBytes(MiB, 99));
  await meta.volumes.put('padding', { name: 'padding', id: 1, sizeBytes: PADDING_CHUNKS * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: '', readOnly: false, createdMs: 0 });
  await meta.transaction(() => {
    for (let i = 0; i < PADDING_CHUNKS; i++) void meta.chunks.put([1, i], { state: ChunkState.Cold, pool: '', stripe: { ...padding, chunkIndex: i } });
  });
  await meta.durable();

  let recounted = false;
  const recount = compactor.recount().then(() => {
    recounted = true;
  });
  // After the recount's instant: old's stripes (a shard on every pool) told dead ...
  await store.deleteObject('cold', 'old');
  // ... then cold-2 lost and replaced; its first use opens the new, empty store (judged replaced: marked).
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  assert.notEqual(await stripes.segmentStore('cold-2'), null);
  assert.equal(stripes.mayHoldStalePlaces('cold-2'), true, 'cold-2 reopened empty while marked: replaced');
  // A live object on the new store: its first segment (the number the old one's had) now holds records, all referenced.
  const kept = patternBytes(2 * MiB, 2);
  await put('kept', kept);
  assert.equal(recounted, false, 'the steps ran while the recount was reading (or the case tests nothing): raise PADDING_CHUNKS');
  await recount;
  await compactor.deadSettled();

  // Nothing was told dead on the new cold-2 store: its running figure is 0 (the recount is redone by the next pass).
  const newStore = (await compactor.segments()).filter((s) => s.pool === 'cold-2');
  assert.ok(newStore.some((s) => s.sizeBytes > 0), `the new cold-2 store holds kept's records: ${JSON.stringify(newStore)}`);
  assert.deepEqual(
    newStore.map((s) => [s.segment, s.deadBytes]),
    newStore.map((s) => [s.segment, 0]),
    'no dead byte of the old cold-2 store is counted on the new one',
  );
  for (const s of newStore) assert.equal(meta.segmentDeadBytes.get(['cold-2', s.segment]) ?? 0, 0, `nor persisted as segment ${s.segment}'s hint`);
  assert.ok((await readObject(store, 'cold', 'kept')).equals(kept));
});
