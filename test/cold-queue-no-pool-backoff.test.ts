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
import path from 'node:path';
import { objectStripeContext } from '../src/dataplane/objects/cold-holders.js';
import { coldObjectIndex, coldStores, MiB, patternBytes } from './helpers/cold.js';

const STRIPES = 32;

test('stripes with no pool to land on are not rebuilt again by every pass degraded reads start', async (t) => {
  // The retry timer is never started here: only passes that degraded reads start run.
  const cold = coldStores(t, 'couchestor-queue-backoff-');
  const { dir, stripes, rc } = cold;
  const indexKey = Buffer.from([1, 0, 0, 0, 1, 0x61]);
  const data = patternBytes(STRIPES * MiB, 9);
  // One object (file id 1): its stripes durable, then its index record.
  const seg = (await coldObjectIndex(cold, { freeReplaced: false }).putObject(indexKey, data)).segments[0]!;

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
