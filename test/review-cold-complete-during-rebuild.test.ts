// A multipart upload completed while a pool rebuild lands its parts' stripes:
// the part records the rebuild listed are gone by the flip (their segments
// now belong to the object), and the rebuilt shards must still reach the
// index. In process with the real ObjectStore, stripe store, segment files,
// LMDB index, ColdObjectHolders and Reconstructor, so the completion can run
// exactly between the rebuilt records landing and their flip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { bodyOf, coldObjectStore, MiB, patternBytes, readObject as readAll } from './helpers/cold.js';

test('an upload completed between its parts rebuilt records landing and their flip: the object gets the rebuilt shards', async (t) => {
  const { dir, stripes, rc, store } = await coldObjectStore(t, 'couchestor-review-cold-complete-');

  const upload = await store.createUpload('cold', 'mp', {}, {});
  const parts = [patternBytes(5 * MiB, 1), patternBytes(MiB + 7, 2)];
  const listed: { partNumber: number; etag: string }[] = [];
  const partOwners = new Set<string>();
  for (const [i, bytes] of parts.entries()) {
    const rec = await store.uploadPart('cold', 'mp', upload.uploadId, i + 1, bodyOf(bytes), { expectedBytes: bytes.length });
    listed.push({ partNumber: i + 1, etag: rec.etag });
    for (const r of (rec.segment as ColdSegment).stripes) partOwners.add(r.ownerId);
  }

  // Lose and replace cold-2.
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));
  // A new object first takes the start of the new cold-2 segment, so the rebuilt records land at
  // other places than the stale references name (at the very place, a stale reference would be
  // served by the rebuilt record whether or not it was flipped).
  await store.putObject('cold', 'shift', bodyOf(patternBytes(1000, 3)), { contentHeaders: {}, userMeta: {}, expectedBytes: 1000 });

  // Complete the upload once the first parts' rebuilt records are written, before their flip.
  let completed = false;
  const land = stripes.landLostShards.bind(stripes);
  stripes.landLostShards = async (pool, segStore, items) => {
    const next = await land(pool, segStore, items);
    if (!completed && items.some((it) => partOwners.has(it.ref.ownerId))) {
      completed = true;
      await store.completeUpload('cold', 'mp', upload.uploadId, listed);
    }
    return next;
  };

  const report = await rc.rebuildPool('cold-2');
  assert.ok(completed, 'the completion ran between landing and flip');
  assert.equal(report.objectStripesChecked, 5 + 2 + 1);

  // Every stripe of the completed object has its cold-2 shard back (durable, the index names it).
  const obj = store.headObject('cold', 'mp');
  const missing: string[] = [];
  for (const seg of obj.segments as ColdSegment[]) {
    for (const ref of seg.stripes) {
      const i = ref.shards.findIndex((s) => s.pool === 'cold-2');
      if (!(await stripes.shardPresent(ref, i))) missing.push(`${ref.ownerId}:${ref.chunkIndex}`);
    }
  }
  assert.deepEqual(missing, [], `stripes still missing their cold-2 shard after the rebuild (report ${JSON.stringify(report)})`);
  assert.equal(report.stripesRebuilt, 5 + 2, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0);

  // Two other pools lost: the object reads byte-exact (it would not with cold-2's shards still missing).
  fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
  fs.rmSync(path.join(dir, 'cold-5'), { recursive: true });
  const got = await readAll(store, 'cold', 'mp');
  assert.ok(got.equals(Buffer.concat(parts)), 'completed object reads byte-exact with cold-0 and cold-5 lost');
});
