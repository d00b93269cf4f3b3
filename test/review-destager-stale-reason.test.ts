// The journal's stalledReason is what a full journal's ENOSPC names as the
// cause: once a full destage pass skips and fails nothing, the old reason (a
// pool that was offline and is back) must not be named any more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldVolumeOnHot1, openColdTierManager, tempDirClosing, writeVolume } from './helpers/volume.js';

test('a full pass that skips and fails nothing clears the stalled reason a pool outage left', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-destager-stale-reason-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await writeVolume(m.openVolume('a'), 0, crypto.randomBytes(4096));
  const id = m.meta.volumes.get('a')!.id;
  // A restart: a's record is replayed, a is not open.
  await m.close();
  m = await openColdTierManager(dir, false);
  const journal = m.cold!.journal;
  const d = m.cold!.destager;

  fs.renameSync(hot1, `${hot1}.gone`);
  await d.kick();
  assert.deepEqual(journal.dirtyChunks(id), [0]);
  assert.match(journal.stalledReason ?? '', /cannot be opened.*hot-1/);

  fs.renameSync(`${hot1}.gone`, hot1);
  await d.kick();
  assert.deepEqual(journal.dirtyChunks(id), [], 'a is destaged once its pool is back');
  assert.equal(journal.stalledReason, null, 'nothing is stalled any more: a full journal must not name the old outage');
});
