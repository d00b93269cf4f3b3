// The cold tier of an S3 object store in process, over real segment files: a MetaStore in
// `dir`, cold pools in dir-0..dir-N registered in the index as the daemon does (putPool), a
// StripeStore with 1 MiB segments (so they roll and seal often), an ObjectStore and a
// SegmentCompactor run by hand (intervalMs 0). Opened again over the same `dir`, it is a restart.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import { SegmentCompactor } from '../../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../../src/dataplane/ec/policy.js';
import { StripeStore } from '../../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../../src/dataplane/meta/store.js';
import { ObjectStore } from '../../src/dataplane/objects/store.js';
import { Pool } from '../../src/dataplane/pools/pool.js';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';

const MiB = 1024 * 1024;
const COLD_NAMES = ['cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4', 'cold-5'];

/** A start over `dir` with cold pools `names` (default cold-0..cold-5), the i-th in directory dir-i. */
export async function openColdObjectStore(dir: string, names: readonly string[] = COLD_NAMES) {
  const meta = MetaStore.open(dir);
  const pools = names.map((name, i) => {
    const p = path.join(dir, `dir-${i}`);
    fs.mkdirSync(p, { recursive: true });
    return new Pool({ name, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
  });
  for (const p of pools) await meta.pools.put(p.name, p.rec);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  stripes.segmentOptions = { segmentSizeBytes: MiB };
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  const close = async () => {
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  return { meta, stripes, compactor, store, close };
}
