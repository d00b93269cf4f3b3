// The compactor's recount reads the index from one LMDB snapshot in slices,
// yielding to the event loop between them (a start no longer holds NBD, S3
// and health for the whole index). Writes, overwrites and deletes that run
// while it reads must come out exactly as a recount with nothing running
// finds them: the running per-segment dead bytes after the sliced recount
// equal a fresh start's recount. In process: real ObjectStore, stripe store,
// segment files, LMDB index and SegmentCompactor (one entry per slice).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, MiB, patternBytes, readObject, tempDir, type SegmentDead } from './helpers/cold.js';

/** Chunk-map entries naming one real stripe: enough index that the recount (one entry a slice) is still reading while the writes below run. */
const PADDING_CHUNKS = 20_000;

async function openAt(dir: string, recountSliceEntries: number) {
  const pools = coldPoolsIn(dir, true);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0, recountSliceEntries });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  const close = async () => {
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  const perSegment = async (): Promise<SegmentDead[]> => (await compactor.segments()).map(({ pool, segment, sizeBytes, deadBytes }) => ({ pool, segment, sizeBytes, deadBytes }));
  return { meta, stripes, compactor, store, close, perSegment };
}

async function put(store: ObjectStore, models: Map<string, Buffer>, key: string, lengthBytes: number, seed: number): Promise<void> {
  const bytes = patternBytes(lengthBytes, seed);
  await store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  models.set(key, bytes);
}

async function remove(store: ObjectStore, models: Map<string, Buffer>, key: string): Promise<void> {
  await store.deleteObject('cold', key);
  models.delete(key);
}

test('writes, overwrites and deletes while the recount reads its snapshot in slices: the running dead bytes equal a fresh recount', async (t) => {
  const dir = tempDir(t, 'couchestor-recount-sliced-');
  let tier = await openAt(dir, 1);
  t.after(() => tier.close());
  const models = new Map<string, Buffer>();
  await tier.store.createBucket('cold', 'cold');
  for (let i = 0; i < 8; i++) await put(tier.store, models, `o${i}`, MiB + 1000 * i, i);
  await put(tier.store, models, 'o1', 2 * MiB, 101); // dead bytes before the recount too
  const padding = await tier.stripes.writeStripe(Buffer.alloc(16, 0xee), 0, 1, patternBytes(MiB, 99));
  await tier.meta.volumes.put('padding', { name: 'padding', id: 1, sizeBytes: PADDING_CHUNKS * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: '', readOnly: false, createdMs: 0 });
  await tier.meta.transaction(() => {
    for (let i = 0; i < PADDING_CHUNKS; i++) void tier.meta.chunks.put([1, i], { state: ChunkState.Cold, pool: '', stripe: { ...padding, chunkIndex: i } });
  });
  await tier.meta.durable();

  let recounted = false;
  const recount = tier.compactor.recount().then(() => {
    recounted = true;
  });
  // Objects are read after the chunk map: these frees reach the snapshot's objects before the recount does.
  await put(tier.store, models, 'o3', MiB + 17, 103); // overwrite: o3's old stripes freed
  await remove(tier.store, models, 'o4');
  await put(tier.store, models, 'new', MiB + 5, 104); // appended past the sizes the recount took
  await put(tier.store, models, 'new', 3000, 105); // ... and freed again
  await put(tier.store, models, 'kept', 2 * MiB, 106); // appended, live
  assert.equal(recounted, false, 'the writes ran while the recount was reading (or the case tests nothing): raise PADDING_CHUNKS');
  await recount;
  await tier.compactor.deadSettled();
  const running = await tier.perSegment();
  assert.ok(running.some((s) => s.deadBytes > 0), `the test has dead bytes to count: ${JSON.stringify(running)}`);
  await tier.close();

  // A fresh start over the same data, its recount read with nothing running: the reference.
  tier = await openAt(dir, 1024);
  await tier.compactor.recount();
  assert.deepEqual(running, await tier.perSegment(), 'running accounting equals a fresh recount, segment by segment');
  for (const [key, bytes] of models) assert.ok((await readObject(tier.store, 'cold', key)).equals(bytes), key);
});
