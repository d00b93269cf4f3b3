// Review of the pool rebuild (fefe08e, dbd74c9) racing segment compaction
// through the real daemon, with 1 MiB segments (3 shard records each): the
// survivors the rebuild reads are moved under it, and the rebuild's own
// unsynced records roll into sealed segments compaction may look at before
// their window flips. Nothing may be lost or left pointing at a removed record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run } from './helpers/daemon.js';
import {
  MiB,
  allHealthy,
  api,
  coldStatus,
  destage,
  fsck,
  loseAndReplacePool,
  patternBytes,
  readBackWithPoolsLost,
  rebuildPool,
  scrub,
  startColdDaemon,
  writeColdVolume,
} from './helpers/cold.js';

const STRIPES = 24;
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

test('pool rebuild with compaction passes running under it (1 MiB segments): all Healthy, fsck clean, byte-exact with two more pools lost', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-compaction-'));
  let d = await startColdDaemon(CONFIG);
  try {
    const model = patternBytes(STRIPES * MiB, 0xc0a1);
    await writeColdVolume(d, 'c1', model, work);
    // Overwrite every other stripe: their old records become dead, so compaction moves the live ones.
    const half = patternBytes(STRIPES * MiB, 0xc0a2);
    for (let c = 0; c < STRIPES; c += 2) half.copy(model, c * MiB, c * MiB, (c + 1) * MiB);
    fs.writeFileSync(path.join(work, 'src2.bin'), model);
    run('nbdcopy', [path.join(work, 'src2.bin'), d.exportUri('c1')]);
    await destage(d);

    loseAndReplacePool(d, 2);
    let done = false;
    let passes = 0;
    let compacted = 0;
    // Compaction passes back to back from just before the rebuild starts until just after it ends.
    const compacting = (async () => {
      do {
        const r = await api<{ segmentsCompacted: number }>(d, 'POST', '/v1/compact');
        compacted += r.segmentsCompacted;
        passes++;
      } while (!done);
    })();
    const report = await rebuildPool(d, 2).finally(() => (done = true));
    await compacting;
    t.diagnostic(`rebuild ${JSON.stringify(report)}; ${passes} compaction passes under it compacted ${compacted} segments`);
    assert.ok(compacted > 0, 'compaction moved records while the rebuild ran');
    // Whatever the rebuild left (stripes moved under it) the queue pass or this scrub finishes.
    await scrub(d);
    await api<unknown>(d, 'POST', '/v1/compact');
    assert.equal((await scrub(d)).badStripes, 0, 'every shard verifies after the rebuild and compactions');
    assert.deepEqual((await coldStatus(d)).stripes, allHealthy(STRIPES));

    await d.kill();
    const { report: checked, stdout } = fsck(d);
    assert.deepEqual(checked.stripes, { Healthy: STRIPES, Degraded: 0, Failed: 0 }, stdout);
    assert.deepEqual(checked.badShards, []);
    d = await TestDaemon.start({ dataDir: d.dataDir });
    const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'after a rebuild raced by compaction');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
