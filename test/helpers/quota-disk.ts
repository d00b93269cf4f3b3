// A pool directory over a quota that statfs does not show: writes fail with
// EDQUOT while the disk reads as having room. A btrfs subvolume with a qgroup
// limit, on a loop-mounted image (root; btrfs-progs, .ci/run installs it).
// tmpfs quotas need CONFIG_TMPFS_QUOTA and ext4's the v2 quota format, neither
// built into this kernel; btrfs qgroups need neither.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** btrfs' smallest default file system is ~110 MiB: the image is sparse, so this costs little. */
const IMAGE_BYTES = 128 * 1024 * 1024;

export interface QuotaDisk {
  /** The subvolume the quota limits (a pool directory goes in it). */
  poolDir: string;
  /** Bytes statfs says are free on it (the whole disk's: the quota is not in it). */
  freeBytes(): number;
  /** Sets the quota's limit (bytes of data and metadata, as btrfs counts them). */
  setLimit(bytes: number): void;
}

/** A btrfs of IMAGE_BYTES (temp dir `prefix`...) with quotas on and `pool/` a subvolume limited to `limitBytes`; unmounted and removed when `t` ends. */
export function quotaDisk(t: TestContext, prefix: string, limitBytes: number): QuotaDisk {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const image = path.join(dir, 'image');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, IMAGE_BYTES);
  let mounted = false;
  t.after(() => {
    // Lazy: a store the test did not close still holds descriptors; the loop device goes with the last (autoclear).
    if (mounted) execFileSync('umount', ['--lazy', mnt], { stdio: 'pipe' });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const run = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { stdio: 'pipe' });
  run('mkfs.btrfs', '-q', image);
  run('mount', '-o', 'loop', image, mnt);
  mounted = true;
  run('btrfs', 'quota', 'enable', mnt);
  const poolDir = path.join(mnt, 'pool');
  run('btrfs', 'subvolume', 'create', poolDir);
  const setLimit = (bytes: number) => run('btrfs', 'qgroup', 'limit', String(bytes), poolDir);
  setLimit(limitBytes);
  const freeBytes = () => {
    const s = fs.statfsSync(poolDir);
    return s.bavail * s.bsize;
  };
  assert.ok(freeBytes() > limitBytes, 'premise: statfs shows more room than the quota leaves');
  return { poolDir, freeBytes, setLimit };
}
