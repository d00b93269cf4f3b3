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
import { bodyOf, MiB, patternBytes, readObject, tempDir } from './helpers/cold.js';
import { openColdObjectStore } from './helpers/cold-object-store.js';

const NAMES = ['cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4', 'cold-5'];
const RENAMED = ['cold-0', 'cold-1', 'cold-2', 'hdd-3', 'hdd-4', 'hdd-5'];

test('pools renamed in the configuration: compaction deletes no segment the index names under the old names', async (t) => {
  const dir = tempDir(t, 'couchestor-review-renamed-pool-');
  let tier = await openColdObjectStore(dir, NAMES);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const data = patternBytes(8 * MiB, 7);
  await tier.store.putObject('cold', 'o', bodyOf(data), { contentHeaders: {}, userMeta: {}, expectedBytes: data.length });
  await tier.close();
  const segmentFiles = (i: number) => fs.readdirSync(path.join(dir, `dir-${i}`, 'segments')).sort();
  const before = [3, 4, 5].map(segmentFiles);
  assert.ok(before.every((f) => f.length >= 2), `sealed segments to compact (or the case tests nothing): ${JSON.stringify(before)}`);

  // Three pools (more than the 2 parity shards) renamed, same directories.
  tier = await openColdObjectStore(dir, RENAMED);
  await tier.compactor.runOnce({ unthrottled: true });
  assert.deepEqual([3, 4, 5].map(segmentFiles), before, 'no segment file of the renamed pools deleted');
  await tier.close();

  // Renamed back: every shard is where the index says, the object reads whole.
  tier = await openColdObjectStore(dir, NAMES);
  assert.ok((await readObject(tier.store, 'cold', 'o')).equals(data), 'the object reads back');
  assert.equal(tier.stripes.counters.degradedReads, 0, 'no shard lost');
  // The hdd-* records stay in the index with these directories, but nothing names them: compaction goes on.
  await tier.store.deleteObject('cold', 'o');
  await tier.compactor.runOnce({ unthrottled: true });
  for (const [n, i] of [3, 4, 5].entries()) assert.ok(segmentFiles(i).length < before[n]!.length, `dir-${i}'s dead sealed segments reclaimed: ${JSON.stringify(segmentFiles(i))}`);
});
