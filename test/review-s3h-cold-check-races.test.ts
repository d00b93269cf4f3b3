// Review (cold-object loss check, 6c20b50): assertShardsKnownKept must never
// refuse a healthy object. It judges each shard by its pool's segment store
// extents (compaction forwards followed), so it is raced here against what
// moves them: writes rolling 1 MiB segments (a check right after each PUT of
// the object, and of every other key while other PUTs run), overwrites
// making garbage, and compaction passes copying live records and deleting
// segments while checks of handles opened before the copy run. Then the
// stores reopened (a restart): the same checks pass. In process: real
// MetaStore, StripeStore, segment files, ObjectStore and SegmentCompactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bodyOf, patternBytes, readObject, tempDir } from './helpers/cold.js';
import { openColdObjectStore } from './helpers/cold-object-store.js';

test('the cold loss check refuses no healthy object: checks right after PUTs, beside PUTs rolling segments, across compaction moves, after a reopen', async (t) => {
  const started = Date.now();
  const dir = tempDir(t, 'couchestor-review-s3h-cold-check-');
  let tier = await openColdObjectStore(dir);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
  const bodies = new Map<string, Buffer>();
  const refusals: string[] = [];
  let checks = 0;
  const check = async (key: string, why: string) => {
    const h = tier.store.openObject('cold', key);
    try {
      checks++;
      await tier.store.assertShardsKnownKept(h.rec);
    } catch (err) {
      refusals.push(`${why} ${key}: ${(err as Error).message}`);
    } finally {
      h.release();
    }
  };
  const put = async (key: string, round: number) => {
    const data = patternBytes(300 * 1024 + round * 4099, round * 31 + key.length);
    await tier.store.putObject('cold', key, bodyOf(data), { contentHeaders: {}, userMeta: {}, expectedBytes: data.length });
    bodies.set(key, data);
    await check(key, `right after PUT ${round} of`);
  };
  // Writers overwrite every key (garbage for compaction) while checkers look at every key in a loop.
  let writing = true;
  const checker = async () => {
    while (writing) {
      for (const k of bodies.keys()) await check(k, 'beside PUTs');
      await new Promise((r) => setImmediate(r));
    }
  };
  const writers = async (rounds: number) => {
    for (let round = 0; round < rounds; round++) await Promise.all(keys.map((k) => put(k, round)));
  };
  const checkers = [checker(), checker()];
  await writers(3);
  // Compaction passes with writes and checks of handles opened before each pass's copies.
  let copiedBytes = 0;
  let segmentsCompacted = 0;
  for (let pass = 0; pass < 3; pass++) {
    const opened = keys.map((k) => tier.store.openObject('cold', k));
    const compacting = tier.compactor.runOnce({ unthrottled: true });
    const during = (async () => {
      for (let i = 0; i < 20; i++) {
        for (const h of opened) {
          checks++;
          await tier.store.assertShardsKnownKept(h.rec).catch((err: Error) => refusals.push(`handle opened before compaction pass ${pass}: ${err.message}`));
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const [report] = await Promise.all([compacting, during, writers(1)]);
    copiedBytes += report.copiedBytes;
    segmentsCompacted += report.segmentsCompacted;
    for (const h of opened) {
      checks++;
      await tier.store.assertShardsKnownKept(h.rec).catch((err: Error) => refusals.push(`handle opened before compaction pass ${pass}, after it: ${err.message}`));
      h.release();
    }
  }
  writing = false;
  await Promise.all(checkers);
  // Or the passes moved nothing and the test checks nothing of compaction.
  assert.ok(copiedBytes > 0 && segmentsCompacted > 0, `compaction copied ${copiedBytes} bytes of ${segmentsCompacted} segments`);
  // Reopened (a restart): extents read from the segment files.
  await tier.close();
  tier = await openColdObjectStore(dir);
  for (const k of keys) {
    await check(k, 'after a reopen');
    assert.ok((await readObject(tier.store, 'cold', k)).equals(bodies.get(k)!), `${k} reads back`);
  }
  assert.deepEqual(refusals, [], `${refusals.length} of ${checks} checks refused a healthy object`);
  t.diagnostic(`${checks} checks, compaction copied ${copiedBytes} bytes, ${segmentsCompacted} segments, ${Date.now() - started} ms`);
});
