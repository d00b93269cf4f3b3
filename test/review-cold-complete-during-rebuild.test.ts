// A multipart upload completed while a pool rebuild lands its parts' stripes:
// the part records the rebuild listed are gone by the flip (their segments
// now belong to the object), and the rebuilt shards must still reach the
// index. In process with the real ObjectStore, stripe store, segment files,
// LMDB index, ColdObjectHolders and Reconstructor, so the completion can run
// exactly between the rebuilt records landing and their flip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import type { ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldPoolsIn, patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;

async function* bodyOf(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}

async function readAll(store: ObjectStore, bucket: string, key: string): Promise<Buffer> {
  const h = store.openObject(bucket, key);
  const pieces: Buffer[] = [];
  for await (const piece of h.read(0, h.rec.sizeBytes)) pieces.push(piece as Buffer);
  return Buffer.concat(pieces);
}

test('an upload completed between its parts rebuilt records landing and their flip: the object gets the rebuilt shards', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-cold-complete-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  // Cold buckets use only the manager's LMDB (hot pools: none here).
  const manager = { meta, pools: new Map() } as unknown as VolumeManager;
  const store = await ObjectStore.open(manager, stripes);
  t.after(async () => {
    await rc.stop();
    await stripes.close();
    await meta.close();
  });

  await store.createBucket('cold', 'cold');
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
