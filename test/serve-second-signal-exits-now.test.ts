// A second SIGTERM while the daemon stops: it exits at once, 143, whatever
// the stop was waiting for (here the NBD drain, held for its 10 s grace by a
// client that never reads its replies), and the next start has every
// acknowledged write: each was durable before its answer, so exiting without
// the rest of the stop loses none (the crash contract). Before, the second
// signal was ignored: an operator's second Ctrl-C, or `docker stop` after
// one, waited out the whole stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { createVolume, nbdcopyIn, nbdcopyOut, startControlDaemon, waitForLog } from './helpers/control-loop.js';
import { expectedAfterBlocks, startBlockWriter, startStuckReader, type BlockWriter } from './helpers/nbd-writer.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 32 * MiB;
/** The NBD drain's grace (src/dataplane/nbd/server.ts SHUTDOWN_GRACE_MS): what the stop would wait out. */
const NBD_GRACE_MS = 10_000;

test('a second SIGTERM during a stop held by an NBD client: exit 143 at once, logged; the next start reads every acknowledged write of a hot and a cold volume', { timeout: 120_000 }, async (t) => {
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

  const exited = new Promise<{ code: number | null; atMs: number }>((r) => d.proc.once('exit', (code) => r({ code, atMs: performance.now() })));
  d.proc.kill('SIGTERM');
  await waitForLog(d, /INFO stopping \(a second signal exits now\) signal=SIGTERM/);
  const secondMs = performance.now();
  d.proc.kill('SIGTERM');
  const { code, atMs } = await exited;
  const exitMs = atMs - secondMs;
  process.stdout.write(`# second SIGTERM to exit: ${exitMs.toFixed(0)} ms; blocks acknowledged: hot ${writers.hot!.acked + 1}, cold ${writers.cold!.acked + 1}\n`);
  assert.equal(code, 143, d.stderr);
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
