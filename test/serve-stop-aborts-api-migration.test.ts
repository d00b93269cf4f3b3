// A move asked for with `couchestor volumes migrate` (hot -> cold, a big
// volume) is aborted at its next chunk, as the control loop's are at a stop,
// when the daemon running it stops (SIGTERM: the CLI prints "the daemon is
// stopping", the API's 409) or, with no daemon, when the CLI running it
// itself gets Ctrl-C (SIGINT: exit 130). The stop is prompt. Before, an API
// move ran to its end (a 100 GiB one held the stop for its whole copy until
// the kubelet's SIGKILL cut it), and an offline one was killed mid-COPY, its
// record left on the target tier for the next start to finish. Either way
// the volume is then hot and reads back byte for byte, and the move asked
// again completes, copying only what the aborted one had not moved. (Writes
// during such an abort, the same path for a move the loop started: test
// review-stop-migration-writes.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { nbdsh, TestDaemon } from './helpers/daemon.js';
import { bigHotVolume, cliInBackground, cliJson, coldStatus, heldMove, HOLD_MIGRATION_ENV, nbdcopyOut, volume } from './helpers/control-loop.js';
import { segmentBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;
const BIG_BYTES = 256 * MiB;

/**
 * The CLI's message for the aborted move (`why`: its start) and the hot file after it: as an aborted
 * move to cold of the loop's, the ranges of the chunks it striped are punched out (st_blocks also
 * counts the file system's extent blocks, which the holes add: 64 KiB of slack).
 */
function assertAbortedAndPunched(stderr: string, why: string, dataDir: string, bigId: number): void {
  const aborted = new RegExp(`^couchestor: ${why}: the migration of big to cold was aborted after (\\d+) of \\d+ chunks; big stays hot on its old copy`, 'm').exec(stderr);
  assert.ok(aborted, stderr);
  const file = path.join(dataDir, 'pools', 'hot-0', 'volumes', `${bigId}.dat`);
  const allocatedBytes = fs.statSync(file).blocks * 512;
  assert.ok(Number(aborted[1]) > 0 && allocatedBytes <= BIG_BYTES - Number(aborted[1]) * MiB + 64 * 1024, `${file}: ${allocatedBytes} bytes allocated after ${aborted[1]} chunks striped`);
}

/**
 * A daemon on `dataDir` after the abort: big is hot and reads back `base`; the move asked again
 * completes copying only the rest, and `stopMs` was under half a whole copy at its rate (without
 * the abort the stop waited for the rest of the first move, nearly all of it). Stops the daemon.
 */
async function restartedHotThenMovedAgain(dataDir: string, src: string, base: Buffer, stopMs: number, track: (d: TestDaemon) => void): Promise<void> {
  const d = await TestDaemon.start({ dataDir });
  track(d);
  assert.equal((await volume(d, 'big')).tier, 'hot', 'the aborted move left the volume on its old tier');
  assert.ok(nbdcopyOut(d.exportUri('big'), src, BIG_BYTES).equals(base), 'every byte reads back (part from the stripes, part from the file)');
  const done = cliJson<MigrationProgress>(d, 'volumes', 'migrate', 'big', 'cold');
  assert.equal(done.phase, 'Done');
  assert.ok(done.bytesCopied > 0 && done.bytesCopied < BIG_BYTES, `bytes copied by the second move: ${done.bytesCopied}`);
  const fullCopyMs = ((done.finishedMs! - done.startedMs) * BIG_BYTES) / done.bytesCopied;
  process.stdout.write(`# signal to exit: ${stopMs.toFixed(0)} ms; a whole copy at the second move's rate: ${fullCopyMs.toFixed(0)} ms (${(done.bytesCopied / MiB).toFixed(0)} MiB copied by it)\n`);
  assert.ok(stopMs < fullCopyMs / 2, `the stop took ${stopMs.toFixed(0)} ms, a whole copy ${fullCopyMs.toFixed(0)} ms`);
  assert.equal((await volume(d, 'big')).tier, 'cold');
  // The front of the volume, the chunks the aborted move had striped (sampled: a whole read back
  // from the stripes costs seconds; one NBD read is 32 MiB at most).
  const frontBytes = 32 * MiB;
  const front = nbdsh(`import hashlib\nh.connect_uri(${JSON.stringify(d.exportUri('big'))})\nprint(hashlib.sha256(h.pread(${frontBytes}, 0)).hexdigest())`).trim();
  assert.equal(front, crypto.createHash('sha256').update(base.subarray(0, frontBytes)).digest('hex'), `the first ${frontBytes / MiB} MiB read back from cold`);
  assert.equal(await d.stop(), 0);
}

test('SIGTERM during `couchestor volumes migrate big cold` (256 MiB): the move aborted, the CLI told the daemon is stopping, a prompt exit 0; after a restart big is hot and reads back, and the move asked again completes copying the rest only', { timeout: 120_000 }, async (t) => {
  // No policy: only the API moves anything.
  // The move holds after its first chunk (test hook) until the stop aborts it: under way at the stop whatever the load.
  const { d, src, bigId } = await bigHotVolume(t, BIG_BYTES, {}, HOLD_MIGRATION_ENV);
  const base = fs.readFileSync(src);

  const migrate = cliInBackground('volumes', 'migrate', 'big', 'cold', '--data-dir', d.dataDir).done;
  await heldMove(d, 'big');
  assert.ok((await coldStatus(d)).stripesWritten >= 1, 'the move striped a chunk');
  assert.equal((await volume(d, 'big')).tier, 'cold', 'the move is under way when the stop comes');
  const sentMs = performance.now();
  assert.equal(await d.stop(), 0, d.stderr);
  const stopMs = performance.now() - sentMs;

  const cli = await migrate;
  assert.equal(cli.code, 1, `the CLI: ${cli.stdout}${cli.stderr}`);
  assertAbortedAndPunched(cli.stderr, 'the daemon is stopping', d.dataDir, bigId);
  await restartedHotThenMovedAgain(d.dataDir, src, base, stopMs, (d2) => t.after(() => d2.kill()));
});

test('Ctrl-C (SIGINT) during an offline `couchestor volumes migrate big cold` (256 MiB, no daemon): the move aborted, exit 130 saying so; then big is hot and reads back, and the move asked again completes copying the rest only', { timeout: 120_000 }, async (t) => {
  const { d, src, bigId } = await bigHotVolume(t, BIG_BYTES);
  const base = fs.readFileSync(src);
  assert.equal(await d.stop(), 0, d.stderr);

  // The daemon stopped: the CLI opens the data directory and moves the volume itself.
  const migrate = cliInBackground('volumes', 'migrate', 'big', 'cold', '--data-dir', d.dataDir);
  t.after(() => migrate.proc.kill('SIGKILL'));
  let ended = false;
  void migrate.done.then(() => (ended = true));
  const deadline = Date.now() + 60_000;
  while (segmentBytes(d, 0) === 0) {
    assert.ok(Date.now() < deadline && !ended, `the move wrote no shard in 60 s: ${ended ? (await migrate.done).stderr : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const sentMs = performance.now();
  migrate.proc.kill('SIGINT');
  const cli = await migrate.done;
  const stopMs = performance.now() - sentMs;
  assert.deepEqual([cli.code, cli.signal], [130, null], `the CLI: ${cli.stdout}${cli.stderr}`);
  assertAbortedAndPunched(cli.stderr, 'interrupted \\(SIGINT\\)', d.dataDir, bigId);
  await restartedHotThenMovedAgain(d.dataDir, src, base, stopMs, (d2) => t.after(() => d2.kill()));
});

test('SIGTERM during `couchestor volumes migrate big cold --preserve`: the command it says to run again keeps --preserve (was: without it, which would release the hot copy the operator meant to keep)', { timeout: 120_000 }, async (t) => {
  const { d } = await bigHotVolume(t, 128 * MiB, {}, HOLD_MIGRATION_ENV);
  const migrate = cliInBackground('volumes', 'migrate', 'big', 'cold', '--preserve', '--data-dir', d.dataDir).done;
  await heldMove(d, 'big'); // held (test hook) until the stop aborts it
  assert.equal(await d.stop(), 0, d.stderr);
  const cli = await migrate;
  assert.equal(cli.code, 1, `the CLI: ${cli.stdout}${cli.stderr}`);
  assert.match(cli.stderr, /^couchestor: the daemon is stopping: the migration of big to cold was aborted after \d+ of \d+ chunks; .*; ask again once the daemon is back \(`couchestor volumes migrate big cold --preserve`\)/m);
});
