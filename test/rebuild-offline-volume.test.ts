// A cold-pool rebuild (POST /v1/rebuild) with one volume that cannot be
// opened (its hot pool's directory gone, as when a disk drops out): every
// other volume's stripes are rebuilt, the unopenable one is named and the
// answer says the pool is not fully rebuilt (complete: false); once its pool
// is back the retry timer's pass, or the next rebuild call, rebuilds it and
// the pool is complete. Before, the whole rebuild failed (503 PoolOffline):
// one offline hot pool held every volume at reduced redundancy. The scrub
// meanwhile verifies the unopenable volume's stripes from the index and
// reports the lost shards (read-only). In process: real manager, stripe
// store, segment files, LMDB index, Reconstructor and API.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { PoolRebuildReport, ScrubReport } from '../src/dataplane/ec/reconstruction.js';
import { buildApi } from '../src/control/api.js';
import { coldVolumeOnHot1, openColdTierManager, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

/**
 * Volumes a (journal and file on hot-1) and b (hot-0), two stripes each,
 * destaged, and h, a hot volume on hot-1 (no stripe); a restart (none
 * open); then hot-1's directory is gone and cold-2 is lost and replaced by
 * an empty directory.
 */
async function setUp(t: TestContext, prefix: string): Promise<{ m: VolumeManager; hot1: string; want: Map<string, Buffer>; lostShardOfA: number[] }> {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, prefix, () => m!);
  m = await openColdTierManager(dir);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await m.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  await m.createVolume({ name: 'h', sizeBytes: 2 * MiB, tier: 'hot', pool: 'hot-1' });
  const want = new Map<string, Buffer>();
  for (const name of ['a', 'b', 'h']) {
    want.set(name, crypto.randomBytes(2 * MiB));
    await writeVolume(m.openVolume(name), 0, want.get(name)!);
  }
  await m.cold!.destager.drain();
  await m.openVolume('h').flush();
  await m.close();
  m = await openColdTierManager(dir, false);
  fs.renameSync(hot1, `${hot1}.gone`);
  replacePoolDir(dir, LOST);
  // Where a's stripes had their cold-2 shard (what the scrub must report missing).
  const aId = m.meta.volumes.get('a')!.id;
  const lostShardOfA = [...m.meta.volumeChunks(aId)].map(({ entry }) => entry.stripe!.shards.findIndex((s) => s.pool === LOST));
  assert.equal(lostShardOfA.length, 2);
  assert.ok(lostShardOfA.every((i) => i >= 0), 'every stripe of a has a shard on cold-2 (4+2 over 6 pools)');
  return { m, hot1, want, lostShardOfA };
}

