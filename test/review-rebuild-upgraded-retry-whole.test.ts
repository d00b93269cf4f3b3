// Review of 93a2580 (GET /v1/cold rebuilding): the retry timer's retry of a
// pool's skipped volumes becomes a whole-pool rebuild when the pool's store
// is not the one the entry was made with (always, for an entry loaded after a
// restart). rebuildRunning() kept saying wholePool: false for that run, and an
// operator's whole-pool rebuild asked during it was chained behind it as a
// second whole-pool run of the same pool instead of sharing it. In process:
// real manager, stripe store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { IncompleteRebuildRecord } from '../src/dataplane/meta/store.js';
import { coldPairWithHot1Offline, openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const LOST = 'cold-2';

test("a timer retry upgraded to a whole-pool rebuild says so, and an operator's whole-pool rebuild shares it", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-upgraded-', () => m!);
  const pair = await coldPairWithHot1Offline(await openColdTierManager(dir), dir);
  m = pair.m;
  replacePoolDir(dir, LOST);
  assert.deepEqual((await m.cold!.reconstructor.rebuildPool(LOST)).volumesSkipped.map((u) => u.volume), ['a']);
  // A restart: the loaded entry's store is unknown, so its first retry is a whole-pool rebuild.
  await m.close();
  fs.renameSync(`${pair.hot1}.gone`, pair.hot1);
  m = await openColdTierManager(dir, false);
  const r = m.cold!.reconstructor;

  // The run records itself running (its whole-pool mark) once it has decided: the event to ask at.
  const db = m.meta.incompleteRebuilds;
  const realPut = db.put.bind(db);
  let markedRunning!: () => void;
  const marked = new Promise<void>((resolve) => (markedRunning = resolve));
  db.put = ((key: string, value: IncompleteRebuildRecord, ...rest: unknown[]) => {
    const done = (realPut as (...a: unknown[]) => Promise<boolean>)(key, value, ...rest);
    if (value.state === 'running') void done.then(() => markedRunning());
    return done;
  }) as typeof db.put;

  const timerRun = r.retrySkippedVolumes();
  await marked;
  assert.deepEqual(r.rebuildRunning(), { pool: LOST, wholePool: true, startedBy: 'timer', queued: null }, 'GET /v1/cold rebuilding: a whole-pool rebuild');
  const asked = r.rebuildPool(LOST);
  const [timerReports, report] = await Promise.all([timerRun, asked]);
  assert.equal(timerReports.length, 1);
  assert.equal(timerReports[0]!.retryOfSkipped, false);
  assert.equal(timerReports[0]!.complete, true, JSON.stringify(timerReports[0]));
  assert.equal(report, timerReports[0], "the operator's request shared the timer's whole-pool run (no second run)");
  assert.equal(r.rebuildRunning(), null);
  assert.deepEqual(r.incompleteRebuilds(), []);
  assert.equal((await r.scrub({ rateLimited: false })).badStripes, 0);
  for (const [name, bytes] of pair.want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);
});
