// A whole-pool rebuild whose `running` record cannot be written to the index
// lands nothing on the pool and fails naming the pool and the cause: an
// operator's POST /v1/rebuild gets it (500), the retry timer's rebuild of a
// pool listed interrupted throws it (logged, retried next interval) and the
// pool stays listed. Once the index takes writes, the same calls rebuild the
// pool. Before the fix the rebuild carried on without its record: a crash
// during it then left the pool unlisted, read as rebuilt.
//
// The fault is the one LMDB commit failing, injected at the store's put for
// the rebuild-incomplete db and the lost pool's key (the real put for every
// other write). Why not a real full file system under the index: LMDB reuses
// its freed pages, so a small commit on a full tmpfs goes through (tried: an
// 8 MiB tmpfs filled to ENOSPC took three puts of this record), and the
// faults that do fail it (a file-size limit, EIO) hit the shard writes this
// test watches as well. Everything else is real: manager, stripe store,
// segment files, LMDB index, Reconstructor and the admin API.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { buildApi } from '../src/control/api.js';
import { openColdTierManager, tempDirClosing } from './helpers/volume.js';
import { coldVolumeWithObjectSource, putDamagedObjectRecord, replacePoolDir, type ListedRebuild } from './helpers/rebuild.js';

const LOST = 'cold-2';
const STRIPES = 8;

/** The index commit of LOST's rebuild-incomplete record fails (ENOSPC), until the returned function is called. */
function failRunningRecord(t: TestContext, m: VolumeManager): () => void {
  const db = m.meta.incompleteRebuilds;
  const realPut = db.put;
  let failing = true;
  t.mock.method(db, 'put', function (this: typeof db, key: string, ...rest: unknown[]) {
    if (failing && key === LOST) return Promise.reject(Object.assign(new Error('ENOSPC: no space left on device (index commit)'), { code: 'ENOSPC' }));
    return (realPut as (...a: unknown[]) => Promise<boolean>).call(this, key, ...rest);
  });
  return () => (failing = false);
}

/** Bytes of every file under cold pool LOST's directory: what a rebuild has landed there. */
function lostPoolBytes(dir: string): number {
  let bytes = 0;
  for (const rel of fs.readdirSync(path.join(dir, LOST), { recursive: true }) as string[]) {
    const st = fs.statSync(path.join(dir, LOST, rel));
    if (st.isFile() && rel !== '.couchestor-pool') bytes += st.size; // the pool identity is not a rebuild's
  }
  return bytes;
}

/** Stripes of volume c whose LOST shard is on the pool. */
async function shardsPresent(m: VolumeManager): Promise<number> {
  let present = 0;
  for (const [, ref] of m.openVolume('c').stripes) {
    const i = ref.shards.findIndex((s) => s.pool === LOST);
    assert.ok(i >= 0);
    if (await m.cold!.stripes.shardPresent(ref, i)) present++;
  }
  return present;
}

function assertNamesPoolAndCause(err: { name?: string; message?: string; error?: string }): void {
  assert.equal(err.name ?? err.error, 'PoolRebuildNotRecorded');
  assert.match(err.message ?? '', new RegExp(`pool ${LOST}\\b`));
  assert.match(err.message ?? '', /ENOSPC/);
}

test("an operator's whole-pool rebuild whose running record cannot be written lands nothing and answers 500 naming the pool and the cause", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-record-fails-', () => m!);
  m = await openColdTierManager(dir);
  await coldVolumeWithObjectSource(t, m, STRIPES);
  const r = m.cold!.reconstructor;
  replacePoolDir(dir, LOST);
  const indexTakesWrites = failRunningRecord(t, m);

  const app = buildApi(m);
  t.after(() => app.close());
  const res = await app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: LOST } });
  assert.equal(res.statusCode, 500, res.body);
  assertNamesPoolAndCause(res.json());
  // Before: 200, complete, every shard landed with no record saying a rebuild ran.
  assert.equal(lostPoolBytes(dir), 0, 'the failed rebuild wrote to the pool');
  assert.equal(await shardsPresent(m), 0);
  assert.equal(r.rebuildRunning(), null);
  assert.equal(r.incompleteWriteFailures, 1);
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined);

  indexTakesWrites();
  const again = await app.inject({ method: 'POST', url: '/v1/rebuild', payload: { pool: LOST } });
  assert.equal(again.statusCode, 200, again.body);
  assert.equal(again.json().complete, true, again.body);
  assert.equal(await shardsPresent(m), STRIPES);
});

test("the retry timer's rebuild of a pool listed interrupted, whose running record cannot be written, lands nothing, throws naming the pool, and leaves it listed", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-record-fails-timer-', () => m!);
  m = await openColdTierManager(dir);
  await coldVolumeWithObjectSource(t, m, STRIPES);
  const r = m.cold!.reconstructor;

  // Listed interrupted: a first whole-pool rebuild failed part way (a damaged object record, as in rebuild-failure-listed).
  const removeDamaged = await putDamagedObjectRecord(m);
  replacePoolDir(dir, LOST);
  await assert.rejects(r.rebuildPool(LOST), TypeError);
  await removeDamaged();
  const interrupted: ListedRebuild = { pool: LOST, volumesSkipped: [], notRebuilt: 1, interrupted: true };
  assert.deepEqual(r.incompleteRebuilds(), [interrupted]);
  // The pool lost again, empty: what the timer's retry lands shows.
  replacePoolDir(dir, LOST);

  const indexTakesWrites = failRunningRecord(t, m);
  await assert.rejects(r.retrySkippedVolumes(), (err: Error) => (assertNamesPoolAndCause(err), true));
  // Before: the retry rebuilt the pool with no running record (and answered complete).
  assert.equal(lostPoolBytes(dir), 0, "the timer's failed rebuild wrote to the pool");
  assert.equal(await shardsPresent(m), 0);
  assert.deepEqual(r.incompleteRebuilds(), [interrupted], 'still listed: retried next interval');
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' });

  // The timer's step itself logs it and counts a failure (onTimer), and the next interval rebuilds the pool.
  const failuresBefore = r.timerFailures;
  await r.retryOnTimer();
  assert.equal(r.timerFailures, failuresBefore + 1);
  assert.equal(lostPoolBytes(dir), 0);
  indexTakesWrites();
  const reports = await r.retrySkippedVolumes();
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.complete, true, JSON.stringify(reports[0]));
  assert.equal(await shardsPresent(m), STRIPES);
  assert.deepEqual(r.incompleteRebuilds(), []);
});
