// Shared setup of the cold-rebuild-object-flip-* tests (in process: real
// ObjectStore, stripe store, segment files, LMDB index and Reconstructor).
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import { parsePolicyYaml } from '../../src/dataplane/ec/policy.js';
import { Reconstructor } from '../../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../../src/dataplane/objects/cold-holders.js';
import type { ColdSegment } from '../../src/dataplane/objects/cold-segments.js';
import { ObjectStore } from '../../src/dataplane/objects/store.js';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, patternBytes } from './cold.js';
export { readObject as readAll } from './cold.js';

const KiB = 1024;
export const STRIPE_BYTES = 64 * KiB; // 16 KiB shards at 4+2: many stripes per object cheaply
export const OBJECT_BYTES = 4 * 1024 * KiB; // 64 stripes
export const STRIPES_PER_OBJECT = OBJECT_BYTES / STRIPE_BYTES;

export async function setupFlipBatch(t: TestContext) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-flip-batch-'));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${STRIPE_BYTES}`);
  assert.notEqual(policy, DEFAULT_EC_POLICY_YAML);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(policy, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  const holders = new ColdObjectHolders(meta, stripes);
  rc.addSource(holders);
  const manager = { meta, pools: new Map() } as unknown as VolumeManager;
  const store = await ObjectStore.open(manager, stripes);
  t.after(async () => {
    try {
      await rc.stop();
      await stripes.close();
      await meta.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  await store.createBucket('cold', 'cold');
  const put = (key: string, bytes: Buffer) => store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  /** Loses and replaces cold-2; a small object then takes the start of its new segment (rebuilt records land elsewhere than the stale references name). */
  const loseCold2 = async () => {
    fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'cold-2'));
    await put('shift', patternBytes(1000, 3));
  };
  const missingCold2 = async (key: string): Promise<number> => {
    let n = 0;
    for (const seg of store.headObject('cold', key).segments as ColdSegment[]) {
      for (const ref of seg.stripes) if (!(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')))) n++;
    }
    return n;
  };
  const loseTwoMore = () => {
    fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
    fs.rmSync(path.join(dir, 'cold-5'), { recursive: true });
  };
  return { stripes, rc, holders, store, put, loseCold2, missingCold2, loseTwoMore };
}

