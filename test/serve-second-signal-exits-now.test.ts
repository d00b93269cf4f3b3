// A second SIGTERM while the daemon stops: it ends at once, by that signal
// (143 as a shell reports it), whatever the stop was waiting for (here the NBD drain, held for its 10 s grace by a
// client that never reads its replies), and the next start has every
// acknowledged write: each was durable before its answer, so exiting without
// the rest of the stop loses none (the crash contract). Before, the second
// signal was ignored: an operator's second Ctrl-C, or `docker stop` after
// one, waited out the whole stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { createVolume, nbdcopyIn, nbdcopyOut, startControlDaemon, waitForLog } from './helpers/control-loop.js';
import { expectedAfterBlocks, startBlockWriter, startStuckReader, type BlockWriter } from './helpers/nbd-writer.js';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createColdBucket, sdkClient, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 32 * MiB;
/** The NBD drain's grace (src/dataplane/nbd/server.ts SHUTDOWN_GRACE_MS): what the stop would wait out. */
const NBD_GRACE_MS = 10_000;

/** How a daemon ended as a shell reports it: 128 + the signal's number if a signal ended it (143 for SIGTERM), else its exit code. */
function reported(exit: { code: number | null; signal: NodeJS.Signals | null }): number | null {
  return exit.signal !== null ? 128 + (os.constants.signals[exit.signal] ?? 0) : exit.code;
}

test('a second SIGTERM during a stop held by an NBD client: ends at once (143 as a shell reports it), logged; the next start reads every acknowledged write of a hot and a cold volume', { timeout: 120_000 }, async (t) => {
  let d = await startControlDaemon({ policies: {} });
  t.after(() => d.cleanup());
  const base = crypto.randomBytes(VOLUME_BYTES);
  const src = path.join(d.dataDir, '..', `${path.basename(d.dataDir)}-base.bin`);
  t.after(() => fs.rmSync(src, { force: true }));
  fs.writeFileSync(src, base);
  for (const tier of ['hot', 'cold'] as const) {
    await createVolume(d, tier, VOLUME_BYTES, { tier });
    nbdcopyIn(src, d.exportUri(tier));
  }
  const stuck = await startStuckReader(d.exportUri('hot'));
  t.after(() => stuck.kill());
  const writers: Record<string, BlockWriter> = { hot: startBlockWriter(d.exportUri('hot')), cold: startBlockWriter(d.exportUri('cold')) };
  for (const w of Object.values(writers)) t.after(() => w.kill());
  const deadline = Date.now() + 30_000;
  while (writers.hot!.acked < 16 || writers.cold!.acked < 16) {
    assert.ok(Date.now() < deadline, `the writers got too few blocks acknowledged (hot ${writers.hot!.acked}, cold ${writers.cold!.acked})`);
    await new Promise((r) => setTimeout(r, 20));
  }

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((r) => d.proc.once('exit', (code, signal) => r({ code, signal, atMs: performance.now() })));
  d.proc.kill('SIGTERM');
  await waitForLog(d, /INFO stopping \(a second signal exits now\) signal=SIGTERM/);
  const secondMs = performance.now();
  d.proc.kill('SIGTERM');
  const ended = await exited;
  const atMs = ended.atMs;
  const exitMs = atMs - secondMs;
  process.stdout.write(`# second SIGTERM to exit: ${exitMs.toFixed(0)} ms; blocks acknowledged: hot ${writers.hot!.acked + 1}, cold ${writers.cold!.acked + 1}\n`);
  assert.equal(reported(ended), 143, `${JSON.stringify(ended)}\n${d.stderr}`);
  assert.match(d.stderr, /WARN second signal: exiting now, without waiting for the stop to end; .* signal=SIGTERM first=SIGTERM waitingFor=/);
  assert.ok(exitMs < NBD_GRACE_MS / 4, `exit ${exitMs.toFixed(0)} ms after the second signal`);
  await Promise.all(Object.values(writers).map((w) => w.ended));
  stuck.kill();

  d = await TestDaemon.start({ dataDir: d.dataDir });
  for (const [name, w] of Object.entries(writers)) {
    const back = nbdcopyOut(d.exportUri(name), src + '.back', VOLUME_BYTES);
    const want = expectedAfterBlocks(base, w.acked, back);
    for (let off = 0; off < VOLUME_BYTES; off += MiB) assert.ok(back.subarray(off, off + MiB).equals(want.subarray(off, off + MiB)), `${name}: block at ${off / MiB} MiB (acknowledged up to block ${w.acked})`);
  }
  assert.equal(await d.stop(), 0, d.stderr);
});

