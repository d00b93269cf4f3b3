// A queued cold-object stripe whose holder goes away between its rebuilt
// record landing and the flip, and a new object takes the same S3 key: the
// flip must not land in the new object (its stripes have other owner ids),
// which keeps its own bytes. Covers the object key (deleted and put again)
// and a part key (upload aborted, another upload completed at the key; a
// part's key now also names that object, cold-holders.ts). In process with
// the real ObjectStore, stripe store, LMDB index and Reconstructor.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import { bodyOf, coldObjectStore, MiB, patternBytes, readObject } from './helpers/cold.js';

const readAll = (store: ObjectStore, key: string) => readObject(store, 'cold', key);

async function setup(t: TestContext) {
  const { dir, stripes, rc, holders, store } = await coldObjectStore(t, 'couchestor-review-cold-stale-');
  /** Runs `between` once, after the first rebuilt record of the queue landed and before its flip. */
  const onLanded = (between: () => Promise<void>) => {
    const land = stripes.landRebuild.bind(stripes);
    let ran = false;
    stripes.landRebuild = async (ref, prepared) => {
      const next = await land(ref, prepared);
      if (!ran) {
        ran = true;
        await between();
      }
      return next;
    };
    return () => ran;
  };
  const loseCold2 = () => {
    fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'cold-2'));
  };
  return { stripes, rc, holders, store, onLanded, loseCold2 };
}

test('a queued stripe whose object is deleted and put again, or whose upload is aborted and another completed at the key, before the flip: the new object keeps its own bytes', async (t) => {
  const { stripes, rc, holders, store, onLanded, loseCold2 } = await setup(t);
  await store.putObject('cold', 'a', bodyOf(patternBytes(MiB, 1)), { contentHeaders: {}, userMeta: {}, expectedBytes: MiB });
  const first = await store.createUpload('cold', 'b', {}, {});
  await store.uploadPart('cold', 'b', first.uploadId, 1, bodyOf(patternBytes(MiB, 3)), { expectedBytes: MiB });
  const keys = [...holders.list()].map(([k]) => k);
  const objectKey = keys.find((k) => k.startsWith('o/'))!;
  const partKey = keys.find((k) => k.startsWith('p/'))!;
  assert.equal(keys.length, 2);
  assert.match(partKey, /^p\/[0-9a-f]+\/[0-9a-f]+\/0\/[0-9a-f]+$/, 'a part key names the object its upload completes into');
  loseCold2();

  // The object key: deleted and put again between landing and flip.
  const newerA = patternBytes(MiB + 5, 2);
  let ran = onLanded(async () => {
    await store.deleteObject('cold', 'a');
    await store.putObject('cold', 'a', bodyOf(newerA), { contentHeaders: {}, userMeta: {}, expectedBytes: newerA.length });
  });
  rc.enqueueHolder(holders, objectKey, 'test: cold-2 lost');
  await rc.process();
  assert.ok(ran(), 'the delete and put ran between landing and flip');
  assert.equal(rc.rebuiltStripes, 0, 'nothing flipped');
  assert.equal(holders.current(objectKey), undefined, 'the old holder key names nothing now');
  assert.ok((await readAll(store, 'a')).equals(newerA), 'the new object reads its own bytes');
  await rc.process();
  assert.equal(rc.unhealthy().length, 0, 'the stale entry left the queue');

  // The part key: upload aborted, another upload completed at the same key between landing and flip.
  const newerB = patternBytes(MiB + 9, 4);
  ran = onLanded(async () => {
    await store.abortUpload('cold', 'b', first.uploadId);
    const second = await store.createUpload('cold', 'b', {}, {});
    const part = await store.uploadPart('cold', 'b', second.uploadId, 1, bodyOf(newerB), { expectedBytes: newerB.length });
    await store.completeUpload('cold', 'b', second.uploadId, [{ partNumber: 1, etag: part.etag }]);
  });
  rc.enqueueHolder(holders, partKey, 'test: cold-2 lost');
  await rc.process();
  assert.ok(ran(), 'the abort and the other upload ran between landing and flip');
  assert.equal(rc.rebuiltStripes, 0, 'nothing flipped');
  assert.equal(holders.current(partKey), undefined, 'the old part key names nothing now');
  const rec = store.headObject('cold', 'b');
  assert.ok(!JSON.stringify(rec.segments).includes(partKey.split('/')[2]!), "the new object holds none of the aborted part's stripes");
  assert.ok((await readAll(store, 'b')).equals(newerB), 'the new object reads its own bytes');
  const ref = (rec.segments[0] as unknown as { stripes: Parameters<typeof stripes.shardPresent>[0][] }).stripes[0]!;
  for (let i = 0; i < ref.shards.length; i++) assert.ok(await stripes.shardPresent(ref, i), `new object's shard ${i} is its own record`);
  await rc.process();
  assert.equal(rc.unhealthy().length, 0, 'the stale entry left the queue');
});
