// finishInterruptedReleases runs at every daemon start, before any front end serves. A pool
// directory it cannot read (here: `volumes` is a file, so stat gives ENOTDIR; on a real
// machine EIO or EACCES) must cost only that volume's clean-up, logged, not the start: the
// other volumes' leftovers are still released and every flushed byte reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { flushedRandomVolume, openColdTierManager, readVolume, restartManager, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a pool that cannot be read does not stop the start; other leftovers are released', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-finish-release-unreadable-', () => m!);
  m = await openColdTierManager(dir);
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  const { want } = await flushedRandomVolume(m, 'v', 4 * MiB);
  await migrateVolume(m, 'v', 'warm', { preserve: false });
  // A leftover the start must release: a non-preserving move's old hot file, as a kill
  // between SWITCH and RELEASE leaves it (the move released it: put it back).
  const hotFile = m.pools.get('hot-0')!.volumeFile(m.meta.volumes.get('v')!.id);
  assert.equal(fs.existsSync(hotFile), false);
  fs.writeFileSync(hotFile, Buffer.alloc(4096, 1));
  // A pool whose volumes/ cannot be read (stat of any file in it fails with ENOTDIR).
  const bad = path.join(dir, 'bad-0');
  fs.mkdirSync(bad);
  fs.writeFileSync(path.join(bad, 'volumes'), 'not a directory');
  await m.putPool({ name: 'bad-0', path: bad, tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  const r = await m.finishInterruptedReleases();
  // The unreadable pool fails the check for volume v (its stat runs for every pool): v's
  // clean-up waits for the next start, and the start goes on.
  assert.deepEqual(r, { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
  assert.ok(fs.existsSync(hotFile), 'v kept its leftover until a start that can read every pool');
  // With the pool readable again, the next start releases it.
  fs.rmSync(path.join(bad, 'volumes'));
  assert.deepEqual(await m.finishInterruptedReleases(), { filesRemoved: 1, filesTruncated: 0, bytesPunched: 0 });
  assert.equal(fs.existsSync(hotFile), false);
  let vol;
  ({ m, vol } = await restartManager(m, dir, 'v'));
  assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want), 'flushed data reads back');
});