test('a second SIGTERM while an index commit is queued (S3 PUTs running): the daemon ends at once (was: hung for good in process.exit), every acknowledged PUT there after a restart', { timeout: 120_000 }, async (t) => {
  // exitNow called process.exit(143). Node's exit joins the libuv thread pool, where LMDB's write
  // thread (lmdb-js) waits, inside the transaction, for this thread to run its callback: the
  // daemon never ended, ignored every later SIGTERM and held the data directory's lock until a
  // SIGKILL. The hook queues that commit as the second signal lands (a loop of stops with S3 PUTs
  // and NBD writers met it on its own once in 33 runs).
  const d = await TestDaemon.start({ env: { COUCHESTOR_TEST_INDEX_WRITE_AT_SECOND_SIGNAL: '1' } });
  t.after(() => d.cleanup());
  const keys = () => (JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] }).keys[0]!;
  const sdk = sdkClient(d.s3Endpoint, keys().accessKeyId, keys().secretAccessKey);
  t.after(() => sdk.destroy());
  await sdk.send(new CreateBucketCommand({ Bucket: 'hot' }));
  await createColdBucket({ endpoint: d.s3Endpoint, ...keys() } as S3Env, 'cold');
  // The stop held at the NBD drain (10 s): the PUTs go on meanwhile (S3 closes after NBD).
  const stuck = await startStuckReader(d.exportUri('demo'));
  t.after(() => stuck.kill());
  const acked = new Map<string, string>(); // bucket/key -> sha256
  let putting = true;
  const worker = async (w: number) => {
    for (let i = 0; putting; i++) {
      const bucket = i % 2 ? 'cold' : 'hot';
      const key = `w${w}-${i}`;
      const body = crypto.randomBytes(4096);
      try {
        await sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
      } catch {
        return; // the daemon went away: this PUT was never acknowledged
      }
      acked.set(`${bucket}/${key}`, crypto.createHash('sha256').update(body).digest('hex'));
    }
  };
  const workers = Array.from({ length: 8 }, (_, w) => worker(w));
  const deadline = Date.now() + 30_000;
  const untilAcked = async (n: number) => {
    while (acked.size < n) {
      assert.ok(Date.now() < deadline, `only ${acked.size} PUTs acknowledged`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await untilAcked(32);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => d.proc.once('exit', (code, signal) => r({ code, signal })));
  d.proc.kill('SIGTERM');
  await waitForLog(d, /INFO stopping \(a second signal exits now\) signal=SIGTERM/);
  await untilAcked(acked.size + 16); // PUTs acknowledged during the stop too
  const secondMs = performance.now();
  d.proc.kill('SIGTERM');
  const ended = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
  if (ended === null) d.proc.kill('SIGKILL');
  putting = false;
  await Promise.all(workers);
  stuck.kill();
  assert.ok(ended !== null, `still running 5 s after the second SIGTERM:\n${d.stderr.split('\n').slice(-3).join('\n')}`);
  process.stdout.write(`# second SIGTERM to the end: ${(performance.now() - secondMs).toFixed(0)} ms; ${acked.size} PUTs acknowledged\n`);
  assert.equal(reported(ended), 143, `${JSON.stringify(ended)}\n${d.stderr}`);
  assert.match(d.stderr, /WARN second signal: exiting now, without waiting for the stop to end; .* signal=SIGTERM first=SIGTERM waitingFor=the NBD clients/);

  const again = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => again.kill());
  const sdkAgain = sdkClient(again.s3Endpoint, keys().accessKeyId, keys().secretAccessKey);
  t.after(() => sdkAgain.destroy());
  for (const [bk, sha] of acked) {
    const [Bucket, Key] = bk.split('/') as [string, string];
    const got = Buffer.from(await (await sdkAgain.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToByteArray());
    assert.equal(crypto.createHash('sha256').update(got).digest('hex'), sha, `${bk} after the restart`);
  }
  assert.equal(await again.stop(), 0, again.stderr);
});
