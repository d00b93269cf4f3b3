// Setup the cold-pool rebuild tests share: a cold pool lost and replaced by an
// empty directory (in process), the a/b pair whose rebuild of cold-2 skipped a,
// the listing and per-pool gauges read through the API and /metrics, and a cold volume
// rebuilt beside S3 object stripes, with a damaged object record as the rebuild's fault.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import type { PoolRebuildReport, Reconstructor } from '../../src/dataplane/ec/reconstruction.js';
import { buildApi } from '../../src/control/api.js';
import { createMetrics } from '../../src/control/metrics/index.js';
import { metricsSource } from '../../src/control/observe.js';
import { HeatTracker } from '../../src/control/heat.js';
import { ColdObjectHolders } from '../../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB } from '../../src/dataplane/objects/cold-segments.js';
import { readPoolIdentity, writePoolIdentity } from '../../src/dataplane/pools/identity.js';
import type { TestDaemon } from './daemon.js';
import { coldPairWithHot1Offline, openColdTierManager, tempDirClosing, writeVolume } from './volume.js';

/**
 * In process: cold pool `pool` (a directory under `dir`) lost with every shard in it, and replaced by a new, empty
 * one at the same path given the pool's identity, as `pools replace` gives it (the running daemon never takes a
 * directory without it: an empty mount point). Without `pools replace`'s whole-pool rebuild record: these tests
 * run the rebuild and assert its records themselves.
 */
export function replacePoolDir(dir: string, pool: string): void {
  const poolDir = path.join(dir, pool);
  const identity = readPoolIdentity(poolDir);
  fs.rmSync(poolDir, { recursive: true });
  fs.mkdirSync(poolDir);
  if (identity !== null) writePoolIdentity(poolDir, identity);
}

/**
 * Holds the next group a pool rebuild reads its sources for (the stripe
 * store's prepareLostShards, which every group of a run goes through before
 * it lands anything, on the fast path or the slow one) until release(): the
 * run cannot end meanwhile, so its running state can be observed across
 * awaits (an HTTP round trip, the API's start) without racing its end.
 * `reached` resolves when the held call is made. Later calls pass through.
 */
export function holdNextRebuildGroup(m: VolumeManager): { reached: Promise<void>; release(): void } {
  const stripes = m.cold!.stripes;
  const prepare = stripes.prepareLostShards.bind(stripes);
  let reachedR!: () => void;
  let releaseR!: () => void;
  const reached = new Promise<void>((r) => (reachedR = r));
  const gate = new Promise<void>((r) => (releaseR = r));
  stripes.prepareLostShards = (async (...args: Parameters<typeof prepare>) => {
    stripes.prepareLostShards = prepare;
    reachedR();
    await gate;
    return prepare(...args);
  }) as typeof prepare;
  return { reached, release: () => releaseR() };
}

/**
 * coldPairWithHot1Offline in a temp dir named `prefix`... (its manager closed
 * and the dir removed when `t` ends), then cold-2 lost and replaced, and a
 * whole-pool rebuild of cold-2 run: `first` is its report (it skips a: hot-1
 * is offline, at `${hot1}.gone`). The callers assert on it.
 */
export async function pairWithSkippedRebuild(
  t: TestContext,
  prefix: string,
): Promise<{ dir: string; m: VolumeManager; r: Reconstructor; hot1: string; want: Map<string, Buffer>; first: PoolRebuildReport }> {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, prefix, () => m!);
  m = await openColdTierManager(dir);
  const pair = await coldPairWithHot1Offline(m, dir);
  m = pair.m;
  replacePoolDir(dir, 'cold-2');
  const r = m.cold!.reconstructor;
  const first = await r.rebuildPool('cold-2');
  return { dir, m, r, hot1: pair.hot1, want: pair.want, first };
}

/** A pool GET /v1/cold lists in incompleteRebuilds (the fields these tests compare). */
export interface ListedRebuild {
  pool: string;
  volumesSkipped: string[];
  notRebuilt: number;
  interrupted?: true;
}

