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
  let env = await startS3();
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
      await untilPoolBytes(env.daemon, 2, killAtBytes, () => settled);
      const landedBytes = segmentBytes(env.daemon, 2) - startBytes;
      await env.daemon.kill();
      const outcome = await pending;
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
