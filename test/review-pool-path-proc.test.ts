// A pool path where mkdir answers ENOENT although the parent exists (a path
// mistyped into /proc or /sys): serve never started and never answered
// SIGTERM, one core at 100%. Node 20's recursive mkdir (ensureDurableDir)
// made the parent, found it there, and tried the child again, forever, on
// the event loop. Now the start fails at once naming the path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI } from './helpers/daemon.js';

test('serve with a pool path in /proc: exits 1 at once naming the path (no endless mkdir loop)', (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-path-proc-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const poolDir = `/proc/couchestor-${path.basename(dataDir)}/hot-0`;
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), `demoVolume: null\npools:\n  - {name: hot-0, tier: hot, path: ${poolDir}, capacity: auto}\n`);
  // SIGKILL: the looping build never runs its SIGTERM handler.
  const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { encoding: 'utf8', timeout: 15_000, killSignal: 'SIGKILL' });
  assert.equal(r.signal, null, `serve was still running after 15 s (killed):\n${r.stderr}`);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`ENOENT: no such file or directory, mkdir '${path.dirname(poolDir)}'`));
});