/** The value of `name{pool="<pool>"}` in one scrape of daemon `d`'s /metrics (undefined: no such series). */
export async function poolGauge(d: TestDaemon, name: string, pool: string): Promise<number | undefined> {
  const text = await (await fetch(`http://${d.info.metrics.host}:${d.info.metrics.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{pool="${pool}"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** In process: GET /v1/cold's incompleteRebuilds through the real API. */
export async function listedByApi(m: VolumeManager): Promise<ListedRebuild[]> {
  const app = buildApi(m);
  try {
    const res = await app.inject({ method: 'GET', url: '/v1/cold' });
    assert.equal(res.statusCode, 200, res.body);
    return (res.json() as { incompleteRebuilds: ListedRebuild[] }).incompleteRebuilds;
  } finally {
    await app.close();
  }
}

/** In process: the value of `name{pool="<pool>"}` in one scrape of the real metrics registry over `m` (undefined: no such series). */
export async function managerPoolGauge(m: VolumeManager, name: string, pool: string): Promise<number | undefined> {
  const registry = createMetrics(metricsSource(m, new HeatTracker(m, 60_000, 1_000), () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 })));
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{pool="${pool}"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/**
 * Cold volume 'c' of `stripes` 1 MiB stripes (one 4+2 stripe a chunk) written with random bytes and destaged; cold
 * S3 objects' stripes join the rebuild, as the daemon's S3 front end registers them. Returns the bytes written.
 */
export async function coldVolumeWithObjectSource(t: TestContext, m: VolumeManager, stripes: number): Promise<Buffer> {
  const MiB = 1024 * 1024;
  await m.createVolume({ name: 'c', sizeBytes: stripes * MiB, tier: 'cold', pool: 'hot-0' });
  const want = crypto.randomBytes(stripes * MiB);
  await writeVolume(m.openVolume('c'), 0, want);
  await m.cold!.destager.drain();
  addObjectSource(t, m);
  return want;
}

/**
 * coldPairWithHot1Offline's a and b from `m` over `dir` (restarted: use the `m` returned), hot-1 back at its path when
 * `hot1Back` (else offline, at `${hot1}.gone`), then c (`stripes` stripes) beside the S3 object source. `want` holds all three.
 */
export async function coldTrioWithObjectSource(
  t: TestContext,
  m0: VolumeManager,
  dir: string,
  stripes: number,
  opts: { hot1Back: boolean },
): Promise<{ m: VolumeManager; hot1: string; want: Map<string, Buffer> }> {
  const pair = await coldPairWithHot1Offline(m0, dir);
  const m = pair.m;
  if (opts.hot1Back) fs.renameSync(`${pair.hot1}.gone`, pair.hot1);
  const want = new Map(pair.want);
  want.set('c', await coldVolumeWithObjectSource(t, m, stripes));
  return { m, hot1: pair.hot1, want };
}

/** Registers cold S3 objects' stripes with `m`'s rebuilds, as the daemon's S3 front end does (again after a restart in process); removed when `t` ends. */
export function addObjectSource(t: TestContext, m: VolumeManager): void {
  t.after(m.cold!.reconstructor.addSource(new ColdObjectHolders(m.meta, m.cold!.stripes)));
}

/**
 * The fault: an S3 object record whose segments are not a list (bucket id 9, key "bad"), written through LMDB; the
 * rebuild's listing of the object stripes throws on it. Returns what removes it.
 */
export async function putDamagedObjectRecord(m: VolumeManager): Promise<() => Promise<boolean>> {
  const objects = m.meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const badKey = Buffer.from([1, 0, 0, 0, 9, ...Buffer.from('bad')]);
  await objects.put(badKey, { key: 'bad', versionId: 1, segments: 7 });
  return () => objects.remove(badKey);
}

/** Bytes in cold pool `pool`'s segment files (a directory under `dir`): what a rebuild has landed there. */
export function poolBytes(dir: string, pool: string): number {
  const segDir = path.join(dir, pool, 'segments');
  return fs.readdirSync(segDir).reduce((sum, f) => sum + fs.statSync(path.join(segDir, f)).size, 0);
}

/** Stripes of volumes `names` (open in `m`) whose shard on cold pool `pool` is there (header identity read back), of how many. */
export async function shardsPresentOn(m: VolumeManager, pool: string, names: string[]): Promise<{ present: number; stripes: number }> {
  let present = 0;
  let stripes = 0;
  for (const name of names) {
    for (const [, ref] of m.openVolume(name).stripes) {
      const i = ref.shards.findIndex((s) => s.pool === pool);
      assert.ok(i >= 0, `${name}: every stripe has a shard on ${pool} (4+2 over 6 pools)`);
      stripes++;
      if (await m.cold!.stripes.shardPresent(ref, i)) present++;
    }
  }
  return { present, stripes };
}

/** Flips one byte of a shard's record in its segment file on `poolDir` (200 bytes in: its payload), so the shard fails its CRC and a rebuild writes it again elsewhere. */
export function damageShardInPlace(poolDir: string, shard: { segment: number; offsetBytes: number }): void {
  const segFile = path.join(poolDir, 'segments', `seg-${String(shard.segment).padStart(12, '0')}.cseg`);
  const fd = fs.openSync(segFile, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, shard.offsetBytes + 200);
    b[0] = b[0]! ^ 0x5a;
    fs.writeSync(fd, b, 0, 1, shard.offsetBytes + 200);
  } finally {
    fs.closeSync(fd);
  }
}
