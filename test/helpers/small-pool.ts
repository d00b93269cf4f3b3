// Full-disk fixtures: a small tmpfs mounted in a temp dir as a pool's disk (needs root), filled to a
// chosen free space with a filler file the test can delete to free it again.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}`);
}

export interface SmallDisk {
  /** The mount point (a fresh tmpfs of sizeBytes). */
  mount: string;
  /** A directory inside it for a pool (as README advises: not the mount point itself). */
  poolDir: string;
  /** Bytes free on it now (statfs). */
  freeBytes(): number;
  /** Writes a filler file so that exactly `bytes` stay free (a multiple of 4 KiB). */
  leaveFree(bytes: number): void;
  /** Deletes the filler file: its space is free again. */
  freeFiller(): void;
}

/**
 * A tmpfs of `sizeBytes` mounted at a temp dir (`prefix`), with `pool/` in it. When `t` ends (any
 * outcome), once `beforeUnmount` (e.g. killing the daemon holding files there) has run: unmounted, removed.
 */
export function smallDisk(t: TestContext, prefix: string, sizeBytes: number, beforeUnmount: () => Promise<void> | void): SmallDisk {
  const mount = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  let mounted = false;
  t.after(async () => {
    try {
      await beforeUnmount();
    } finally {
      if (mounted) run('umount', ['-l', mount]);
      fs.rmSync(mount, { recursive: true, force: true });
    }
  });
  run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'couchestor-test-small', mount]);
  mounted = true;
  const poolDir = path.join(mount, 'pool');
  fs.mkdirSync(poolDir);
  const filler = path.join(mount, 'filler');
  const freeBytes = () => {
    const s = fs.statfsSync(mount);
    return s.bavail * s.bsize;
  };
  return {
    mount,
    poolDir,
    freeBytes,
    leaveFree(bytes) {
      assert.equal(bytes % 4096, 0);
      const fill = freeBytes() - bytes;
      assert.ok(fill >= 0, `only ${freeBytes()} bytes free, asked to leave ${bytes}`);
      fs.appendFileSync(filler, Buffer.alloc(fill));
      assert.equal(freeBytes(), bytes, 'the filler left the space asked');
    },
    freeFiller() {
      fs.rmSync(filler, { force: true });
    },
  };
}
