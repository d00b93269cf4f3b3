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

const VOLUME_MIB = 64;
/** 1 MiB segments hold three 256 KiB shard records; no background pass. */
const CONFIG = 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: 1048576\n  compaction:\n    intervalMs: 0\n';

interface CompactReport {
  segmentsCompacted: number;
  copiedBytes: number;
}

test('SIGTERM during `couchestor compact`: the pass ends after its batch, 409 the daemon is stopping, a prompt exit 0; after a restart the volume reads back and the pass asked again completes', { timeout: 120_000 }, async (t) => {
  let d = await startColdDaemon(CONFIG);
  t.after(() => d.cleanup());
  const model = patternBytes(VOLUME_MIB * MiB, 11);
  await writeColdVolume(d, 'c', model, d.dataDir); // destaged
  // Two chunks of every three written again: each old segment is 2/3 dead, its third record to copy.
  const again = patternBytes(VOLUME_MIB * MiB, 12);
  for (let c = 0; c < VOLUME_MIB; c++) if (c % 3 !== 0) again.copy(model, c * MiB, c * MiB, (c + 1) * MiB);
  const src = path.join(d.dataDir, 'again.bin');
  fs.writeFileSync(src, model);
  nbdsh([`h.connect_uri(${JSON.stringify(d.exportUri('c'))})`, `src = open(${JSON.stringify(src)}, 'rb').read()`, `for c in range(${VOLUME_MIB}):`, `  if c % 3: h.pwrite(src[c * ${MiB}:(c + 1) * ${MiB}], c * ${MiB})`, 'h.flush()'].join('\n'));
  await destage(d);

  // POST /v1/compact, as `couchestor compact` sends it (the CLI prints the answer's message: test serve-stop-aborts-api-migration).
  const compact = fetch(`http://127.0.0.1:${d.info.api.port}/v1/compact`, { method: 'POST' }).then(async (r) => ({ status: r.status, body: (await r.json()) as { message?: string } }));
  const deadline = Date.now() + 30_000;
  while (!(await api<{ running: boolean }>(d, 'GET', '/v1/compaction')).running) {
    assert.ok(Date.now() < deadline, 'no compaction pass ran in 30 s');
    await new Promise((r) => setTimeout(r, 5));
  }
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
