// A daemon stopped (SIGTERM) while `couchestor volumes migrate` (the admin
// API) moves a big volume hot -> cold: the move is aborted at its next chunk
// as the control loop's are, the CLI prints "the daemon is stopping" (409),
// and the stop is prompt. Before, an API move ran to its end: a 100 GiB one
// held the stop for its whole copy until the kubelet's SIGKILL cut it. After
// a restart the volume is hot and reads back byte for byte; the move asked
// again completes, copying only what the aborted one had not moved. (Writes
// during such an abort, the same path for a move the loop started: test
// review-stop-migration-writes.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { CLI, nbdsh, TestDaemon } from './helpers/daemon.js';
import { cliJson, coldStatus, createVolume, nbdcopyIn, nbdcopyOut, randomFile, startControlDaemon, volume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const BIG_BYTES = 256 * MiB;

/** `couchestor volumes migrate NAME TIER` run in the background: its exit code and output. */
function migrateInBackground(dataDir: string, name: string, tier: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [CLI, 'volumes', 'migrate', name, tier, '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const reap = () => p.kill('SIGKILL');
  process.once('exit', reap);
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  p.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) =>
    p.once('close', (code) => {
      process.off('exit', reap);
      resolve({ code, stdout, stderr });
    }),
  );
}

test('SIGTERM during `couchestor volumes migrate big cold` (256 MiB): the move aborted, the CLI told the daemon is stopping, a prompt exit 0; after a restart big is hot and reads back, and the move asked again completes copying the rest only', { timeout: 120_000 }, async (t) => {
  // No policy: only the API moves anything.
  let d = await startControlDaemon({ policies: {} });
  t.after(() => d.cleanup());
  const bigId = (await createVolume(d, 'big', BIG_BYTES)).id;
  const src = path.join(d.dataDir, '..', `${path.basename(d.dataDir)}-big.bin`);
  t.after(() => fs.rmSync(src, { force: true }));
  randomFile(src, BIG_BYTES);
  nbdcopyIn(src, d.exportUri('big'));
  const base = fs.readFileSync(src);

  const migrate = migrateInBackground(d.dataDir, 'big', 'cold');
  const deadline = Date.now() + 60_000;
  while ((await coldStatus(d)).stripesWritten < 1) {
    assert.ok(Date.now() < deadline, 'the move striped no chunk in 60 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((await volume(d, 'big')).tier, 'cold', 'the move is under way when the stop comes');
  const sentMs = performance.now();
  assert.equal(await d.stop(), 0, d.stderr);
  const stopMs = performance.now() - sentMs;
  process.stdout.write(`# SIGTERM to exit: ${stopMs.toFixed(0)} ms\n`);

  const cli = await migrate;
  assert.equal(cli.code, 1, `the CLI: ${cli.stdout}${cli.stderr}`);
  const aborted = /^couchestor: the daemon is stopping: the migration of big to cold was aborted after (\d+) of \d+ chunks; big stays hot on its old copy/m.exec(cli.stderr);
  assert.ok(aborted, cli.stderr);
  // As an aborted move to cold of the loop's: the ranges of the chunks it striped are punched out of the hot file
  // (st_blocks also counts the file system's extent blocks, which the holes add: 64 KiB of slack).
  const file = path.join(d.dataDir, 'pools', 'hot-0', 'volumes', `${bigId}.dat`);
  const allocatedBytes = fs.statSync(file).blocks * 512;
  assert.ok(Number(aborted[1]) > 0 && allocatedBytes <= BIG_BYTES - Number(aborted[1]) * MiB + 64 * 1024, `${file}: ${allocatedBytes} bytes allocated after ${aborted[1]} chunks striped`);

  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.equal((await volume(d, 'big')).tier, 'hot', 'the aborted move left the volume on its old tier');
  assert.ok(nbdcopyOut(d.exportUri('big'), src, BIG_BYTES).equals(base), 'every byte reads back (part from the stripes, part from the file)');

  // Asked again: it completes, copying only what the aborted move had not.
  const done = cliJson<MigrationProgress>(d, 'volumes', 'migrate', 'big', 'cold');
  assert.equal(done.phase, 'Done');
  assert.ok(done.bytesCopied > 0 && done.bytesCopied < BIG_BYTES, `bytes copied by the second move: ${done.bytesCopied}`);
  // The whole copy's time at the rate the second move ran, in this test: without the abort, the
  // stop waited for the rest of the first move, nearly all of it.
  const fullCopyMs = ((done.finishedMs! - done.startedMs) * BIG_BYTES) / done.bytesCopied;
  process.stdout.write(`# a whole copy at the second move's rate: ${fullCopyMs.toFixed(0)} ms (${(done.bytesCopied / MiB).toFixed(0)} MiB copied by it)\n`);
  assert.ok(stopMs < fullCopyMs / 2, `the stop took ${stopMs.toFixed(0)} ms, a whole copy ${fullCopyMs.toFixed(0)} ms`);
  assert.equal((await volume(d, 'big')).tier, 'cold');
  // The front of the volume, the chunks the aborted move had striped (sampled: a whole read back
  // from the stripes costs seconds; one NBD read is 32 MiB at most).
  const frontBytes = 32 * MiB;
  const front = nbdsh(`import hashlib\nh.connect_uri(${JSON.stringify(d.exportUri('big'))})\nprint(hashlib.sha256(h.pread(${frontBytes}, 0)).hexdigest())`).trim();
  assert.equal(front, crypto.createHash('sha256').update(base.subarray(0, frontBytes)).digest('hex'), `the first ${frontBytes / MiB} MiB read back from cold`);
  assert.equal(await d.stop(), 0);
});
