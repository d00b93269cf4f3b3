// finishInterruptedReleases (run at every daemon start) and `volumes release`
// delete a volume's file on pools the volume does not have open, by path. A
// pool renamed in the configuration keeps its old record in the index (pool
// records are never removed), so two pool names then name one directory;
// the volume's live file, open under the old name, must not be deleted as a
// "leftover" of the new one: every flushed byte must survive the restart.
// Nor a copy preservation mode kept under the old name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { flushedRandomVolume, openColdTierManager, readVolume, restartManager, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;

for (const how of ['renamed (same path)', 'a symlink to the same directory'] as const) {
  test(`a start with a hot pool ${how} beside the old one keeps every volume's live file`, async (t) => {
    let m: VolumeManager | null = null;
    const dir = tempDirClosing(t, 'couchestor-pool-alias-', () => m!);
    m = await openColdTierManager(dir);
    const written = await flushedRandomVolume(m, 'v', 4 * MiB);
    let vol = written.vol;
    const want = written.want;
    const hot = m.pools.get('hot-0')!;
    const file = hot.volumeFile(vol.rec.id);
    assert.deepEqual(m.meta.volumes.get('v')!.keptFilePools, []);

    // The next start, as openManager registers the configured pools: the
    // operator renamed hot-0 (or reached its directory through a link).
    await m.close();
    m = await openColdTierManager(dir, false);
    let aliasPath = hot.rec.path;
    if (how !== 'renamed (same path)') {
      aliasPath = path.join(dir, 'hot-link');
      fs.symlinkSync(hot.rec.path, aliasPath);
    }
    await m.putPool({ name: 'hot-a', path: aliasPath, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
    const r = await m.finishInterruptedReleases();
    assert.ok(fs.existsSync(file), `the volume's live file was deleted as a leftover (${JSON.stringify(r)})`);
    assert.deepEqual(r, { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
    // `volumes release` goes through the same delete.
    await m.releasePreserved('v');
    assert.ok(fs.existsSync(file), 'the volume\'s live file was deleted by `volumes release`');

    ({ m, vol } = await restartManager(m, dir, 'v'));
    assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want), 'flushed data reads back after the restart');
  });
}

test("a start with a pool renamed beside the old one keeps a copy preservation mode kept on it", async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-pool-alias-kept-', () => m!);
  m = await openColdTierManager(dir);
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  const { vol, want } = await flushedRandomVolume(m, 'v', 4 * MiB);
  await migrateVolume(m, 'v', 'warm', { preserve: true });
  const hot = m.pools.get('hot-0')!;
  const kept = hot.volumeFile(vol.rec.id);
  assert.deepEqual(m.meta.volumes.get('v')!.keptFilePools, ['hot-0']);
  assert.ok(fs.readFileSync(kept).equals(want));

  await m.close();
  m = await openColdTierManager(dir, false);
  await m.putPool({ name: 'hot-a', path: hot.rec.path, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  await m.finishInterruptedReleases();
  assert.ok(fs.existsSync(kept), 'the copy preservation mode kept was deleted as a leftover of the renamed pool');
  assert.ok(fs.readFileSync(kept).equals(want));
});

test('a move onto a pool whose directory is the placement pool\'s (renamed and labelled warm) fails and loses nothing', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-pool-alias-move-', () => m!);
  m = await openColdTierManager(dir);
  const written = await flushedRandomVolume(m, 'v', 4 * MiB);
  let vol = written.vol;
  const want = written.want;
  const hotPath = m.pools.get('hot-0')!.rec.path;
  await m.close();
  m = await openColdTierManager(dir, false);
  await m.putPool({ name: 'warm-x', path: hotPath, tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  vol = m.openVolume('v');
  // The move's target file is the volume's own placement file: opening it
  // as a fresh target (O_TRUNC) would empty it under every chunk.
  await assert.rejects(migrateVolume(m, 'v', 'warm', { preserve: false }), /same file|same directory/);
  assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want), 'the volume reads back after the refused move');
  ({ m, vol } = await restartManager(m, dir, 'v'));
  assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want), 'and after a restart');
});
