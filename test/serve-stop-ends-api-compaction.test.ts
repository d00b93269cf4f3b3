// A daemon stopped (SIGTERM) while `couchestor compact` (POST /v1/compact, an
// unthrottled pass) runs: the pass ends after its current batch, the request
// is answered 409 "the daemon is stopping", and the stop is prompt. Before, the
// compaction was stopped only after the admin API had closed, and closing
// waited for the request: the stop held for the whole pass (on a big cold
// tier, the copy of every live record of the segments over the dead
// fraction). After a restart the volume reads back byte for byte, and the
// pass asked again completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { nbdsh, TestDaemon } from './helpers/daemon.js';
import { api, assertSameBytes, destage, MiB, patternBytes, readExport, startColdDaemon, writeColdVolume } from './helpers/cold.js';
import { waitForLog } from './helpers/control-loop.js';
import { startStuckReader } from './helpers/nbd-writer.js';

const VOLUME_MIB = 64;
/** 1 MiB segments hold three 256 KiB shard records; no background pass. */
/** Test hook: the daemon's first compaction pass holds before its first index flip until the stop (say so on stdout). */
const PAUSE_AT_FIRST_FLIP = { COUCHESTOR_TEST_PAUSE_COMPACTION: 'before-flip' };
const PAUSED = /^couchestor paused compaction before-flip /;
const CONFIG = 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: 1048576\n  compaction:\n    intervalMs: 0\n';

interface CompactReport {
  segmentsCompacted: number;
  copiedBytes: number;
}

/**
 * A cold daemon with volume `c` (`mib` MiB, destaged), two chunks of every three written again
 * and destaged: each old segment 2/3 dead, its third record for a pass to copy. Returns the
 * daemon and the volume's bytes now.
 */
async function coldVolumeToCompact(t: { after(fn: () => unknown): void }, mib = VOLUME_MIB): Promise<{ d: TestDaemon; model: Buffer }> {
  // Its first pass holds at its first flip (test hook) until the stop: in flight at the SIGTERM whatever the load.
  const d = await startColdDaemon(CONFIG, PAUSE_AT_FIRST_FLIP);
  t.after(() => d.cleanup());
  const model = patternBytes(mib * MiB, 11);
  await writeColdVolume(d, 'c', model, d.dataDir); // destaged
  const again = patternBytes(mib * MiB, 12);
  for (let c = 0; c < mib; c++) if (c % 3 !== 0) again.copy(model, c * MiB, c * MiB, (c + 1) * MiB);
  const src = path.join(d.dataDir, 'again.bin');
  fs.writeFileSync(src, model);
  nbdsh([`h.connect_uri(${JSON.stringify(d.exportUri('c'))})`, `src = open(${JSON.stringify(src)}, 'rb').read()`, `for c in range(${mib}):`, `  if c % 3: h.pwrite(src[c * ${MiB}:(c + 1) * ${MiB}], c * ${MiB})`, 'h.flush()'].join('\n'));
  await destage(d);
  return { d, model };
}

