// The refused-punch tests' fixture: a temp dir whose hot-0/volumes is a fresh ramfs mount (fallocate PUNCH_HOLE answers EOPNOTSUPP); needs root (mount).
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

/**
 * A temp dir named `prefix`... whose hot-0/volumes is a fresh ramfs mount
 * (mounted over the pool's volumes/ directory: statfs of the pool directory
 * stays the disk's, so the pool has room); when `t` ends, closes `current()`
 * (a close that fails is ignored), unmounts and removes it all.
 */
export function ramfsHotPoolDir(t: TestContext, prefix: string, current: () => { close(): Promise<unknown> } | null): { dir: string; volumesDir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const volumesDir = path.join(dir, 'hot-0', 'volumes');
  let mounted = false;
  t.after(async () => {
    await current()?.close().catch(() => undefined);
    if (mounted) run('umount', [volumesDir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fs.mkdirSync(volumesDir, { recursive: true });
  run('mount', ['-t', 'ramfs', '-o', 'mode=0755', 'couchestor-test-ramfs', volumesDir]);
  mounted = true;
  return { dir, volumesDir };
}
