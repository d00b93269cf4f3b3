// A cold pool replaced again while its rebuild runs: the rebuild answers not
// complete (the disk there now is not the one it landed on: the pool is listed
// interrupted, 94d2afc), and the object store keeps distrusting the pool
// for older objects (objects/pool-disks.ts), in this process and after a
// reopen; a complete rebuild onto the new disk ends it. In process with the
// real ObjectStore, stripe store, segment files, LMDB index, ColdObjectHolders
// and Reconstructor, so the second replacement lands exactly mid-run.
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { Reconstructor } from '../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { ObjectStore } from '../src/dataplane/objects/store.js';
import { writePoolIdentity } from '../src/dataplane/pools/identity.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, MiB, patternBytes, readObject, tempDir } from './helpers/cold.js';
import { holdNextRebuildGroup, replacePoolDir } from './helpers/rebuild.js';

/** The cold tier and object store over `dir`, as a daemon start builds them (the object store told of pool rebuilds). */
async function openTier(dir: string, first: boolean) {
  const pools = coldPoolsIn(dir, !first);
  if (first) for (const p of pools) writePoolIdentity(p.rec.path, { pool: p.name, poolUuid: `uuid-${p.name}`, dataDirId: 'test' });
  const meta = MetaStore.open(path.join(dir, 'meta'));
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  stripes.useIndex(meta);
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  const store = await ObjectStore.open({ meta, pools: new Map(pools.map((p) => [p.name, p])) } as unknown as VolumeManager, stripes);
  rc.addSource(new ColdObjectHolders(meta, stripes, store.coldPoolDisks));
  const close = async () => {
    await rc.stop();
    await stripes.close();
    await meta.close();
  };
  return { stripes, rc, store, close };
}

test('a cold pool replaced again during its rebuild stays unverified (in process and after a reopen) until a rebuild onto the new disk completes', async (t) => {
  const started = Date.now();
  const dir = tempDir(t, 'couchestor-replaced-during-rebuild-');
  let tier = await openTier(dir, true);
  t.after(() => tier.close());
  await tier.store.createBucket('cold', 'cold');
  const body = patternBytes(3 * MiB + 5, 0x63);
  await tier.store.putObject('cold', 'k', bodyOf(body), { contentHeaders: {}, userMeta: {}, expectedBytes: body.length });
  const unverified = () => tier.store.coldPoolDisks!.unverifiedPools().get('cold-2');
  assert.equal(unverified(), false);

  replacePoolDir(dir, 'cold-2');
  assert.equal(unverified(), true, 'replaced: unverified');
  const held = holdNextRebuildGroup({ cold: { stripes: tier.stripes } } as unknown as VolumeManager);
  const running = tier.rc.rebuildPool('cold-2');
  await held.reached;
  await sleep(2); // another creation time for the second disk's identity
  replacePoolDir(dir, 'cold-2');
  held.release();
  const report = await running;
  t.diagnostic(`rebuild across the second replacement: ${JSON.stringify({ complete: report.complete, notRebuilt: report.notRebuilt, stripesRebuilt: report.stripesRebuilt })}`);
  assert.equal(report.complete, false, 'replaced again during the rebuild: not complete');
  assert.equal(unverified(), true, 'replaced again during the rebuild: still unverified');

  await tier.close();
  tier = await openTier(dir, false);
  assert.equal(unverified(), true, 'still unverified after a reopen');

  const again = await tier.rc.rebuildPool('cold-2');
  assert.equal(again.complete, true, JSON.stringify(again));
  assert.equal(unverified(), false, 'a complete rebuild onto the new disk verifies it');
  assert.ok((await readObject(tier.store, 'cold', 'k')).equals(body), 'the object reads back');
  t.diagnostic(`${Date.now() - started} ms`);
});