test('SIGTERM during `couchestor compact`: the pass ends after its batch, 409 the daemon is stopping, a prompt exit 0; after a restart the volume reads back and the pass asked again completes', { timeout: 120_000 }, async (t) => {
  const first = await coldVolumeToCompact(t);
  let d = first.d;
  const model = first.model;

  // POST /v1/compact, as `couchestor compact` sends it (the CLI prints the answer's message: test serve-stop-aborts-api-migration).
  const compact = fetch(`http://127.0.0.1:${d.info.api.port}/v1/compact`, { method: 'POST' }).then(async (r) => ({ status: r.status, body: (await r.json()) as { message?: string } }));
  await d.line(PAUSED, 30_000);
  assert.ok((await api<{ running: boolean }>(d, 'GET', '/v1/compaction')).running, 'the pass runs');
  const sentMs = performance.now();
  assert.equal(await d.stop(), 0, d.stderr);
  const stopMs = performance.now() - sentMs;
  process.stdout.write(`# SIGTERM to exit: ${stopMs.toFixed(0)} ms\n`);
  const answer = await compact;
  assert.equal(answer.status, 409, JSON.stringify(answer.body));
  assert.match(answer.body.message ?? '', /^the daemon is stopping: the compaction pass ended after its current batch \(\d+ segments compacted, \d+ bytes reclaimed\)/);

  d = await TestDaemon.start({ dataDir: d.dataDir });
  // Asked again: it runs to its end. Without the fix the stop waited for the rest of the first pass: about this one's work.
  const passStartMs = performance.now();
  const done = await api<CompactReport>(d, 'POST', '/v1/compact');
  const passMs = performance.now() - passStartMs;
  process.stdout.write(`# the pass asked again: ${passMs.toFixed(0)} ms, ${done.segmentsCompacted} segments, ${(done.copiedBytes / MiB).toFixed(1)} MiB copied\n`);
  assert.ok(done.segmentsCompacted > 0 && done.copiedBytes > 0, JSON.stringify(done));
  assert.ok(stopMs < passMs / 2, `the stop took ${stopMs.toFixed(0)} ms, the rest of the pass ${passMs.toFixed(0)} ms`);
  assertSameBytes(readExport(d, 'c', path.join(d.dataDir, 'back.bin')), model, 'read back after the stop mid-pass and the pass asked again');
  const stripes = (await api<{ stripes: { Healthy: number; Degraded: number; Failed: number } }>(d, 'GET', '/v1/cold')).stripes;
  assert.deepEqual([stripes.Healthy, stripes.Degraded, stripes.Failed], [VOLUME_MIB, 0, 0], JSON.stringify(stripes));
  assert.equal(await d.stop(), 0);
});

test('`couchestor compact` and a stop held by an NBD client: the pass in flight ends after its batch, not after the NBD drain; one asked for during the stop is not started (409); the rest is done by the pass after a restart', { timeout: 120_000 }, async (t) => {
  // Before, the compactor was stopped only after the NBD drain (up to 10 s for a client that does
  // not read its replies) and the pool rebuild's stop: until then a pass ran on whole, the one in
  // flight at the SIGTERM as one asked for during the stop, and each was answered 409 "ended after
  // its current batch" with all of its work done.
  const { d } = await coldVolumeToCompact(t, 32);
  const stuck = await startStuckReader(d.exportUri('c'));
  t.after(() => stuck.kill());
  const compact = () => fetch(`http://127.0.0.1:${d.info.api.port}/v1/compact`, { method: 'POST' }).then(async (r) => ({ status: r.status, body: (await r.json()) as { message?: string } }));
  const inFlight = compact();
  await d.line(PAUSED, 30_000);
  assert.ok((await api<{ running: boolean }>(d, 'GET', '/v1/compaction')).running, 'the pass runs');
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => d.proc.once('exit', (code, signal) => r({ code, signal })));
  d.proc.kill('SIGTERM');
  await waitForLog(d, /INFO stopping \(a second signal exits now\) signal=SIGTERM/);
  const cut = await inFlight;
  assert.equal(cut.status, 409, JSON.stringify(cut.body));
  assert.match(cut.body.message ?? '', /^the daemon is stopping: the compaction pass ended after its current batch/);
  const during = await compact();
  assert.equal(during.status, 409, JSON.stringify(during.body));
  assert.equal(during.body.message, 'the daemon is stopping: no compaction pass was started; run `couchestor compact` again once the daemon is back');
  d.proc.kill('SIGTERM'); // the second: the NBD drain is not what this test waits for
  await exited;
  stuck.kill();

  const again = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => again.kill());
  const done = await api<CompactReport>(again, 'POST', '/v1/compact');
  assert.ok(done.segmentsCompacted > 0 && done.copiedBytes > 0, `the pass after the restart found nothing left: the stop's pass ran whole (${cut.body.message}); now ${JSON.stringify(done)}`);
  assert.equal(await again.stop(), 0, again.stderr);
});
