// Reconstruction-queue repair speed of cold S3 object stripes (the
// degraded-read path, not `couchestor rebuild`): ONE object of LARGE_MIB
// (64) MiB beside SMALL_OBJECTS (64) objects of the same total size, both in
// STRIPE_KIB (64) KiB stripes, same run, in process (real ObjectStore,
// stripe store, segment files, LMDB index, Reconstructor). cold-2 is lost
// and replaced by an empty directory, every object stripe is queued as a
// degraded read queues it (enqueueHolder), and the queue's passes are timed
// until no stripe is left. Each pass lands the stripes (durable), then flips
// them in the object index: a flip per stripe rewrote the whole record of
// the object each time (O(stripes^2) bytes for one object).
// Printed per series: MB/s of object data made whole (1e6 bytes / s),
// medians of ROUNDS rounds (a fresh store each), and the ratio large / small
// of the same round; also MB per CPU-second of this process (user + system,
// libuv's threads included), which moves less with the load others put on
// the shared machine.
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-queue-repair.js`.
// About 30 s on this 2-core machine.
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
import { ObjectStore } from '../src/dataplane/objects/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { bodyOf, coldPoolsIn, patternBytes } from '../test/helpers/cold.js';

const MiB = 1024 * 1024;
const LARGE_MIB = Number(process.env.LARGE_MIB ?? 64);
const SMALL_OBJECTS = Number(process.env.SMALL_OBJECTS ?? 64);
const STRIPE_BYTES = Number(process.env.STRIPE_KIB ?? 64) * 1024;
const ROUNDS = 3;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Puts `objects` objects of `objectBytes`, loses and replaces cold-2, queues every stripe; returns the queue's drain time. */
async function round(objects: number, objectBytes: number): Promise<{ seconds: number; cpuSeconds: number; stripes: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-queue-repair-'));
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${STRIPE_BYTES}`);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(policy, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  const holders = new ColdObjectHolders(meta, stripes);
  rc.addSource(holders);
  try {
    const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
    await store.createBucket('cold', 'cold');
    for (let i = 0; i < objects; i++) {
      const bytes = patternBytes(objectBytes, i + 1);
      await store.putObject('cold', `o${i}`, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
    }
    fs.rmSync(path.join(dir, 'cold-2'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'cold-2'));
    const keys = [...holders.list()].map(([key]) => key);
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (const key of keys) rc.enqueueHolder(holders, key, 'degraded read');
    while (rc.counts().Degraded + rc.counts().Reconstructing > 0) await rc.process();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    assert.equal(rc.counts().Failed, 0, JSON.stringify(rc.unhealthy().slice(0, 3)));
    // Every stripe has its cold-2 shard back (a queue pass lands it on the one pool free: cold-2).
    for (const [, ref] of holders.list()) assert.ok(await stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === 'cold-2')), 'cold-2 shard rebuilt');
    return { seconds, cpuSeconds, stripes: keys.length };
  } finally {
    await rc.stop();
    await stripes.close();
    await meta.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const largeBytes = LARGE_MIB * MiB;
const large: number[] = [];
const small: number[] = [];
const ratios: number[] = [];
const largePerCpu: number[] = [];
const smallPerCpu: number[] = [];
console.log(`ec-queue-repair: ${LARGE_MIB} MiB in ${largeBytes / STRIPE_BYTES} stripes of ${STRIPE_BYTES / 1024} KiB (4+2), cold-2 lost and replaced, every stripe queued, ${ROUNDS} rounds`);
for (let r = 0; r < ROUNDS; r++) {
  const l = await round(1, largeBytes);
  const s = await round(SMALL_OBJECTS, largeBytes / SMALL_OBJECTS);
  const lm = largeBytes / l.seconds / 1e6;
  const sm = largeBytes / s.seconds / 1e6;
  large.push(lm);
  small.push(sm);
  ratios.push(lm / sm);
  largePerCpu.push(largeBytes / 1e6 / l.cpuSeconds);
  smallPerCpu.push(largeBytes / 1e6 / s.cpuSeconds);
  console.log(
    `  round ${r + 1}: one object ${l.stripes} stripes in ${l.seconds.toFixed(2)} s (${lm.toFixed(1)} MB/s, CPU ${l.cpuSeconds.toFixed(2)} s); ` +
      `${SMALL_OBJECTS} objects ${s.stripes} stripes in ${s.seconds.toFixed(2)} s (${sm.toFixed(1)} MB/s, CPU ${s.cpuSeconds.toFixed(2)} s); large / small ${(lm / sm).toFixed(2)}x`,
  );
}
console.log(`  queue repair, one large object       ${median(large).toFixed(1)} MB/s   runs ${large.map((v) => v.toFixed(1)).join(' ')}`);
console.log(`  queue repair, many small objects     ${median(small).toFixed(1)} MB/s   runs ${small.map((v) => v.toFixed(1)).join(' ')}`);
console.log(`  MB per CPU-second: large ${median(largePerCpu).toFixed(1)} (runs ${largePerCpu.map((v) => v.toFixed(1)).join(' ')}), small ${median(smallPerCpu).toFixed(1)} (runs ${smallPerCpu.map((v) => v.toFixed(1)).join(' ')})`);
console.log(`  ratio large / small (same round)     ${median(ratios).toFixed(2)}x   runs ${ratios.map((v) => v.toFixed(2)).join(' ')}`);
console.log(`  load average during the run: ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
