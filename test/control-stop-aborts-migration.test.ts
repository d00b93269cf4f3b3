// A daemon stopped (SIGTERM) while the control loop moves a big volume: the
// move is aborted at its next chunk, so the stop is prompt (before, it waited
// for the whole move: a pod's 60 s grace period ran out and the kubelet's
// SIGKILL cut it anyway). The volume is back on its old tier, every byte
// reads back, and the next move copies only what the aborted one had not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { bigMoveToColdUnderWay, nbdcopyOut, policyNamed, policyYaml, reconcile, sleep, volume, WINDOW_SETTLE_MS, writePolicy } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
// ~40 MB/s hot -> cold here (test/control-emergency-stop): the move takes several seconds.
const BIG_BYTES = 256 * MiB;

function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

test('SIGTERM mid-migration (hot -> cold, 256 MiB): the move is aborted at its next chunk, exit 0; the volume is hot again and reads back; the next move copies the rest only', { timeout: 300_000 }, async (t) => {
  const spec = { maxConcurrentMigrations: 1 };
  const started = await bigMoveToColdUnderWay(t, BIG_BYTES, spec);
  let d = started.d;
  const src = started.src;
  t.after(() => d.cleanup()); // the daemon restarted below
  const want = sha256(fs.readFileSync(src));
  // No move at the next start's first pass: what this one left is asserted first.
  writePolicy(d, 'tiering.yaml', policyYaml('tiering', { ...spec, enabled: false }));
  const sentMs = performance.now();
  assert.equal(await d.stop(), 0, d.stderr);
  const stopMs = performance.now() - sentMs;
  process.stdout.write(`# SIGTERM to exit mid-migration: ${stopMs.toFixed(0)} ms\n`);
  assert.match(d.stderr, /migration did not complete; old copy kept volume=big from=hot to=cold result=aborted /);

  const dataDir = d.dataDir;
  d = await TestDaemon.start({ dataDir });
  assert.equal((await volume(d, 'big')).tier, 'hot', 'the aborted move left the volume on its old tier');
  assert.equal(sha256(nbdcopyOut(d.exportUri('big'), src, BIG_BYTES)), want, 'every byte reads back (part from the stripes, part from the file)');

  // Enabled again: the move finishes, copying only the chunks the aborted one had not moved.
  writePolicy(d, 'tiering.yaml', policyYaml('tiering', spec));
  await sleep(WINDOW_SETTLE_MS); // the read back above made the volume busy for a window
  const done = policyNamed(await reconcile(d, true), 'tiering');
  const last = done.migrationHistory.at(-1)!;
  assert.equal(`${last.volume}:${last.from}->${last.to}:${last.result}`, 'big:hot->cold:succeeded', JSON.stringify(done.migrationHistory));
  assert.ok(last.bytesCopied > 0 && last.bytesCopied < BIG_BYTES, `bytes copied by the second move: ${last.bytesCopied}`);
  assert.equal((await volume(d, 'big')).tier, 'cold');
  assert.equal(sha256(nbdcopyOut(d.exportUri('big'), src, BIG_BYTES)), want);
  assert.equal(await d.stop(), 0);
});
