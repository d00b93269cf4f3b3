// Review of da7f162: the retry timer logs a pool's failing retry once per
// distinct error, and forgets what it logged for a pool when the pool leaves
// the list. It forgot only at the end of a pass that found the list non-empty:
// a pool whose only listing ended by an operator's rebuild (the list empty
// after it) kept its logged errors for good. The same fault back later (the
// pool lost again, its rebuild cut by it, listed again) then failed every
// retry silently: the pool stayed listed at reduced redundancy with no line
// saying why, while the first time the same fault was logged. In process: real
// manager, stripe store, segment files, LMDB index, Reconstructor; the fault is
// real (a damaged S3 object record in the index); the timer's own pass
// (retryOnTimer) is run at the moment the test chooses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { coldTrioWithObjectSource, coldVolumeWithObjectSource, putDamagedObjectRecord, replacePoolDir, shardsPresentOn, type ListedRebuild } from './helpers/rebuild.js';
import { stderrLines } from './helpers/stderr.js';

const POOL = 'cold-1';
const STRIPES = 4;
const FAILED_LINE = 'retry of an incompletely rebuilt pool failed';

test("a pool listed again after an operator's rebuild emptied the list has its retry's failure logged again", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-retry-log-cleared-', () => m!);
  m = await openColdTierManager(dir);
  const want = await coldVolumeWithObjectSource(t, m, STRIPES);
  const r = m.cold!.reconstructor;
  const interrupted: ListedRebuild = { pool: POOL, volumesSkipped: [], notRebuilt: 1, interrupted: true };
  const failedLines = async (): Promise<string[]> => {
    const { lines } = await stderrLines(() => r.retryOnTimer());
    return lines.filter((l) => l.includes(FAILED_LINE) && l.includes(`pool=${POOL}`));
  };

  // cold-1 lost; its rebuild stops on the damaged object record: listed interrupted, and the timer's retry fails (logged).
  let removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, POOL);
  await assert.rejects(r.rebuildPool(POOL), 'the listing of the object stripes throws on the damaged record');
  assert.deepEqual(r.incompleteRebuilds(), [interrupted]);
  assert.equal((await failedLines()).length, 1, "the timer's failing retry is logged");
  assert.equal(r.poolRetryFailures, 1);

  // The fault removed; the operator rebuilds cold-1 (not the timer): complete, the list is empty.
  await removeDamaged();
  const fixed = await r.rebuildPool(POOL);
  assert.equal(fixed.complete, true, JSON.stringify(fixed));
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.equal((await failedLines()).length, 0, 'nothing listed: nothing retried');

  // Later the same fault is back and cold-1 is lost again: listed interrupted again, and the timer's retry fails the same way.
  removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, POOL);
  await assert.rejects(r.rebuildPool(POOL));
  assert.deepEqual(r.incompleteRebuilds(), [interrupted]);
  const again = await failedLines();
  assert.equal(r.poolRetryFailures, 2, 'the retry failed again');
  assert.equal(again.length, 1, 'the failure of the pool listed anew is logged (it was silent: the error was remembered from its earlier listing)');
  assert.equal((await failedLines()).length, 0, 'and once: not at every interval');

  // The fault removed: the timer's next pass rebuilds cold-1 and the volume reads back from its shards.
  await removeDamaged();
  await r.retryOnTimer();
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.deepEqual(await shardsPresentOn(m, POOL, ['c']), { present: STRIPES, stripes: STRIPES });
  assert.ok((await readVolume(m.openVolume('c'), 0, want.length)).equals(want), 'c reads back byte-exact');
});

test("a pool's retry failing again after an operator's rebuild of it finished is logged again, though the pool never left the list", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-retry-log-cleared-op-', () => m!);
  m = await openColdTierManager(dir);
  // a (journal on hot-1, offline now: a cannot be opened) and b; c beside the S3 object source.
  const pair = await coldTrioWithObjectSource(t, m, dir, STRIPES, { hot1Back: false });
  m = pair.m;
  const want = pair.want;
  const r = m.cold!.reconstructor;
  const failedLines = async (): Promise<string[]> => {
    const { lines } = await stderrLines(() => r.retryOnTimer());
    return lines.filter((l) => l.includes(FAILED_LINE) && l.includes(`pool=${POOL}`));
  };

  // cold-1 lost; its rebuild stops on the damaged object record: listed interrupted, the timer's retry fails (logged).
  let removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, POOL);
  await assert.rejects(r.rebuildPool(POOL));
  assert.equal((await failedLines()).length, 1, "the timer's failing retry is logged");

  // The fault removed; the operator's rebuild of cold-1 finishes, skipping a: cold-1 stays listed (not interrupted).
  await removeDamaged();
  const fixed = await r.rebuildPool(POOL);
  assert.deepEqual(fixed.volumesSkipped.map((u) => u.volume), ['a'], JSON.stringify(fixed));
  assert.deepEqual(r.incompleteRebuilds(), [{ pool: POOL, volumesSkipped: ['a'], notRebuilt: 0 }]);

  // Later the fault is back, cold-1 is lost again and hot-1 is back: the retry (of a, made whole-pool: the store
  // changed) stops on the same record. The fault went away and came back: its failure is news.
  removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, POOL);
  fs.renameSync(`${pair.hot1}.gone`, pair.hot1);
  const failuresBefore = r.poolRetryFailures;
  const again = await failedLines();
  assert.equal(r.poolRetryFailures - failuresBefore, 1, 'the retry failed');
  assert.equal(again.length, 1, 'logged (it was silent: the error was remembered from before the rebuild that got past it)');
  assert.equal((await failedLines()).length, 0, 'and once: not at every interval');

  // The fault removed: the timer's next pass rebuilds cold-1 whole; every volume reads back.
  await removeDamaged();
  await r.retryOnTimer();
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.deepEqual(await shardsPresentOn(m, POOL, ['a', 'b', 'c']), { present: 2 + 2 + STRIPES, stripes: 2 + 2 + STRIPES });
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `${name} reads back byte-exact`);
});
