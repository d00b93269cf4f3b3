// Pool marks (stripe-store.ts POOLS_WRITTEN_DB): a cold pool whose store
// opens empty is judged lost-and-replaced (mayHoldStalePlaces: its stale
// references' places are header-checked before they count dead) exactly when
// the index may name it, without scanning the index. A new pool is judged new;
// a pool written to (even one added after the index existed) and then lost
// while the daemon is down is judged replaced at the next start; the mark is
// durable before the first index entry can name the pool; and an index
// written before marks existed (the upgrade) still has its lost pools judged
// replaced. In process: real stripe store, segment files, LMDB index and
// SegmentCompactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { POOLS_WRITTEN_DB, poolMarkKey, StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { coldStripeRefs } from '../src/dataplane/objects/cold-segments.js';
import { Pool } from '../src/dataplane/pools/pool.js';
import { coldObjectIndex, MiB, patternBytes, tempDir } from './helpers/cold.js';

/** A start of the cold tier over `dir` with the cold pools `names` (directories made when missing), compactor attached as the daemon does. */
function openAt(dir: string, names: readonly string[]) {
  const pools = names.map((name) => {
    const p = path.join(dir, name);
    fs.mkdirSync(p, { recursive: true });
    return new Pool({ name, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
  });
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  const close = async () => {
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  return { meta, stripes, compactor, close };
}

/** How the new start judges `pool` once its store is open (as the first use of the pool opens it). */
async function judged(tier: ReturnType<typeof openAt>, pool: string): Promise<boolean> {
  assert.notEqual(await tier.stripes.segmentStore(pool), null, `${pool} opens`);
  return tier.stripes.mayHoldStalePlaces(pool);
}

function replaceDir(dir: string, pool: string): void {
  fs.rmSync(path.join(dir, pool), { recursive: true });
  fs.mkdirSync(path.join(dir, pool));
}

/** Closes `tier` and leaves its index as a build from before pool marks did: no marks, no completion key. */
async function closeAsPreMarksIndex(tier: ReturnType<typeof openAt>, dir: string): Promise<void> {
  await tier.close();
  const old = MetaStore.open(dir);
  await old.openDB<number, string>(POOLS_WRITTEN_DB).clearAsync();
  await old.close();
}

const SIX = ['cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4', 'cold-5'];

test('a pool added to an existing index, written, then lost while the daemon is down is judged replaced at the next start; a pool never written is judged new', async (t) => {
  const dir = tempDir(t, 'couchestor-pool-marks-');
  // Start 1: six pools, an object (the index now names cold-0 .. cold-5).
  let tier = openAt(dir, SIX);
  t.after(() => tier.close());
  await coldObjectIndex(tier, { freeReplaced: false }).putObject(Buffer.from([1, 1]), patternBytes(2 * MiB, 1));
  await tier.close();
  // Start 2: cold-6 added to the existing index; 4+2 stripes rotate over seven pools, so two stripes reach it.
  tier = openAt(dir, [...SIX, 'cold-6']);
  assert.equal(await judged(tier, 'cold-6'), false, 'cold-6 is new at its first start (no index entry names it)');
  const rec = await coldObjectIndex(tier, { freeReplaced: false }).putObject(Buffer.from([1, 2]), patternBytes(2 * MiB, 2));
  assert.ok(
    [...coldStripeRefs(rec.segments)].some((r) => r.shards.some((s) => s.pool === 'cold-6')),
    'the index names places on cold-6 (or the case tests nothing)',
  );
  await tier.close();
  // cold-6 lost and replaced while down; cold-7 a new pool.
  replaceDir(dir, 'cold-6');
  tier = openAt(dir, [...SIX, 'cold-6', 'cold-7']);
  assert.equal(await judged(tier, 'cold-6'), true, 'cold-6 opens empty while the index names it: replaced, its stale places are checked');
  assert.equal(await judged(tier, 'cold-7'), false, 'cold-7 was never written: new, nothing to check');
  assert.equal(await judged(tier, 'cold-0'), false, 'cold-0 holds its records: not a fresh store');
});

test("a pool's mark is durable before its first shard record is appended, so before any index entry can name it", async (t) => {
  const dir = tempDir(t, 'couchestor-pool-marks-');
  const tier = openAt(dir, SIX);
  t.after(() => tier.close());
  const marks = tier.meta.openDB<number, string>(POOLS_WRITTEN_DB);
  assert.deepEqual(
    SIX.filter((p) => marks.get(poolMarkKey(p)) !== undefined),
    [],
    'a fresh index marks no pool (they are all new)',
  );
  // A stripe written, its reference not in the index yet (a flip would follow).
  const ref = await tier.stripes.writeStripe(Buffer.alloc(16, 7), 0, 1, patternBytes(MiB, 3));
  assert.deepEqual(ref.shards.map((s) => s.pool).sort(), SIX);
  // Read in a second LMDB environment handle of the same file: what is committed, not a pending write.
  await tier.close();
  const again = MetaStore.open(dir);
  t.after(() => again.close());
  assert.deepEqual(
    SIX.filter((p) => again.openDB<number, string>(POOLS_WRITTEN_DB).get(poolMarkKey(p)) === 1),
    SIX,
    'every pool the stripe reached is marked once writeStripe resolved',
  );
});

test('an index written before pool marks existed (upgrade): a pool lost while down, even one not configured at the upgrade start, is judged replaced', async (t) => {
  const dir = tempDir(t, 'couchestor-pool-marks-');
  let tier = openAt(dir, SIX);
  t.after(() => tier.close());
  // The daemon records every configured pool in the pools table (VolumeManager.putPool).
  for (const name of SIX) await tier.meta.pools.put(name, { name, path: path.join(dir, name), tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
  await coldObjectIndex(tier, { freeReplaced: false }).putObject(Buffer.from([1, 1]), patternBytes(2 * MiB, 4));
  await closeAsPreMarksIndex(tier, dir);
  // Upgrade start with cold-2 not configured (its disk out), cold-5 lost and replaced.
  replaceDir(dir, 'cold-5');
  tier = openAt(dir, SIX.filter((p) => p !== 'cold-2'));
  assert.equal(await judged(tier, 'cold-5'), true, 'cold-5 is named by the old index: replaced');
  await tier.close();
  // A later start: cold-2 back, lost and replaced meanwhile.
  replaceDir(dir, 'cold-2');
  tier = openAt(dir, SIX);
  assert.equal(await judged(tier, 'cold-2'), true, 'cold-2 is named by the old index (known from the pools table): replaced');
});

test('an index written before pool marks existed whose only references are in the volume chunk map: a lost pool is judged replaced', async (t) => {
  const dir = tempDir(t, 'couchestor-pool-marks-');
  let tier = openAt(dir, SIX);
  t.after(() => tier.close());
  // A cold chunk as a destage leaves it: the stripe durable, then its chunk entry.
  const ref = await tier.stripes.writeStripe(Buffer.alloc(16, 9), 0, 1, patternBytes(MiB, 5));
  await tier.meta.chunks.put([1, 0], { state: ChunkState.Cold, pool: '', stripe: ref });
  await tier.meta.durable();
  await closeAsPreMarksIndex(tier, dir);
  replaceDir(dir, 'cold-3');
  tier = openAt(dir, SIX);
  assert.equal(await judged(tier, 'cold-3'), true, 'cold-3 is named by the chunk map: replaced');
});

test("a new pool whose store is first opened by a write is judged new: its mark, made for that write, is not taken for an earlier store's", async (t) => {
  const dir = tempDir(t, 'couchestor-pool-marks-');
  const tier = openAt(dir, SIX);
  t.after(() => tier.close());
  // No store opened before: the stripe's appends open all six.
  await tier.stripes.writeStripe(Buffer.alloc(16, 5), 0, 1, patternBytes(MiB, 6));
  assert.deepEqual(
    SIX.filter((p) => tier.stripes.mayHoldStalePlaces(p)),
    [],
    'no pool judged replaced (its frees would wait for header checks, and the dead bytes lag behind compaction)',
  );
});
