// The pool rebuild's report counts every stripe it got rebuilt, including
// those its final reconstruction-queue pass finishes: with the lost pool not
// replaced (nothing to land on it), each of its stripes is placed by the
// queue on the one cold pool holding no other shard of that stripe.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { test } from 'node:test';
import { SHARD_HEADER_BYTES } from '../src/dataplane/ec/shard-record.js';
import { MANUAL_DESTAGE_CONFIG, coldStatus, fillColdVolume, losePool, readBackWithPoolsLost, rebuildPool, startColdDaemon, patternBytes, MiB } from './helpers/cold.js';

/** Seven cold pools for 4+2 stripes: with one lost, every stripe still has a free pool to land on. */
const SEVEN_COLD_POOLS_CONFIG =
  MANUAL_DESTAGE_CONFIG +
  'pools:\n  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }\n' +
  Array.from({ length: 7 }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');
const VOLUME_MIB = 24;
const SEED = 11;

test('a rebuild whose stripes the final queue pass finishes (pool lost, not replaced) counts them as rebuilt', async () => {
  const d = await startColdDaemon(SEVEN_COLD_POOLS_CONFIG);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-rebuild-report-'));
  try {
    await fillColdVolume(d, 'v', VOLUME_MIB, SEED);
    const before = await coldStatus(d);
    losePool(d, 2);
    const report = await rebuildPool(d, 2);
    const shown = JSON.stringify(report);
    // Six of seven pools per stripe: most stripes have a shard on cold-2.
    assert.ok(report.stripesChecked > 0 && report.stripesChecked <= VOLUME_MIB, shown);
    assert.equal(report.notRebuilt, 0, shown);
    // The pool has no store: nothing was landed on it, the queue placed every shard elsewhere.
    assert.equal(report.stripesRebuilt, report.stripesChecked, `every checked stripe was rebuilt by the final queue pass: ${shown}`);
    const after = await coldStatus(d);
    assert.equal(after.shardsRebuilt - before.shardsRebuilt, report.stripesChecked, 'one shard rebuilt per stripe');
    // One 256 KiB shard record (64-byte header) landed per stripe.
    assert.equal(report.bytesLanded, report.stripesChecked * (SHARD_HEADER_BYTES + MiB / 4), shown);
    assert.deepEqual(report.stripes, { Healthy: VOLUME_MIB, Degraded: 0, Reconstructing: 0, Failed: 0 }, shown);
    // The rebuilt shards serve: two more pools lost, every byte reads back.
    await readBackWithPoolsLost(d, [0, 5], 'v', patternBytes(VOLUME_MIB * MiB, SEED), path.join(work, 'out.bin'), 'cold-2, cold-0 and cold-5 lost');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
