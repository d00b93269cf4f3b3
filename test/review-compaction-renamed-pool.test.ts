// Review (pool renamed in the configuration): the index names cold shards by
// pool name, and a pool's record stays in the index when the configuration
// renames it. Started with the new names over the same directories, every
// record there looks unreferenced (the index names them under the old names,
// which nothing resolves): compaction deleted the sealed segments, so
// renaming the pools back found the shards gone, and with more than m pools
// renamed the object could no longer be read. In process: real MetaStore
// (pool records as the daemon writes them), stripe store, segment files,
// ObjectStore and SegmentCompactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { SegmentCompactor } from '../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import { Pool } from '../src/dataplane/pools/pool.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, MiB, patternBytes, readObject, tempDir } from './helpers/cold.js';

/** A start over `dir` with cold pools `names`, the i-th in directory dir-i, registered in the index as the daemon does (putPool). */
async function openAt(dir: string, names: readonly string[]) {
  const meta = MetaStore.open(dir);
  const pools = names.map((name, i) => {
    const p = path.join(dir, `dir-${i}`);
    fs.mkdirSync(p, { recursive: true });
    return new Pool({ name, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
  });
  for (const p of pools) await meta.pools.put(p.name, p.rec);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  stripes.segmentOptions = { segmentSizeBytes: MiB }; // several sealed segments per pool
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  const close = async () => {
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  return { meta, stripes, compactor, store, close };
}

const NAMES = ['cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4', 'cold-5'];
const RENAMED = ['cold-0', 'cold-1', 'cold-2', 'hdd-3', 'hdd-4', 'hdd-5'];

test('pools renamed in the configuration: compaction deletes no segment the index names under the old names', async (t) => {
  const dir = tempDir(t, 'couchestor-review-renamed-pool-');
  let tier = await openAt(dir, NAMES);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const data = patternBytes(8 * MiB, 7);
  await tier.store.putObject('cold', 'o', bodyOf(data), { contentHeaders: {}, userMeta: {}, expectedBytes: data.length });
  await tier.close();
  const segmentFiles = (i: number) => fs.readdirSync(path.join(dir, `dir-${i}`, 'segments')).sort();
  const before = [3, 4, 5].map(segmentFiles);
  assert.ok(before.every((f) => f.length >= 2), `sealed segments to compact (or the case tests nothing): ${JSON.stringify(before)}`);

  // Three pools (more than the 2 parity shards) renamed, same directories.
  tier = await openAt(dir, RENAMED);
  await tier.compactor.runOnce({ unthrottled: true });
  assert.deepEqual([3, 4, 5].map(segmentFiles), before, 'no segment file of the renamed pools deleted');
  await tier.close();

  // Renamed back: every shard is where the index says, the object reads whole.
  tier = await openAt(dir, NAMES);
  assert.ok((await readObject(tier.store, 'cold', 'o')).equals(data), 'the object reads back');
  assert.equal(tier.stripes.counters.degradedReads, 0, 'no shard lost');
  // The hdd-* records stay in the index with these directories, but nothing names them: compaction goes on.
  await tier.store.deleteObject('cold', 'o');
  await tier.compactor.runOnce({ unthrottled: true });
  for (const [n, i] of [3, 4, 5].entries()) assert.ok(segmentFiles(i).length < before[n]!.length, `dir-${i}'s dead sealed segments reclaimed: ${JSON.stringify(segmentFiles(i))}`);
});
