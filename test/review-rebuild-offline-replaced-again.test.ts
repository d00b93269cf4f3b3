// Review of 490b675/0397a75: the retry timer's rebuild of the volumes a
// pool rebuild skipped looks at those volumes alone. If the pool was lost
// and replaced again since that rebuild, every other volume's shards on it
// are gone again: the retry must not answer complete: true and drop the
// pool from incompleteRebuilds while they are missing. It rebuilds the
// whole pool instead. In process: real manager, stripe store, segment
// files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { readVolume } from './helpers/volume.js';
import { pairWithSkippedRebuild, replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

test('a pool replaced again after a rebuild that skipped a volume: the retry rebuilds the whole pool, not the skipped volume alone', async (t) => {
  // LOST is cold-2: lost, replaced and rebuilt by the helper.
  const { dir, m, r, hot1, want, first } = await pairWithSkippedRebuild(t, 'couchestor-review-rebuild-again-');

  assert.equal(first.complete, false);
  assert.deepEqual(first.volumesSkipped.map((u) => u.volume), ['a']);
  assert.equal(first.stripesRebuilt, 2, "b's two shards rebuilt");

  // The new disk fails too and is replaced: b's rebuilt shards are gone again. Then hot-1 is back.
  replacePoolDir(dir, LOST);
  fs.renameSync(`${hot1}.gone`, hot1);
  const retries = await r.retrySkippedVolumes();
  assert.equal(retries.length, 1);
  assert.equal(retries[0]!.stripesRebuilt, 4, "a's two and b's two (lost again) shards rebuilt");
  assert.equal(retries[0]!.complete, true, JSON.stringify(retries[0]));
  assert.deepEqual(r.incompleteRebuilds(), []);
  // Every shard of every stripe verifies: nothing is left missing on cold-2.
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0, 'no stripe lacks its cold-2 shard');
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);
});
