// The scrub timer's pass opens every volume (allVolumes). One that cannot be
// opened (its hot pool's directory gone, as when a disk drops out) failed the
// pass, and from the timer that rejection was unhandled: the daemon ended.
// Now the pass skips that volume (named in its report, see
// offline-volume-scrub) and resolves; once the pool is back the scrub takes
// it too and finds the stripes whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldVolumeOnHot1, openColdTierManager, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a scheduled scrub over a volume that cannot be opened is logged and retried, not a crash', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-scrub-unopenable-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await writeVolume(m.openVolume('a'), 0, crypto.randomBytes(2 * MiB));
  await m.cold!.destager.drain();
  // A restart: volume a is not open until something opens it.
  await m.close();
  m = await openColdTierManager(dir, false);
  fs.renameSync(hot1, `${hot1}.gone`);
  const r = m.cold!.reconstructor;
  // What the timer ran: the pass skips the volume (naming its pool) and resolves.
  const skipped = await r.scrub({ rateLimited: false });
  assert.deepEqual(skipped.volumesSkipped.map((u) => `${u.volume}@${u.pool}`), ['a@hot-1']);
  await r.scrubOnTimer();
  assert.equal(r.timerFailures, 0);
  fs.renameSync(`${hot1}.gone`, hot1);
  await r.scrubOnTimer();
  assert.equal(r.timerFailures, 0, 'the pass after the pool came back succeeded');
  const report = await r.scrub({ rateLimited: false });
  assert.equal(report.stripesChecked, 2);
  assert.equal(report.badStripes, 0);
});
