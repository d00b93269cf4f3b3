// `couchestor hardware scan` (the real CLI) on a sysfs tree with a link loop
// among the block and NVMe class entries: the loop is skipped, the other
// disks are reported, exit 0. Before, realpath's ELOOP ended the whole scan
// ("couchestor: ELOOP: too many symbolic links encountered", exit 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './helpers/daemon.js';
import type { HardwareReport } from '../src/control/hardware/index.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/sysfs/root', import.meta.url));

test('a link loop in class/block and class/nvme is skipped; the other disks are listed', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hw-odd-tree-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const root = path.join(dir, 'sys');
  fs.cpSync(FIXTURE, root, { recursive: true, verbatimSymlinks: true });
  fs.symlinkSync('sdz', path.join(root, 'class', 'block', 'sdz')); // points at itself
  fs.symlinkSync('nvme9', path.join(root, 'class', 'nvme', 'nvme9'));
  const r = spawnSync(process.execPath, [CLI, 'hardware', 'scan', '--json', '--no-smart', '--sys-root', root], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as HardwareReport;
  assert.deepEqual(report.disks.map((d) => d.name), ['nvme0n1', 'nvme0n2', 'sda', 'sdb']);
});
