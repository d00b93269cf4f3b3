// A stripe queued for another lost shard (waiting for a pool) stays queued
// when a pool rebuild lands its shard on the rebuilt pool: the batched path
// rebuilds only that pool's shard, so the stripe is not whole. Two pools
// lost (cold-2 replaced, cold-3 gone); a degraded GET queues the object's
// stripes, which wait for a pool; `rebuild cold-2` lands their cold-2
// shards; then cold-3 comes back empty and the queue's retry must rebuild
// the cold-3 shards. A second object nobody read has its cold-3 shards on
// an offline pool too: the rebuild, which sees that pool offline, queues it. In process with the real ObjectStore, stripe store,
// segment files, LMDB index, ColdObjectHolders and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import type { ObjectStore } from '../src/dataplane/objects/store.js';
import { bodyOf, coldObjectStore, MiB, patternBytes, readObject } from './helpers/cold.js';

const readAll = (store: ObjectStore, key: string) => readObject(store, 'cold', key);

test('a pool rebuild that lands one shard of a stripe queued for another lost shard leaves it queued, and the queue rebuilds the other once a pool is back', async (t) => {
  const { dir, stripes, rc, store } = await coldObjectStore(t, 'couchestor-review-cold-keeps-');
  const bytes = patternBytes(4 * MiB, 1);
  await store.putObject('cold', 'a', bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  const unread = patternBytes(3 * MiB, 2);
  await store.putObject('cold', 'b', bodyOf(unread), { contentHeaders: {}, userMeta: {}, expectedBytes: unread.length });

  // cold-2 replaced by an empty directory, cold-3 gone (offline).
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  fs.rmSync(path.join(dir, 'cold-3'), { recursive: true });
  // A degraded GET queues the 4 stripes; each needs 2 pools besides its 4 survivors, only cold-2 is free.
  assert.ok((await readAll(store, 'a')).equals(bytes));
  await rc.process();
  const waiting = rc.unhealthy();
  assert.equal(waiting.length, 4, JSON.stringify(waiting));

  const report = await rc.rebuildPool('cold-2');
  assert.equal(report.stripesRebuilt, 4 + 3, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0, JSON.stringify(report));
  for (const key of ['a', 'b']) {
    for (const ref of (store.headObject('cold', key).segments[0] as ColdSegment).stripes) {
      assert.ok(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')), 'cold-2 shard rebuilt');
    }
  }
  // Their cold-3 shards are still gone: they stay queued (not reported Healthy), the unread object's too.
  assert.equal(rc.unhealthy().length, 4 + 3, `still queued for cold-3: ${JSON.stringify(rc.unhealthy())}`);
  assert.equal(rc.counts().Healthy, 0, JSON.stringify(rc.counts()));

  // cold-3 comes back empty: the queue's retry (the timer's pass) rebuilds the cold-3 shards.
  fs.mkdirSync(path.join(dir, 'cold-3'));
  await rc.retryWaiting();
  assert.equal(rc.unhealthy().length, 0, JSON.stringify(rc.unhealthy()));
  // Two other pools lost: every stripe still has 4 shards.
  fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
  fs.rmSync(path.join(dir, 'cold-5'), { recursive: true });
  assert.ok((await readAll(store, 'a')).equals(bytes), 'byte-exact with cold-0 and cold-5 lost');
  assert.ok((await readAll(store, 'b')).equals(unread), 'unread object byte-exact with cold-0 and cold-5 lost');
});
