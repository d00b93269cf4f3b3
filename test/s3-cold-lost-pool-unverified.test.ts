// A pool whose rebuild left stripes not rebuilt (an object lost beyond
// parity) stays distrusted (objects/pool-disks.ts): that object answers HEAD
// and GET 500, before and after a restart, while another pool rebuilt in full
// is verified (couchestor_s3_cold_pools_unverified 0) and new objects answer 200.
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, dropCache, loseAndReplacePool, patternBytes, rebuildPool } from './helpers/cold.js';
import { coldPoolsUnverified, outcome, restartS3, startS3WithColdObjects } from './helpers/s3-env.js';

test('an object lost beyond parity keeps HEAD and GET 500 after another pool is verified by its rebuild and after a restart; its pools stay unverified', async (t) => {
  const started = Date.now();
  const body = patternBytes(MiB + 5, 0x62);
  let env = await startS3WithColdObjects(body, { multipart: false });
  t.after(() => env.cleanup());
  // cold-0 replaced and rebuilt: verified again, k's shard there is back.
  loseAndReplacePool(env.daemon, 0);
  assert.equal((await rebuildPool(env.daemon, 0)).notRebuilt, 0);
  // Three more replaced: k is lost beyond parity; new objects fill the new disks over its shards' places.
  for (const i of [1, 2, 3]) loseAndReplacePool(env.daemon, i);
  for (const i of [1, 2, 3]) await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `new-${i}`, Body: patternBytes(MiB + 5, i) }));
  // The rebuild of cold-1 cannot rebuild k's stripes: not complete, the pool stays unverified.
  const r = await rebuildPool(env.daemon, 1);
  assert.ok(r.notRebuilt > 0, JSON.stringify(r));
  const check = async (when: string) => {
    await dropCache(env.daemon);
    // A HEAD answer has no body to name the error: the status says it.
    assert.equal((await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'k' }))))[0], 500, `HEAD ${when}`);
    assert.deepEqual(await outcome(env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'k' })).then((g) => g.Body!.transformToByteArray())), [500, 'InternalError'], `GET ${when}`);
    assert.deepEqual(await coldPoolsUnverified(env), [0, 1, 1, 1, 0, 0], `cold-0 verified, cold-1..3 not ${when}`);
    for (const i of [1, 2, 3]) assert.equal((await env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: `new-${i}` }))).ContentLength, MiB + 5, `HEAD new-${i} ${when}`);
  };
  await check('before the restart');
  await env.daemon.kill();
  env = await restartS3(env);
  await check('after the restart');
  t.diagnostic(`${Date.now() - started} ms`);
});
