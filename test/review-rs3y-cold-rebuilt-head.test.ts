// Review of 1b5f4ba (pool-disks.ts): cold pools replaced one at a time, each
// rebuilt before the next, so no object ever lost more than one shard of a
// stripe. Three of 4+2 pools then hold disks that took over after the
// objects were written: HEAD must still answer 200 (a healthy object reported
// lost is the worst outcome), before and after a restart.
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, dropCache, loseAndReplacePool, patternBytes, rebuildPool } from './helpers/cold.js';
import { outcome, restartS3, startS3WithColdObjects } from './helpers/s3-env.js';

test('cold pools replaced and rebuilt one at a time, new objects written between: HEAD of the older objects stays 200 and GET reads them, before and after a restart', async (t) => {
  const started = Date.now();
  const body = patternBytes(MiB + 5, 0x51);
  let env = await startS3WithColdObjects(body, { multipart: true });
  t.after(() => env.cleanup());
  for (const i of [0, 1, 2]) {
    loseAndReplacePool(env.daemon, i);
    const r = await rebuildPool(env.daemon, i);
    assert.equal(r.notRebuilt, 0, JSON.stringify(r));
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `new-${i}`, Body: patternBytes(MiB + 5, i) }));
  }
  const check = async (when: string) => {
    for (const key of ['k', 'mp']) {
      assert.deepEqual(await outcome(env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: key }))), [200, 'OK'], `HEAD ${key} ${when}`);
      const got = Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }))).Body!.transformToByteArray());
      assert.ok(got.equals(body), `GET ${key} ${when}`);
    }
  };
  await check('before the restart');
  await env.daemon.kill();
  env = await restartS3(env);
  await dropCache(env.daemon);
  await check('after the restart');
  t.diagnostic(`${Date.now() - started} ms`);
});
