// SIGKILL while a pool rebuild lands cold S3 object stripes (the batched
// path: records appended unsynced, one fdatasync per window, then each
// object's compare-and-swap flip): fsck offline finds no half-written,
// failed or corrupt stripe and only the lost pool's shards missing; after a
// restart the next rebuild completes, and every object reads back
// byte-exact with two other pools lost.
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, assertFsckOnlyPoolLost, loseAndReplacePool, losePool, patternBytes, prng, rebuildPool, segmentBytes, untilPoolBytes } from './helpers/cold.js';
import { createColdBucket, restartS3, startS3 } from './helpers/s3-env.js';

const OBJECTS = 3;
const OBJECT_BYTES = 16 * MiB; // 16 stripes each
const STRIPES = OBJECTS * (OBJECT_BYTES / MiB);

test('SIGKILL during a pool rebuild of cold object stripes: fsck clean but for the lost pool, the next rebuild completes byte-exact', async (t) => {
  // The first daemon holds a whole-pool rebuild once its first group is written (the test
  // hook): round 0 is killed there, so at least one kill lands mid-rebuild however loaded
  // the machine is (a poll of the pool's size can miss a rebuild of a few hundred ms). The
  // restarted daemons run without it: their kills land at random points.
  let env = await startS3({ env: { COUCHESTOR_TEST_PAUSE_POOL_REBUILD: '1' } });
  const rand = prng(0x0b1e);
  try {
    await createColdBucket(env, 'cold');
    const bodies = Array.from({ length: OBJECTS }, (_, i) => patternBytes(OBJECT_BYTES, 0x100 + i));
    for (const [i, b] of bodies.entries()) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o-${i}`, Body: b }));
    const fullBytes = segmentBytes(env.daemon, 2);
    loseAndReplacePool(env.daemon, 2);
    let midRebuildKills = 0;
    for (let round = 0; round < 3; round++) {
      const startBytes = segmentBytes(env.daemon, 2);
      const killAtBytes = startBytes + 1 + Math.floor((rand() / 2 ** 32) * 0.8 * fullBytes);
      let settled = false;
      const pending = rebuildPool(env.daemon, 2)
        .then(
          () => 'finished',
          () => 'killed',
        )
        .finally(() => (settled = true));
      if (round === 0) await env.daemon.line(/^couchestor paused pool-rebuild \{"pool":"cold-2"\}$/, 120_000);
      else await untilPoolBytes(env.daemon, 2, killAtBytes, () => settled);
      const landedBytes = segmentBytes(env.daemon, 2) - startBytes;
      await env.daemon.kill();
      const outcome = await pending;
      if (round === 0) assert.ok(landedBytes > 0 && outcome === 'killed', `round 0 killed at the held rebuild: ${landedBytes} bytes landed, rebuild ${outcome}`);
      if (landedBytes > 0 && outcome === 'killed') midRebuildKills++;
      t.diagnostic(`round ${round}: kill at ${landedBytes} bytes written this round (target ${killAtBytes - startBytes}) of ${fullBytes}, rebuild ${outcome}`);

      assertFsckOnlyPoolLost(env.daemon, STRIPES, 'cold-2', `round ${round}`);
      env = await restartS3(env);
    }
    assert.ok(midRebuildKills >= 1, 'at least one kill landed while the rebuild was writing');

    const report = await rebuildPool(env.daemon, 2);
    assert.equal(report.notRebuilt, 0, JSON.stringify(report));
    assert.deepEqual(report.stripes, { Healthy: STRIPES, Degraded: 0, Reconstructing: 0, Failed: 0 }, JSON.stringify(report));
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    for (const [i, b] of bodies.entries()) {
      const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: `o-${i}` }));
      assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(b), `o-${i} with cold-0 and cold-5 lost after the rebuild`);
    }
  } finally {
    await env.cleanup();
  }
});
