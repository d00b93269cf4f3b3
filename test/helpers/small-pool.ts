// Full-disk fixtures for a daemon: a pool directory on a small tmpfs (journal.ts's tinyFileSystem, the
// `mount` kind: the daemon is another process, so root), filled to a chosen free space with a filler file
// the test can delete to free it again.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { tinyFileSystem } from './journal.js';

export interface SmallDisk {
  /** A directory on it for a pool (as README advises: not the mount point itself). */
  poolDir: string;
  /** Bytes free on it now (statfs). */
  freeBytes(): number;
  /** Writes a filler file so that exactly `bytes` stay free (a multiple of 4 KiB). */
  leaveFree(bytes: number): void;
  /** Deletes the filler file: its space is free again. */
  freeFiller(): void;
}

/** A tmpfs of `sizeBytes` (temp dir `prefix`...) with `pool/` in it; lazily unmounted and removed when `t` ends. */
export async function smallDisk(t: TestContext, prefix: string, sizeBytes: number): Promise<SmallDisk> {
  const tiny = await tinyFileSystem(t, sizeBytes, prefix);
  assert.equal(tiny.kind, 'mount', `needs a tmpfs the daemon (another process) sees (run as root); got ${tiny.kind}`);
  const poolDir = path.join(tiny.dir, 'pool');
  fs.mkdirSync(poolDir);
  const filler = path.join(tiny.dir, 'pool-filler');
  const freeBytes = () => {
    const s = fs.statfsSync(tiny.dir);
    return s.bavail * s.bsize;
  };
  return {
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
