// The scrub pass goes over every volume. One that cannot be opened (its hot
// pool's directory gone, as when a disk drops out) is skipped and named in
// the report with its pool; the other volumes are still scrubbed and the
// timer's pass resolves as a success. Before, the whole pass failed at that
// volume, every interval, until the pool came back: nothing was scrubbed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldPairWithHot1Offline, openColdTierManager, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a scrub with one volume unopenable scrubs the others, names the skipped one, and its timer pass succeeds', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-offline-scrub-', () => m!);
  m = await openColdTierManager(dir);
  // a on hot-1, b on hot-0, destaged; a restart (neither volume open), then hot-1 drops out.
  const pair = await coldPairWithHot1Offline(m, dir);
  m = pair.m;
  const hot1 = pair.hot1;
  const r = m.cold!.reconstructor;

  const report = await r.scrub({ rateLimited: false });
  assert.equal(report.stripesChecked, 2, "b's two stripes are checked (a's two cannot be reached)");
  assert.equal(report.badStripes, 0);
  assert.equal(report.volumesSkipped.length, 1);
  assert.equal(report.volumesSkipped[0]!.volume, 'a');
  assert.equal(report.volumesSkipped[0]!.pool, 'hot-1');
  assert.equal(r.scrubVolumesSkipped, 1);
  assert.deepEqual(r.lastScrub, report, 'the pass finished and is the last scrub');

  // The timer's pass: a success (nothing to retry but a), the skip counted again.
  await r.scrubOnTimer();
  assert.equal(r.timerFailures, 0);
  assert.equal(r.scrubVolumesSkipped, 2);
  assert.equal(r.lastScrub!.stripesChecked, 2);

  // hot-1 is back: every stripe is scrubbed, none skipped.
  fs.renameSync(`${hot1}.gone`, hot1);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0);
  assert.deepEqual(whole.volumesSkipped, []);
});
