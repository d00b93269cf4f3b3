// Space accounting of a rebuilt record that lands at the very place a stale
// reference names (a replaced pool's fresh segments reuse the old places)
// and whose flip loses its compare-and-swap to an overwrite: that record is
// counted dead exactly once. The overwrite's free of the old stripe counts
// the stale place, which is now that record's place, so releaseReplaced must
// not count it again (a "fix" comparing identity there would count it
// twice). In process, with the real stripe store, segment files, LMDB index
// and Reconstructor, so the overwrite lands exactly between the rebuilt
// record becoming durable and its flip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore, type ShardRef, type StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB, freeColdSegment, settleColdSegment, writeColdSegment, type ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { coldPoolsIn, patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;

interface Rec {
  key: string;
  versionId: number;
  segments: ColdSegment[];
}

const key = (n: number) => Buffer.from([1, 0, 0, 0, 1, 0x61 + n]);
const at = (s: ShardRef) => `${s.pool}/${s.segment}/${s.offsetBytes}`;

test('an unflipped rebuilt record at the very place of the stale reference is counted dead once', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-same-place-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  t.after(async () => {
    await rc.stop();
    await stripes.close();
    await meta.close();
  });
  const objects = meta.openDB<Rec, Buffer>(OBJECTS_DB);
  let nextFileId = 1;
  /** What ObjectStore.putObject does: stripes durable, the index record, then the replaced version's stripes freed. */
  const putObject = async (indexKey: Buffer, bytes: Buffer): Promise<Rec> => {
    async function* body() {
      yield bytes;
    }
    const fileId = nextFileId++;
    const seg = await writeColdSegment(stripes, fileId, body(), { maxBytes: 64 * MiB }, () => undefined);
    const rec: Rec = { key: indexKey.toString('hex'), versionId: fileId, segments: [seg] };
    const prev = objects.get(indexKey);
    await objects.put(indexKey, rec);
    await meta.durable();
    settleColdSegment(seg);
    if (prev) for (const s of prev.segments) freeColdSegment(stripes, s);
    return rec;
  };

  await putObject(key(0), patternBytes(MiB, 1)); // one stripe: its cold-2 shard is cold-2's first record
  const stale = objects.get(key(0))!.segments[0]!.stripes[0]!;
  const staleOnPool = stale.shards.find((s) => s.pool === 'cold-2')!;
  fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cold-2'));

  const dead: string[] = [];
  stripes.onShardsDead = (shards) => dead.push(...shards.map(at));
  let rebuilt: StripeRef | null = null;
  // The pool rebuild lands object stripes through landLostShards (the batched path).
  const land = stripes.landLostShards.bind(stripes);
  stripes.landLostShards = async (pool, store, items) => {
    const next = await land(pool, store, items);
    rebuilt = next[0]!;
    await putObject(key(0), patternBytes(MiB + 5, 2)); // the overwrite wins the race to the index
    return next;
  };
  const report = await rc.rebuildPool('cold-2');
  assert.ok(rebuilt !== null, 'the overwrite ran between landing and flip');
  assert.equal(report.stripesRebuilt, 0, JSON.stringify(report));
  const orphan = (rebuilt as StripeRef).shards.find((s) => s.pool === 'cold-2')!;
  // The scenario: the rebuilt record sits exactly where the stale reference points.
  assert.equal(at(orphan), at(staleOnPool), 'rebuilt record at the stale place');
  // Counted dead once: by the overwrite's free of the old stripe (its stale place), not again by the failed flip.
  assert.equal(dead.filter((p) => p === at(orphan)).length, 1, `dead places: ${JSON.stringify(dead)}`);
});
