// Review of 60c6d9e: a cold pool whose directory is a mount point, its disk
// replaced by a new one (`umount -l`, a new file system mounted there,
// `pools replace`). A fresh file system's root has the same inode number as
// the last one's (tmpfs: 1; ext4: 2), so the stripe store, which told a
// replaced directory by its inode alone, kept the old disk's segment store:
// the rebuild found every shard "present" on the old disk (still readable
// through its open descriptors), rebuilt nothing onto the new one and
// answered complete, which also ends the object store's distrust of the pool
// (objects/pool-disks.ts). After a restart the pool held nothing. The store
// is now told apart by device, inode and birth time (as Pool.isOnline tells
// its directory). Root only (mounts); in process: real manager, stripe store,
// segment files on tmpfs, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const LOST = 'cold-2';

/** Bytes of the files under `dir` (recursively; 0: no such directory). */
function bytesUnder(dir: string): number {
  let sum = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) sum += fs.statSync(path.join(e.parentPath, e.name)).size;
  return sum;
}

test('a cold pool on a mount point whose disk is replaced by a new file system: the rebuild lands on the new disk, not the old one', { skip: process.getuid?.() !== 0 ? 'needs root (tmpfs mounts)' : false }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rebuild-same-inode-'));
  const mnt = path.join(dir, LOST);
  const mount = () => execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt], { stdio: 'pipe' });
  let m: VolumeManager | null = null;
  let mounted = false;
  t.after(async () => {
    await m?.close().catch(() => undefined);
    // Lazy: the old disk's file system goes with the last descriptor.
    if (mounted) execFileSync('umount', ['--lazy', mnt], { stdio: 'pipe' });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.mkdirSync(mnt);
  mount();
  mounted = true;
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'a', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const want = crypto.randomBytes(2 * MiB);
  await writeVolume(m.openVolume('a'), 0, want);
  await m.cold!.destager.drain();
  assert.ok(bytesUnder(mnt) > 0, "a's shards are on the first disk");
  const ino = fs.statSync(mnt).ino;

  // The disk goes (detached while the daemon still holds its files), a new one is mounted there and replaced.
  execFileSync('umount', ['--lazy', mnt], { stdio: 'pipe' });
  mount();
  assert.equal(fs.statSync(mnt).ino, ino, 'the new file system root has the same inode number');
  await m.replacePool(LOST);
  const report = await m.cold!.reconstructor.rebuildPool(LOST);
  assert.equal(report.stripesRebuilt, 2, `a's two shards rebuilt: ${JSON.stringify(report)}`);
  assert.equal(report.complete, true);
  assert.ok(bytesUnder(path.join(mnt, 'segments')) >= 2 * (MiB / 4), 'the rebuilt records are on the new disk');

  // A restart: every shard is where the index says.
  await m.close();
  m = await openColdTierManager(dir, false);
  const scrub = await m.cold!.reconstructor.scrub({ rateLimited: false });
  assert.equal(scrub.stripesChecked, 2);
  assert.equal(scrub.badStripes, 0, `no stripe lacks its ${LOST} shard`);
  assert.ok((await readVolume(m.openVolume('a'), 0, want.length)).equals(want));
});
