// Review of 60c6d9e: a cold pool replaced (`pools replace`, a new uuid) while
// its whole-pool rebuild runs. The run lands on the store it started with;
// stripes that already held their shard on the disk being replaced
// (written there since the previous replacement) were passed over as
// present, and are gone with it. The run must not answer complete and drop
// the pool's entry (which also erased the one `pools replace` had just
// written): the pool stays listed as interrupted, and the retry timer's pass
// rebuilds it whole onto the new disk. In process: real manager, stripe store,
// segment files, LMDB index and Reconstructor; the replacement lands while the
// run's first group is held (helpers/rebuild holdNextRebuildGroup).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';
import { holdNextRebuildGroup, replacePoolDir } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

async function coldVolume(m: VolumeManager, name: string): Promise<Buffer> {
  await m.createVolume({ name, sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const bytes = crypto.randomBytes(2 * MiB);
  await writeVolume(m.openVolume(name), 0, bytes);
  await m.cold!.destager.drain();
  return bytes;
}

test('a cold pool replaced while its whole-pool rebuild runs: not complete, listed as interrupted (memory and index), and the retry rebuilds it whole onto the new disk', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rebuild-replaced-mid-run-', () => m!);
  m = await openColdTierManager(dir);
  const want = new Map<string, Buffer>();
  // b: written before cold-2's first replacement (its shards there are lost); a: after it (its shards are on the
  // first new disk). a's turn comes first: found present there, passed over, before the run reaches b's group.
  want.set('b', await coldVolume(m, 'b'));
  replacePoolDir(dir, LOST);
  want.set('a', await coldVolume(m, 'a'));
  const r = m.cold!.reconstructor;

  const held = holdNextRebuildGroup(m);
  const running = r.rebuildPool(LOST);
  await held.reached;
  // The first new disk dies too; another empty one is mounted and `pools replace` run (the API: replace, then rebuild).
  fs.rmSync(path.join(dir, LOST), { recursive: true });
  fs.mkdirSync(path.join(dir, LOST));
  await m.replacePool(LOST);
  const asked = r.rebuildPool(LOST);
  held.release();
  const [report, answer] = await Promise.all([running, asked]);
  const summary = JSON.stringify({ complete: report.complete, stripesChecked: report.stripesChecked, stripesRebuilt: report.stripesRebuilt, notRebuilt: report.notRebuilt });
  assert.equal(report.complete, false, `a's shards on the replaced disk are gone: ${summary}`);
  assert.equal(answer.complete, false, "pools replace's answer");
  assert.deepEqual(r.incompleteRebuilds(), [{ pool: LOST, volumesSkipped: [], notRebuilt: 1, interrupted: true }]);
  assert.deepEqual(m.meta.incompleteRebuilds.get(LOST), { volumesSkipped: [], notRebuilt: 1, state: 'interrupted' }, 'the entry is in the index (a restart keeps it)');

  // The retry timer's pass: a whole-pool rebuild onto the new disk.
  const retries = await r.retrySkippedVolumes();
  assert.equal(retries.length, 1);
  assert.equal(retries[0]!.complete, true, JSON.stringify(retries[0]));
  assert.equal(retries[0]!.retryOfSkipped, false, 'the whole pool');
  assert.deepEqual(r.incompleteRebuilds(), []);
  const whole = await r.scrub({ rateLimited: false });
  assert.equal(whole.stripesChecked, 4);
  assert.equal(whole.badStripes, 0, `no stripe lacks its ${LOST} shard`);
  for (const [name, bytes] of want) assert.ok((await readVolume(m.openVolume(name), 0, bytes.length)).equals(bytes), `volume ${name} reads back`);
});
