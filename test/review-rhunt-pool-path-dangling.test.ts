// A new pool whose path is a symbolic link to a directory that does not
// exist (the link made to a disk's mount point, the disk not mounted or the
// directory on it not made yet): serve died with a bare "ENOENT: no such file
// or directory, stat '.../hot-0'" (before 34707eb: "..., mkdir '.../hot-0'"),
// naming a path `ls` shows is there, and not the link's target. Now the
// error says the path is a symbolic link to its missing target.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI } from './helpers/daemon.js';

test('serve with a new pool path that is a dangling symbolic link: exits 1 naming the link and its missing target, makes nothing there', (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-path-dangling-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const target = path.join(dataDir, 'mnt', 'disk1', 'hot');
  const link = path.join(dataDir, 'hot-0');
  fs.symlinkSync(target, link);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), `demoVolume: null\npools:\n  - {name: hot-0, tier: hot, path: ${link}, capacity: auto}\n`);
  const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  assert.equal(r.status, 1, r.stderr);
  assert.ok(r.stderr.includes(`${link} is a symbolic link to ${target}, which does not exist`), r.stderr);
  assert.equal(fs.existsSync(path.join(dataDir, 'mnt')), false, 'nothing made at the target');
});
