// The retry timer's pass retries each listed pool on its own: a pool whose
// rebuild throws at every retry (its whole-pool rebuild stops on a damaged S3
// object record) stays listed, is logged once and counted, and the pools after
// it in the pass are still rebuilt. Before, the first throw ended the pass:
// cold-1 (listed interrupted, first in the pass) starved cold-2's retry of the
// volume its rebuild had skipped, for good and silently (the pass's one warning
// every 10 s named neither pool), and a's stripes stayed without their cold-2
// shard. The faults are real: a damaged object record in the index, a hot
// pool's directory gone. In process: real manager, stripe store, segment
// files, LMDB index, Reconstructor; the timer's own pass (retryOnTimer) is run
// at the moment the test chooses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { addObjectSource, coldTrioWithObjectSource, putDamagedObjectRecord, replacePoolDir, shardsPresentOn, type ListedRebuild } from './helpers/rebuild.js';
import { stderrLines } from './helpers/stderr.js';

/** Listed first (interrupted), its retry always throws. */
const FAILING = 'cold-1';
/** Listed second: a retry of the volume its rebuild skipped. */
const WAITING = 'cold-2';
const STRIPES = 8;
/** a and b: two stripes each (coldPairWithHot1Offline); c: STRIPES. */
const VOLUMES = ['a', 'b', 'c'];
const ALL = 2 + 2 + STRIPES;

test("a pool whose retry always throws does not starve the timer's retry of the pools after it", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-retry-independent-', () => m!);
  m = await openColdTierManager(dir);
  // a (journal on hot-1) and b; hot-1 back for now. c beside the S3 object source.
  const pair = await coldTrioWithObjectSource(t, m, dir, STRIPES, { hot1Back: true });
  m = pair.m;
  const want = pair.want;

  // cold-1 lost: its rebuild lands every volume's shard, then throws on the damaged object record: listed interrupted.
  await putDamagedObjectRecord(m);
  replacePoolDir(dir, FAILING);
  await assert.rejects(m.cold!.reconstructor.rebuildPool(FAILING), 'the listing of the object stripes throws on the damaged record');
  assert.deepEqual(await shardsPresentOn(m, FAILING, VOLUMES), { present: ALL, stripes: ALL });

  // A restart with hot-1 gone (a cannot be opened), then cold-2 lost and rebuilt with the record sound: all but a.
  await m.close();
  fs.renameSync(pair.hot1, `${pair.hot1}.gone`);
  m = await openColdTierManager(dir, false);
  addObjectSource(t, m);
  const r = m.cold!.reconstructor;
  const removeDamaged = await putDamagedObjectRecord(m); // still there: its remover on this index
  await removeDamaged();
  replacePoolDir(dir, WAITING);
  const first = await r.rebuildPool(WAITING);
  assert.equal(first.complete, false, JSON.stringify(first));
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  const interrupted: ListedRebuild = { pool: FAILING, volumesSkipped: [], notRebuilt: 1, interrupted: true };
  assert.deepEqual(r.incompleteRebuilds(), [interrupted, { pool: WAITING, volumesSkipped: ['a'], notRebuilt: 0 }], 'cold-1 comes first in the pass');

  // The fault back for good, and hot-1 back: a opens, so cold-2's retry has work; cold-1's retry throws.
  await putDamagedObjectRecord(m);
  fs.renameSync(`${pair.hot1}.gone`, pair.hot1);
  assert.deepEqual(await shardsPresentOn(m, WAITING, ['a']), { present: 0, stripes: 2 }, "a's cold-2 shards are missing before the timer's pass");

  const failuresBefore = r.timerFailures;
  const rebuiltBefore = r.rebuiltStripes;
  const { lines } = await stderrLines(async () => {
    await r.retryOnTimer();
    assert.deepEqual(await shardsPresentOn(m!, WAITING, ['a']), { present: 2, stripes: 2 }, "the timer's pass rebuilt a's cold-2 shards");
    assert.deepEqual(r.incompleteRebuilds(), [interrupted], 'cold-2 rebuilt by the pass; cold-1 still listed');
    // The next interval retries cold-1 alone, and it fails the same way.
    await r.retryOnTimer();
  });
  assert.equal(r.rebuiltStripes - rebuiltBefore, 2, "a's two stripes, by cold-2's retry");
  assert.deepEqual(r.incompleteRebuilds(), [interrupted], 'cold-1 stays listed: retried next interval');
  assert.deepEqual(m.meta.incompleteRebuilds.get(FAILING), { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' });
  assert.equal(m.meta.incompleteRebuilds.get(WAITING), undefined, "cold-2's record is gone from the index");
  assert.equal(r.timerFailures - failuresBefore, 2, "cold-1's failure counted at each pass");
  assert.equal(r.poolRetryFailures, 2);
  const named = lines.filter((l) => l.includes('retry of an incompletely rebuilt pool failed') && l.includes(`pool=${FAILING}`));
  assert.equal(named.length, 1, `logged once, naming the pool, not at every interval:\n${lines.join('\n')}`);
  assert.equal(lines.filter((l) => l.includes('scheduled retry pass failed')).length, 0, 'the pass itself did not fail');

  // Every stripe of every volume has its cold-2 shard (read back: header identity), and the scrub finds every stripe whole.
  assert.deepEqual(await shardsPresentOn(m, WAITING, VOLUMES), { present: ALL, stripes: ALL });
  const scrubbed = await r.scrub({ rateLimited: false });
  assert.equal(scrubbed.stripesChecked, ALL);
  assert.equal(scrubbed.badStripes, 0);

  // The fault removed: the next pass completes cold-1 too.
  await removeDamaged();
  await r.retryOnTimer();
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.equal(r.timerFailures - failuresBefore, 2);

  // k = 4 survivors with the two other pools gone (a restart: nothing cached): the rebuilt shards carry every read.
  await m.close();
  for (const p of ['cold-0', 'cold-5']) fs.renameSync(path.join(dir, p), path.join(dir, `${p}.gone`));
  m = await openColdTierManager(dir, false);
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `${name} reads back byte-exact with cold-0 and cold-5 lost`);
});
