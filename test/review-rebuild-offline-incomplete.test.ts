// Review of 490b675/0397a75: a pool stays listed as not fully rebuilt
// (incompleteRebuilds) while any stripe still lacks its shard on it, not
// only while volumes are skipped. A rebuild that skipped a volume and also
// left a stripe of an open volume not rebuilt (notRebuilt), then the retry
// timer's rebuild of the skipped volume alone: that retry looks at nothing
// else, so it must not drop the pool or answer complete: true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { SHARD_HEADER_BYTES } from '../src/dataplane/ec/shard-record.js';
import { coldPairWithHot1Offline, openColdTierManager, tempDirClosing } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

test('a retry of the skipped volumes does not report the pool complete while a stripe the first rebuild left (notRebuilt) still lacks its shard', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-incomplete-', () => m!);
  m = await openColdTierManager(dir);
  const pair = await coldPairWithHot1Offline(m, dir);
  m = pair.m;
  const hot1 = pair.hot1;
  replacePoolDir(dir, LOST);
  // b's stripe 0 loses two more shards (a flipped payload byte each, on pools other than
  // cold-2): 3 good of 4+2, its cold-2 shard cannot be rebuilt.
  const bId = m.meta.volumes.get('b')!.id;
  const stripe0 = m.meta.chunks.get([bId, 0])!.stripe!;
  const others = stripe0.shards.filter((s) => s.pool !== LOST).slice(0, 2);
  assert.equal(others.length, 2);
  for (const s of others) {
    const file = path.join(dir, s.pool, 'segments', `seg-${String(s.segment).padStart(12, '0')}.cseg`);
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    const at = s.offsetBytes + SHARD_HEADER_BYTES + 100;
    fs.readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  }
  const r = m.cold!.reconstructor;

  const first = await r.rebuildPool(LOST);
  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.equal(first.notRebuilt, 1, "b's stripe 0 could not be rebuilt");
  assert.equal(first.stripesRebuilt, 1);
  assert.equal(r.incompleteRebuilds().length, 1);

  // hot-1 back: the timer's retry rebuilds a's two stripes, and only those.
  fs.renameSync(`${hot1}.gone`, hot1);
  const retries = await r.retrySkippedVolumes();
  assert.equal(retries.length, 1);
  assert.equal(retries[0]!.stripesRebuilt, 2);
  assert.equal(retries[0]!.complete, false, "b's stripe 0 still lacks its cold-2 shard: the pool is not complete");
  const left = r.incompleteRebuilds();
  assert.equal(left.length, 1, 'the pool stays listed as not fully rebuilt');
  assert.equal(left[0]!.pool, LOST);
  assert.deepEqual(left[0]!.volumesSkipped, []);
  assert.equal(left[0]!.notRebuilt, 1);
  // The timer again: nothing to retry, the entry stays (only a whole-pool rebuild clears it).
  await r.retryOnTimer();
  assert.equal(r.incompleteRebuilds().length, 1);
  // A whole-pool rebuild still cannot rebuild it: still listed.
  const again = await r.rebuildPool(LOST);
  assert.equal(again.complete, false);
  assert.equal(again.notRebuilt, 1);
  assert.equal(r.incompleteRebuilds()[0]!.notRebuilt, 1);
});