async function assertReadsBack(m: VolumeManager, want: Map<string, Buffer>): Promise<void> {
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back byte-exact`);
}

test('a pool rebuild with one volume unopenable rebuilds the others, names it, answers complete: false; the retry timer finishes it once its pool is back', async (t) => {
  const { m, hot1, want, lostShardOfA } = await setUp(t, 'couchestor-rebuild-offline-timer-');
  const r = m.cold!.reconstructor;
  const app = buildApi(m);
  t.after(() => app.close());

  const res = await app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: LOST } });
  assert.equal(res.statusCode, 200, res.body);
  const report = res.json() as PoolRebuildReport;
  assert.equal(report.complete, false, 'a volume was skipped: the pool is not fully rebuilt');
  // h cannot be opened either, but has no stripe (from the index): nothing of it is held back.
  assert.deepEqual(report.volumesSkipped.map((u) => `${u.volume}@${u.pool}:${u.stripes}`), ['a@hot-1:2']);
  assert.equal(report.stripesSkipped, 2);
  assert.match(report.volumesSkipped[0]!.error, /hot-1/);
  assert.equal(report.stripesChecked, 2, "b's two stripes were looked at");
  assert.equal(report.stripesRebuilt, 2, "b's two cold-2 shards were rebuilt");
  assert.equal(report.notRebuilt, 0);
  const cold = (await app.inject({ method: 'GET', url: '/v1/cold' })).json() as { incompleteRebuilds: { pool: string; volumesSkipped: string[]; notRebuilt: number }[] };
  assert.deepEqual(cold.incompleteRebuilds, [{ pool: LOST, volumesSkipped: ['a'], notRebuilt: 0 }]);

  // b's shards all verify (its rebuilt ones included: CRC and identity); a's stripes are
  // verified from the index, their lost cold-2 shards reported, nothing repaired.
  const scrubbed = (await app.inject({ method: 'POST', url: '/v1/scrub' })).json() as ScrubReport;
  assert.equal(scrubbed.stripesChecked, 2);
  assert.equal(scrubbed.badStripes, 0, "every shard of b's stripes verifies");
  assert.deepEqual(scrubbed.volumesSkipped.map((u) => u.volume).sort(), ['a', 'h']);
  assert.equal(scrubbed.skippedStripesChecked, 2, "a's two stripes were read from the index and verified");
  assert.equal(scrubbed.skippedBadStripes, 2);
  assert.deepEqual(
    scrubbed.skippedDamage,
    lostShardOfA.map((i, c) => ({ volume: 'a', chunkIndex: c, badShards: [i] })),
    'the lost cold-2 shard of each of a stripes is reported',
  );

  // The timer's pass while a still cannot be opened: nothing to do, no failure, still incomplete.
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.deepEqual(r.incompleteRebuilds(), [{ pool: LOST, volumesSkipped: ['a'], notRebuilt: 0 }]);

  // hot-1 is back: the timer's pass rebuilds a's cold-2 shards and the pool is complete.
  fs.renameSync(`${hot1}.gone`, hot1);
  const rebuiltBefore = r.rebuiltStripes;
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.equal(r.rebuiltStripes - rebuiltBefore, 2, "a's two stripes were rebuilt by the timer's pass");
  assert.deepEqual(r.incompleteRebuilds(), []);
  const after = (await app.inject({ method: 'GET', url: '/v1/cold' })).json() as { incompleteRebuilds: unknown[] };
  assert.deepEqual(after.incompleteRebuilds, []);
  // Every shard of every stripe verifies, none needed the scrub to repair it.
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0);
  assert.deepEqual(whole.volumesSkipped, []);
  assert.equal(whole.skippedStripesChecked, 0);
  await assertReadsBack(m, want);
});

test('with the unopenable volume back, the next rebuild call rebuilds it and reports the pool complete', async (t) => {
  const { m, hot1, want } = await setUp(t, 'couchestor-rebuild-offline-again-');
  const r = m.cold!.reconstructor;

  const first = await r.rebuildPool(LOST);
  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.equal(first.stripesRebuilt, 2);

  fs.renameSync(`${hot1}.gone`, hot1);
  const second = await r.rebuildPool(LOST);
  assert.equal(second.complete, true, JSON.stringify(second));
  assert.deepEqual(second.volumesSkipped, []);
  assert.equal(second.stripesSkipped, 0);
  assert.equal(second.retryOfSkipped, false);
  assert.equal(second.stripesChecked, 4, "a's and b's stripes were looked at");
  assert.equal(second.stripesRebuilt, 2, "only a's shards were missing (b's were rebuilt by the first call)");
  assert.equal(second.notRebuilt, 0);
  assert.deepEqual(r.incompleteRebuilds(), []);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0, 'every shard of every stripe verifies');
  await assertReadsBack(m, want);
});

test('a stripe queued for a volume that cannot be opened waits for it: the pass and a pool rebuild go on', async (t) => {
  const { m, hot1, want } = await setUp(t, 'couchestor-rebuild-offline-queued-');
  const r = m.cold!.reconstructor;
  const aId = m.meta.volumes.get('a')!.id;
  // Before, the pass threw at this entry (PoolOffline opening a), and so did every pass after
  // it, a pool rebuild's final one included.
  r.enqueue({ volumeId: aId, chunkIndex: 0 }, 'test: queued before its pool went');
  await r.process();
  const waiting = r.unhealthy();
  assert.equal(waiting.length, 1);
  assert.match((waiting[0] as unknown as { reason: string }).reason, /waiting for its volume to open/);
  const report = await r.rebuildPool(LOST);
  assert.equal(report.stripesRebuilt, 2);
  assert.equal(report.complete, false);

  fs.renameSync(`${hot1}.gone`, hot1);
  await r.retryOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.deepEqual(r.unhealthy(), [], 'the waiting entry was rebuilt (or found whole) once a opened');
  assert.deepEqual(r.incompleteRebuilds(), []);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0);
  await assertReadsBack(m, want);
});

test('a volume that cannot be opened but has no stripe on the pool does not hold the rebuild back: complete', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-offline-hot-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = path.join(dir, 'hot-1');
  await m.putPool({ name: 'hot-1', path: hot1, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  await m.createVolume({ name: 'h', sizeBytes: 2 * MiB, tier: 'hot', pool: 'hot-1' });
  await m.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const want = new Map([['b', crypto.randomBytes(2 * MiB)]]);
  await writeVolume(m.openVolume('b'), 0, want.get('b')!);
  await m.cold!.destager.drain();
  await m.close();
  m = await openColdTierManager(dir, false);
  fs.renameSync(hot1, `${hot1}.gone`);
  replacePoolDir(dir, LOST);

  const report = await m.cold!.reconstructor.rebuildPool(LOST);
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.deepEqual(report.volumesSkipped, []);
  assert.equal(report.stripesRebuilt, 2);
  assert.deepEqual(m.cold!.reconstructor.incompleteRebuilds(), []);
  const whole = await m.cold!.reconstructor.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 2);
  assert.equal(whole.badStripes, 0);
  assert.equal(whole.skippedStripesChecked, 0, 'h has no stripe to verify');
  await assertReadsBack(m, want);
});
