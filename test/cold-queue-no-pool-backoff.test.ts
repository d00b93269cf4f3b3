// A stripe the reconstruction queue cannot place (no online pool holds no
// shard of it) waits for the retry timer instead of being rebuilt again by
// every pass that later degraded reads start: reading an object with two
// pools lost and none free costs one rebuild attempt per stripe, not one per
// stripe per pass (which made a 48 MiB GET take about 100 s on the 2-core VM).
// In process, with the real stripe store, segment files, LMDB index and
// Reconstructor; rebuild attempts are counted at StripeStore.prepareRebuild.
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
import { ColdObjectHolders, objectStripeContext } from '../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB, settleColdSegment, writeColdSegment, type ColdSegment } from '../src/dataplane/objects/cold-segments.js';
import { coldPoolsIn, patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;
const STRIPES = 32;

test('stripes with no pool to land on are not rebuilt again by every pass degraded reads start', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-queue-backoff-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  // The retry timer is never started here: only passes that degraded reads start run.
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  t.after(async () => {
    await rc.stop();
    await stripes.close();
    await meta.close();
  });
  const objects = meta.openDB<{ key: string; versionId: number; segments: ColdSegment[] }, Buffer>(OBJECTS_DB);
  const indexKey = Buffer.from([1, 0, 0, 0, 1, 0x61]);
  const data = patternBytes(STRIPES * MiB, 9);
  async function* body() {
    yield data;
  }
  const seg = await writeColdSegment(stripes, 1, body(), { maxBytes: 64 * MiB }, () => undefined);
  await objects.put(indexKey, { key: indexKey.toString('hex'), versionId: 1, segments: [seg] });
  await meta.durable();
  settleColdSegment(seg);

  // Two pools lost, none free: every stripe reads degraded and cannot be placed anywhere.
  fs.rmSync(path.join(dir, 'cold-0'), { recursive: true });
  fs.rmSync(path.join(dir, 'cold-1'), { recursive: true });
  let attempts = 0;
  const prepare = stripes.prepareRebuild.bind(stripes);
  stripes.prepareRebuild = (ref, inspected) => {
    attempts++;
    return prepare(ref, inspected);
  };
  const hex = indexKey.toString('hex');
  const read: Buffer[] = [];
  // What a GET does: one stripe after the other, each naming its object.
  for (const ref of seg.stripes) read.push(await stripes.readStripe(ref, objectStripeContext(hex, ref)));
  await rc.process();
  assert.ok(Buffer.concat(read).equals(data), 'every stripe reads back byte-exact, degraded');
  const unhealthy = rc.unhealthy() as unknown as { state: string; reason: string }[];
  // Stripes whose two lost shards were both parity read healthy (only data shards are read).
  const degraded = stripes.counters.degradedReads;
  assert.ok(degraded >= STRIPES / 2, `${degraded} degraded reads`);
  assert.equal(unhealthy.length, degraded, 'every stripe read degraded is queued');
  assert.ok(unhealthy.every((u) => u.state === 'Degraded' && u.reason.startsWith('waiting for a pool')), JSON.stringify(unhealthy[0]));
  assert.ok(attempts <= degraded, `${attempts} rebuild attempts for ${degraded} queued stripes: failed ones were retried by passes before the retry timer`);

  // The retry timer's pass does try them again.
  const before = attempts;
  await rc.retryWaiting();
  assert.equal(attempts - before, degraded, 'the timer pass retries every waiting stripe once');
});
