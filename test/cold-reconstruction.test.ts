// Reconstruction of 4+2 cold stripes: after a lost pool is replaced, a scrub
// rebuilds every stripe onto it, and those rebuilt shards are real (they
// carry reads once two other pools are lost). Includes the replaced-pool
// stale-location regression.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import {
  MiB,
  allHealthy,
  assertSameBytes,
  coldPoolDir,
  coldStatus,
  corruptSegments,
  losePool,
  readBackWithPoolsLost,
  readExport,
  replacePool,
  scrub,
  segmentBytes,
  startWithColdVolume,
} from './helpers/cold.js';

const VOLUME_BYTES = 24 * MiB;
const STRIPES = 20;
const ALL_HEALTHY = allHealthy(STRIPES);

async function coldVolumeOnStripes(work: string): Promise<{ d: TestDaemon; model: Buffer }> {
  const started = await startWithColdVolume(work, VOLUME_BYTES, STRIPES * MiB, 0x5eed);
  assert.deepEqual((await coldStatus(started.d)).stripes, ALL_HEALTHY);
  return started;
}

test('a replaced pool is rebuilt by scrub to all-Healthy, and its rebuilt shards carry reads after two other pools are lost', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-rebuild-'));
  const { d, model } = await coldVolumeOnStripes(work);
  try {
    // Six pools, six shards per stripe: every pool holds exactly one record per stripe.
    const perPoolBytes = segmentBytes(d, 0);
    assert.ok(perPoolBytes > STRIPES * 256 * 1024, `pool 0 holds ${STRIPES} shard records (${perPoolBytes} bytes)`);

    losePool(d, 3);
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'pool 3 lost');
    // No pool to rebuild onto yet (the other five each hold a shard): stripes stay Degraded.
    let report = await scrub(d);
    assert.equal(report.badStripes, STRIPES);
    assert.deepEqual(report.stripes, { Healthy: 0, Degraded: STRIPES, Reconstructing: 0, Failed: 0 });

    replacePool(d, 3);
    report = await scrub(d);
    assert.equal(report.badStripes, STRIPES);
    assert.deepEqual(report.stripes, ALL_HEALTHY);
    const st = await coldStatus(d);
    assert.equal(st.shardsRebuilt, STRIPES, 'one shard rebuilt per stripe');
    assert.equal(segmentBytes(d, 3), perPoolBytes, 'the new pool received one shard record per stripe');
    assert.equal((await scrub(d)).badStripes, 0);

    // With pools 0 and 5 gone too, every stripe needs its rebuilt shard on pool 3.
    const degradedBefore = st.degradedReads;
    const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'pools 0 and 5 lost after rebuilding pool 3');
    assert.equal(after.failedReads, 0);
    // Pools 0, 5 (lost) and 3 (rebuilt) each held one shard of every stripe:
    // only k = 4 shards survive, one of them rebuilt, so the byte-exact read
    // above used a rebuilt shard for every stripe. Stripes that lost a data
    // shard were decoded (the others lost two parity shards only).
    assert.ok(after.degradedReads > degradedBefore, 'stripes that lost data shards were decoded through the rebuilt shards');
    assert.equal((await scrub(d)).badStripes, STRIPES, 'every stripe is missing exactly the two lost pools');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// Regression: this exact sequence once returned wrong bytes, because a stale
// shard location of the replaced pool pointed into its new segment file.
test('replace cold-2, scrub, corrupt two other pools, read, scrub, restart: byte-exact throughout', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-rebuild-'));
  let { d, model } = await coldVolumeOnStripes(work);
  const dataDir = d.dataDir;
  const out = path.join(work, 'out.bin');
  try {
    losePool(d, 2);
    assertSameBytes(readExport(d, 'c1', out), model, 'cold-2 lost');
    replacePool(d, 2);
    assert.deepEqual((await scrub(d)).stripes, ALL_HEALTHY);

    corruptSegments(d, 0, 300, 1000);
    corruptSegments(d, 4, 300, 4000);
    assertSameBytes(readExport(d, 'c1', out), model, 'cold-0 and cold-4 corrupted after cold-2 was rebuilt');
    assert.equal((await coldStatus(d)).failedReads, 0);
    assert.deepEqual((await scrub(d)).stripes, ALL_HEALTHY);
    assertSameBytes(readExport(d, 'c1', out), model, 'after the second scrub');

    assert.equal(await d.stop(), 0);
    d = await TestDaemon.start({ dataDir });
    assertSameBytes(readExport(d, 'c1', out), model, 'after restart');
    const st = await coldStatus(d);
    assert.equal(st.degradedReads, 0, 'every stripe was healthy again after the scrubs');
    assert.equal(st.failedReads, 0);
    assert.equal((await scrub(d)).badStripes, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// The same hazard with the replacement done across a restart: the disk is
// swapped while the daemon is down and the operator makes the pool's empty
// directory before the start (a missing one is left offline, never made
// again), so every old location of that pool names a segment file that now
// holds other records.
test('a pool lost while the daemon is down and replaced by an empty directory before start-up: reads and rebuild stay byte-exact', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-rebuild-'));
  let { d, model } = await coldVolumeOnStripes(work);
  const dataDir = d.dataDir;
  const out = path.join(work, 'out.bin');
  try {
    await d.kill();
    // cold-1's disk died; the new disk's empty directory is not the pool until `pools replace` gives it the pool's identity.
    losePool(d, 1);
    fs.mkdirSync(coldPoolDir(d, 1));
    const replaced = d.cli('pools', 'replace', 'cold-1');
    assert.equal(replaced.status, 0, replaced.stderr);
    d = await TestDaemon.start({ dataDir });
    assertSameBytes(readExport(d, 'c1', out), model, 'cold-1 replaced empty before start-up');
    assert.deepEqual((await scrub(d)).stripes, ALL_HEALTHY);
    // Rebuilt records now sit at offsets the old locations also name.
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    losePool(d, 3);
    losePool(d, 4);
    assertSameBytes(readExport(d, 'c1', out), model, 'cold-3 and cold-4 lost after cold-1 was rebuilt');
    assert.equal((await coldStatus(d)).failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
