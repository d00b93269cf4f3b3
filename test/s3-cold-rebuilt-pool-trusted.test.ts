// A replaced cold pool's distrust (objects/pool-disks.ts) ends with a complete
// rebuild onto its disk: HEAD of a cold object written before the
// replacement reads no shard header again (couchestor_s3_cold_header_reads_total),
// in the process that rebuilt and after a restart. (A pool whose rebuild left
// stripes not rebuilt stays distrusted: s3-cold-lost-pool-unverified.)
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MiB, dropCache, loseAndReplacePool, patternBytes, rebuildPool } from './helpers/cold.js';
import { coldPoolsUnverified, restartS3, scrapeValue, startS3WithColdObjects, type S3Env } from './helpers/s3-env.js';

const headerReads = (env: S3Env) => scrapeValue(env, 'couchestor_s3_cold_header_reads_total');

test('three of 4+2 cold pools replaced and fully rebuilt: HEAD of older objects reads no shard header, 200 with the bytes, before and after a restart', async (t) => {
  const started = Date.now();
  const body = patternBytes(MiB + 5, 0x61);
  let env = await startS3WithColdObjects(body, { multipart: true });
  t.after(() => env.cleanup());
  for (const i of [0, 1, 2]) {
    loseAndReplacePool(env.daemon, i);
    // New objects land at the old shards' places on the new disks (a header check would be needed without the rebuild).
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `new-${i}`, Body: patternBytes(MiB + 5, i) }));
    const r = await rebuildPool(env.daemon, i);
    assert.equal(r.notRebuilt, 0, JSON.stringify(r));
  }
  const check = async (when: string) => {
    const before = (await headerReads(env)) ?? -1;
    for (const key of ['k', 'mp']) {
      const head = await env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: key }));
      assert.equal(head.ContentLength, body.length, `HEAD ${key} ${when}`);
    }
    assert.equal(await headerReads(env), before, `HEAD read no shard header ${when}`);
    for (const key of ['k', 'mp']) {
      const got = Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }))).Body!.transformToByteArray());
      assert.ok(got.equals(body), `GET ${key} ${when}`);
    }
  };
  await check('before the restart');
  assert.deepEqual(await coldPoolsUnverified(env), [0, 0, 0, 0, 0, 0], 'no pool left unverified');
  await env.daemon.kill();
  env = await restartS3(env);
  await dropCache(env.daemon);
  await check('after the restart');
  assert.equal(await headerReads(env), 0, 'no header read since the restart');
  assert.deepEqual(await coldPoolsUnverified(env), [0, 0, 0, 0, 0, 0], 'no pool left unverified after the restart');
  t.diagnostic(`${Date.now() - started} ms`);
});
