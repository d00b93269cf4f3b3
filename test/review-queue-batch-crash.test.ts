// Review of 1b9112b (real daemon, aws SDK, SIGKILL): a degraded GET of a
// large cold object queues all its stripes, and the queue's passes land each
// rebuilt shard durably, then flip a batch of them in one transaction. Killed
// at a random moment of those landings (most kills fall between a batch's
// landings and its flip): fsck offline finds no half-written, failed or
// corrupt stripe and only the lost pool's shards missing; after a restart a
// pool rebuild completes and the object reads back byte-exact with two
// other pools lost.
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, assertFsckOnlyPoolLost, loseAndReplacePool, losePool, patternBytes, prng, rebuildPool, segmentBytes, untilPoolBytes } from './helpers/cold.js';
import { createColdBucket, restartS3, startS3 } from './helpers/s3-env.js';

const OBJECT_BYTES = 48 * MiB; // 48 stripes: one batch of 47 after the first pass's one
const STRIPES = OBJECT_BYTES / MiB;

test('SIGKILL while queue passes land a degraded GET\'s stripes: fsck clean but for the lost pool, the rebuild then completes byte-exact', async (t) => {
  let env = await startS3();
  const rand = prng(0x0ba7c4);
  try {
    await createColdBucket(env, 'cold');
    const body = patternBytes(OBJECT_BYTES, 0x51);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'big', Body: body }));
    const fullBytes = segmentBytes(env.daemon, 2);
    loseAndReplacePool(env.daemon, 2);
    let midLandingKills = 0;
    for (let round = 0; round < 3; round++) {
      const startBytes = segmentBytes(env.daemon, 2);
      // Within the first third of the object's cold-2 bytes: the stripes the write-through cache
      // still serves are not read degraded (not queued) in the first round.
      const killAtBytes = startBytes + 1 + Math.floor((rand() / 2 ** 32) * 0.8 * (fullBytes / 3));
      // The GET reads degraded (cold-2's shards gone) and queues every stripe it read.
      const get = env.sdk
        .send(new GetObjectCommand({ Bucket: 'cold', Key: 'big' }))
        .then(async (got) => Buffer.from(await got.Body!.transformToByteArray()))
        .then(
          (bytes) => (bytes.equals(body) ? 'exact' : 'wrong bytes'),
          () => 'killed',
        );
      const outcome = get;
      // Bounded: a round whose queue lands less than the target is killed after 20 s (not counted mid-landing).
      const deadlineMs = Date.now() + 20_000;
      await untilPoolBytes(env.daemon, 2, killAtBytes, () => Date.now() > deadlineMs);
      const landedBytes = segmentBytes(env.daemon, 2) - startBytes;
      await env.daemon.kill();
      const got = await outcome;
      assert.notEqual(got, 'wrong bytes', `round ${round}: the degraded GET returned wrong bytes`);
      if (landedBytes > 0 && Date.now() <= deadlineMs) midLandingKills++;
      t.diagnostic(`round ${round}: kill at ${landedBytes} bytes landed on cold-2 this round (target ${killAtBytes - startBytes}) of ${fullBytes}, GET ${got}`);

      assertFsckOnlyPoolLost(env.daemon, STRIPES, 'cold-2', `round ${round}`);
      env = await restartS3(env);
    }
    assert.ok(midLandingKills >= 1, 'at least one kill landed while the queue was writing');

    const report = await rebuildPool(env.daemon, 2);
    assert.equal(report.notRebuilt, 0, JSON.stringify(report));
    assert.deepEqual(report.stripes, { Healthy: STRIPES, Degraded: 0, Reconstructing: 0, Failed: 0 }, JSON.stringify(report));
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'big' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(body), 'byte-exact with cold-0 and cold-5 lost after the rebuild');
  } finally {
    await env.cleanup();
  }
});
