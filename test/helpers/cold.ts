// Helpers for cold-tier tests and benches: a daemon with the 4+2 policy and a
// chosen couchestor.yaml, the cold/destage/scrub/rebuild/fsck calls as typed
// JSON, pool and segment-file paths, lost and replaced pools, deterministic
// data, and byte comparison that names the first differing offset; in
// process, the cold object store and Reconstructor over temp-dir pools.
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI, CLIENT_ENV, TestDaemon, run } from './daemon.js';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import { readPoolIdentity, writePoolIdentity, type PoolIdentity } from '../../src/dataplane/pools/identity.js';
import { Pool } from '../../src/dataplane/pools/pool.js';
import { SegmentCompactor } from '../../src/dataplane/ec/compaction.js';
import { parsePolicyYaml } from '../../src/dataplane/ec/policy.js';
import { Reconstructor } from '../../src/dataplane/ec/reconstruction.js';
import { StripeStore } from '../../src/dataplane/ec/stripe-store.js';
import { MetaStore } from '../../src/dataplane/meta/store.js';
import { ColdObjectHolders } from '../../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB, freeColdSegment, settleColdSegment, writeColdSegment, type ColdSegment } from '../../src/dataplane/objects/cold-segments.js';
import { ObjectStore } from '../../src/dataplane/objects/store.js';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';

export const MiB = 1024 * 1024;
/** The embedded default: six cold pools, cold-0 .. cold-5, for 4+2 stripes. */
export const COLD_POOLS = 6;
/** couchestor.yaml that leaves destaging to explicit `couchestor destage` calls. */
export const MANUAL_DESTAGE_CONFIG = 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n';

export type StripeStates = { Healthy: number; Degraded: number; Reconstructing: number; Failed: number };

export interface ColdStatus {
  journalBytes: number;
  stripesWritten: number;
  healthyReads: number;
  degradedReads: number;
  failedReads: number;
  shardsRebuilt: number;
  stripes: StripeStates;
  unhealthy: { volumeId: number; chunkIndex: number; state: string; reason: string }[];
}

export interface ScrubResult {
  stripesChecked: number;
  badStripes: number;
  durationMs: number;
  stripes: StripeStates;
}

/**
 * Starts a daemon in a fresh data directory with `config` as couchestor.yaml.
 * A config written before first start means the embedded default policy file
 * is not written either, so the default 4+2 policy is written here. `env`:
 * added to the daemon's (test hooks).
 */
export async function startColdDaemon(config: string = MANUAL_DESTAGE_CONFIG, env?: NodeJS.ProcessEnv): Promise<TestDaemon> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  return TestDaemon.start({ dataDir, config, env });
}

/**
 * One admin-API call. Tests use the API rather than the couchestor CLI for
 * status polling: a CLI process costs ~1 s of start-up on a loaded 2-core box.
 */
export async function api<T>(d: TestDaemon, method: string, urlPath: string, body?: unknown): Promise<T> {
  const res = await fetch(`http://${d.info.api.host}:${d.info.api.port}${urlPath}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${urlPath}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

export function coldStatus(d: TestDaemon): Promise<ColdStatus> {
  return api<ColdStatus>(d, 'GET', '/v1/cold');
}

/** Drains the journal into stripes now (same as `couchestor destage`). */
export async function destage(d: TestDaemon): Promise<void> {
  await api<unknown>(d, 'POST', '/v1/destage');
}

/** Drops every cached stripe (same as `couchestor cache drop`): the next reads go to the shards. */
export async function dropCache(d: TestDaemon): Promise<number> {
  return (await api<{ dropped: number }>(d, 'POST', '/v1/cache/drop')).dropped;
}

/** Verifies every stripe and rebuilds bad ones (same as `couchestor scrub`). */
export function scrub(d: TestDaemon): Promise<ScrubResult> {
  return api<ScrubResult>(d, 'POST', '/v1/scrub');
}

export interface PoolRebuildResult {
  pool: string;
  stripesChecked: number;
  stripesRebuilt: number;
  bytesLanded: number;
  slowPathStripes: number;
  notRebuilt: number;
  durationMs: number;
  stripes: StripeStates;
}

/** Rebuilds onto cold pool `i` the shards it no longer holds (same as `couchestor rebuild cold-<i>`). */
export function rebuildPool(d: TestDaemon, i: number): Promise<PoolRebuildResult> {
  return api<PoolRebuildResult>(d, 'POST', '/v1/rebuild', { pool: `cold-${i}` });
}

/**
 * rebuildPool() that asserts the rebuild left nothing behind: no stripe
 * notRebuilt and all `stripes` Healthy in its report.
 */
export async function rebuildPoolAllHealthy(d: TestDaemon, i: number, stripes: number): Promise<PoolRebuildResult> {
  const report = await rebuildPool(d, i);
  assert.equal(report.notRebuilt, 0, JSON.stringify(report));
  assert.deepEqual(report.stripes, allHealthy(stripes), JSON.stringify(report));
  return report;
}

/**
 * POST /v1/rebuild of `pool` as a raw response (no status check, unlike
 * api()): for refusals, and for requests a test lets fail.
 */
export function postRebuild(d: TestDaemon, pool: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`http://${d.info.api.host}:${d.info.api.port}/v1/rebuild`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ pool }),
  });
}

/** Stripe states with all `stripes` Healthy. */
export function allHealthy(stripes: number): StripeStates {
  return { Healthy: stripes, Degraded: 0, Reconstructing: 0, Failed: 0 };
}

/** What `couchestor fsck --json` prints (the fields tests check). */
export interface FsckReport {
  stripes: { Healthy: number; Degraded: number; Failed: number };
  badShards: { pool: string; reason: string }[];
  halfWrittenStripes: number;
  orphanRecords: number;
  tornTails: number;
  corruptRecords: number;
  /** Hot/warm chunks: Allocated entries checked against their pool files, and the unreadable ones. */
  chunksChecked: number;
  badChunkCount: number;
  badChunks: { volume: string; chunkIndex: number; pool: string; reason: string }[];
  badVolumes: { volume: string; pool: string; reason: string }[];
}

/** Offline check of a stopped daemon's data directory; `stdout` is the raw report, for assertion messages. */
export function fsck(d: TestDaemon): { report: FsckReport; stdout: string } {
  const f = d.cli('fsck');
  return { report: JSON.parse(f.stdout) as FsckReport, stdout: f.stdout };
}

/** `couchestor fsck` on any (stopped) data directory, with its exit status and progress lines (stderr). */
/**
 * After a crash with pool `lostPool` lost: offline fsck finds no half-written,
 * failed or corrupt stripe, all `stripes` Healthy or Degraded, and only the
 * lost pool's shards missing, one per degraded stripe. `what` starts each message.
 */
export function assertFsckOnlyPoolLost(d: TestDaemon, stripes: number, lostPool: string, what: string): void {
  const { report: checked, stdout } = fsck(d);
  assert.equal(checked.halfWrittenStripes, 0, `${what}: ${stdout}`);
  assert.equal(checked.stripes.Failed, 0, `${what}: ${stdout}`);
  assert.equal(checked.stripes.Healthy + checked.stripes.Degraded, stripes, `${what}: ${stdout}`);
  assert.equal(checked.corruptRecords, 0, `${what}: ${stdout}`);
  // Only the lost pool's shards may be missing: no survivor touched, no flipped shard missing.
  for (const b of checked.badShards) assert.equal(b.pool, lostPool, `${what}: ${JSON.stringify(b)}`);
  assert.equal(checked.badShards.length, checked.stripes.Degraded, `${what}: one missing shard per degraded stripe`);
}

export function fsckDataDir(dataDir: string): { report: FsckReport; stdout: string; stderr: string; status: number | null } {
  const f = spawnSync(process.execPath, [CLI, 'fsck', '--data-dir', dataDir], { encoding: 'utf8' });
  if (f.stdout === '') throw new Error(`fsck printed no report (exit ${f.status}):\n${f.stderr}`);
  return { report: JSON.parse(f.stdout) as FsckReport, stdout: f.stdout, stderr: f.stderr, status: f.status };
}

export async function createVolume(d: TestDaemon, name: string, sizeBytes: number, tier: 'hot' | 'warm' | 'cold'): Promise<void> {
  await api<unknown>(d, 'POST', '/v1/volumes', { name, sizeBytes, tier });
}

export function coldPoolDir(d: TestDaemon, i: number): string {
  return path.join(d.dataDir, 'pools', `cold-${i}`);
}

/** Segment files (shard records) of one cold pool. */
export function segmentFiles(d: TestDaemon, i: number): string[] {
  const dir = path.join(coldPoolDir(d, i), 'segments');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((n) => n.endsWith('.cseg'))
    .sort()
    .map((n) => path.join(dir, n));
}

export function segmentBytes(d: TestDaemon, i: number): number {
  return segmentFiles(d, i).reduce((sum, f) => sum + fs.statSync(f).size, 0);
}

/** Pool identities (POOL/.couchestor-pool) of the pools losePool removed, by directory: what replacePool gives the new disk. */
const lostIdentities = new Map<string, PoolIdentity>();

/** Pool lost: its directory and every shard in it are gone. */
export function losePool(d: TestDaemon, i: number): void {
  const dir = coldPoolDir(d, i);
  const identity = fs.existsSync(dir) ? readPoolIdentity(dir) : null;
  if (identity !== null) lostIdentities.set(dir, identity);
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Pool replaced by an empty one at the same path, given the pool's identity as `couchestor pools replace` gives a
 * new disk (the daemon never takes a directory without it), without its rebuild: the tests start and watch that.
 */
export function replacePool(d: TestDaemon, i: number): void {
  const dir = coldPoolDir(d, i);
  fs.mkdirSync(dir, { recursive: true });
  const identity = lostIdentities.get(dir);
  if (identity !== undefined && readPoolIdentity(dir) === null) writePoolIdentity(dir, identity);
}

/** Pool lost, then replaced by an empty one at the same path (a disk swap). */
export function loseAndReplacePool(d: TestDaemon, i: number): void {
  losePool(d, i);
  replacePool(d, i);
}

/**
 * Polls the size of cold pool `i`'s segment files every millisecond until it
 * reaches `bytes` or `stop()` is true: no event tells a test how far a
 * rebuild got.
 */
export async function untilPoolBytes(d: TestDaemon, i: number, bytes: number, stop: () => boolean = () => false): Promise<void> {
  while (!stop() && segmentBytes(d, i) < bytes) await new Promise((r) => setTimeout(r, 1));
}

/** mulberry32: deterministic 32-bit PRNG, so a failing run can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Deterministic pseudo-random bytes. */
export function patternBytes(lengthBytes: number, seed: number): Buffer {
  const buf = Buffer.alloc(lengthBytes);
  const next = prng(seed);
  for (let i = 0; i + 4 <= lengthBytes; i += 4) buf.writeUInt32LE(next(), i);
  return buf;
}

/**
 * XORs `count` random bytes (random offsets, random non-zero masks) of every
 * segment file of a pool; returns the corrupted offsets per file.
 */
export function corruptSegments(d: TestDaemon, pool: number, count: number, seed: number): Map<string, number[]> {
  const rnd = prng(seed);
  const out = new Map<string, number[]>();
  for (const f of segmentFiles(d, pool)) {
    const sizeBytes = fs.statSync(f).size;
    if (sizeBytes === 0) continue;
    const fd = fs.openSync(f, 'r+');
    const offsets: number[] = [];
    try {
      const b = Buffer.alloc(1);
      for (let n = 0; n < count; n++) {
        const at = rnd() % sizeBytes;
        fs.readSync(fd, b, 0, 1, at);
        b[0] = b[0]! ^ (1 + (rnd() % 255));
        fs.writeSync(fd, b, 0, 1, at);
        offsets.push(at);
      }
    } finally {
      fs.closeSync(fd);
    }
    out.set(f, offsets);
  }
  return out;
}

/** Whole export through nbdcopy into `file`; returns its bytes. */
export function readExport(d: TestDaemon, volume: string, file: string): Buffer {
  fs.rmSync(file, { force: true });
  run('nbdcopy', [d.exportUri(volume), file]);
  return fs.readFileSync(file);
}

/** Asserts equality, naming the first differing offset instead of dumping megabytes. */
export function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  if (got.equals(want)) return;
  let i = 0;
  while (got[i] === want[i]) i++;
  assert.fail(`${what}: first differing byte at offset ${i} (got ${got[i]}, want ${want[i]})`);
}

/**
 * Creates cold volume `name` of `model.length` bytes, writes `model` into it
 * with nbdcopy (through a file in `work`) and destages it.
 */
export async function writeColdVolume(d: TestDaemon, name: string, model: Buffer, work: string): Promise<void> {
  await createVolume(d, name, model.length, 'cold');
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri(name)]);
  await destage(d);
}

/**
 * Starts a daemon (startColdDaemon()) holding cold volume 'c1' of
 * `volumeBytes`: its first `patternLengthBytes` are patternBytes(seed), the
 * rest zero; written and destaged by writeColdVolume(). Returns the daemon
 * and the volume's expected bytes. `env`: as startColdDaemon's.
 */
export async function startWithColdVolume(work: string, volumeBytes: number, patternLengthBytes: number, seed: number, env?: NodeJS.ProcessEnv): Promise<{ d: TestDaemon; model: Buffer }> {
  const d = await startColdDaemon(MANUAL_DESTAGE_CONFIG, env);
  const model = Buffer.alloc(volumeBytes);
  patternBytes(patternLengthBytes, seed).copy(model);
  try {
    await writeColdVolume(d, 'c1', model, work);
  } catch (err) {
    await d.cleanup();
    throw err;
  }
  return { d, model };
}

/**
 * Loses cold pools `lost`, drops the read cache (it would serve earlier
 * reads' data) and asserts that the whole export of `volume` reads back as
 * `model`. Returns the cold status after the read.
 */
export async function readBackWithPoolsLost(d: TestDaemon, lost: readonly number[], volume: string, model: Buffer, outFile: string, what: string): Promise<ColdStatus> {
  for (const i of lost) losePool(d, i);
  await dropCache(d);
  assertSameBytes(readExport(d, volume, outFile), model, what);
  return coldStatus(d);
}

/**
 * Writes `sizeMiB` MiB of seeded pattern into cold volume `name` with nbdcopy
 * and destages it into exactly one stripe per MiB (used by the EC benchmarks).
 */
export async function fillColdVolume(d: TestDaemon, name: string, sizeMiB: number, seed: number): Promise<void> {
  await createVolume(d, name, sizeMiB * MiB, 'cold');
  const src = path.join(d.dataDir, 'src.bin');
  fs.writeFileSync(src, patternBytes(sizeMiB * MiB, seed));
  const w = spawnSync('nbdcopy', [src, d.exportUri(name)], { env: CLIENT_ENV, encoding: 'utf8' });
  if (w.status !== 0) throw new Error(`nbdcopy write failed: ${w.stderr}`);
  fs.rmSync(src);
  await destage(d);
  const stripes = (await coldStatus(d)).stripes.Healthy;
  if (stripes !== sizeMiB) throw new Error(`expected ${sizeMiB} stripes, have ${stripes}`);
}

/** In process: six cold pools (`cold-0`..`cold-5`, 1 GiB each) as directories under `dir` (with `reopen`, kept when they exist). */
export function coldPoolsIn(dir: string, reopen = false): Pool[] {
  return Array.from({ length: 6 }, (_, i) => {
    const p = path.join(dir, `cold-${i}`);
    fs.mkdirSync(p, { recursive: reopen });
    return new Pool({ name: `cold-${i}`, path: p, tier: 'cold', capacityBytes: 1024 * 1024 * 1024, labels: {} });
  });
}

/**
 * In process: coldPoolsIn() a fresh temp dir (`prefix` names it), a MetaStore
 * in it, a StripeStore with the default 4+2 policy, and a Reconstructor with
 * ColdObjectHolders as its source. The Reconstructor's retry timer is never
 * started (retryIntervalMs is an hour and start() is not called) and scrub is
 * off, so only the passes a test starts run. Stopped, closed and removed
 * after the test.
 */
export function coldStores(t: TestContext, prefix: string) {
  const dir = tempDir(t, prefix);
  const pools = coldPoolsIn(dir);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  const holders = new ColdObjectHolders(meta, stripes);
  rc.addSource(holders);
  t.after(async () => {
    await rc.stop();
    await stripes.close();
    await meta.close();
  });
  return { dir, pools, meta, stripes, rc, holders };
}

/** One segment's dead-byte accounting as compaction sees it. */
export type SegmentDead = { pool: string; segment: number; sizeBytes: number; deadBytes: number };

/**
 * In process: the daemon's cold tier over `dir` (pools cold-0..5 under it,
 * made when missing), as a start builds it, recount included: MetaStore,
 * StripeStore (4+2), Reconstructor over ColdObjectHolders (no timers),
 * SegmentCompactor (no timer) and ObjectStore. Open it again over the same
 * dir for a restart; close() it yourself.
 */
export async function openColdTierAt(dir: string) {
  const pools = coldPoolsIn(dir, true);
  const meta = MetaStore.open(dir);
  const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
  const rc = new Reconstructor(stripes, () => null, () => [], { retryIntervalMs: 3_600_000, scrubIntervalMs: 0, scrubStripesPerSecond: 1 });
  rc.addSource(new ColdObjectHolders(meta, stripes));
  const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
  const store = await ObjectStore.open({ meta, pools: new Map() } as unknown as VolumeManager, stripes);
  await compactor.recount(); // a start's recount (the first pass does it)
  const close = async () => {
    await rc.stop();
    await compactor.stop();
    await stripes.close();
    await meta.close();
  };
  const perSegment = async (): Promise<SegmentDead[]> => (await compactor.segments()).map(({ pool, segment, sizeBytes, deadBytes }) => ({ pool, segment, sizeBytes, deadBytes }));
  return { meta, stripes, rc, compactor, store, close, perSegment };
}

/** A fresh temp dir (`prefix` names it), removed after test `t`. */
export function tempDir(t: TestContext, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A cold object's index record as ColdObjectHolders reads it (the fields these tests write). */
export interface ColdObjectRec {
  key: string;
  versionId: number;
  segments: ColdSegment[];
}

/**
 * The objects index of coldStores() written directly, without an
 * ObjectStore: putObject() does what ObjectStore.putObject does (the stripes
 * durable, then the index record, file ids 1, 2, ...), and with
 * `freeReplaced` then frees the replaced version's stripes.
 */
export function coldObjectIndex(s: { meta: MetaStore; stripes: StripeStore }, o: { freeReplaced: boolean }) {
  const { meta, stripes } = s;
  const objects = meta.openDB<ColdObjectRec, Buffer>(OBJECTS_DB);
  let nextFileId = 1;
  const putObject = async (indexKey: Buffer, bytes: Buffer): Promise<ColdObjectRec> => {
    const fileId = nextFileId++;
    const seg = await writeColdSegment(stripes, fileId, bodyOf(bytes), { maxBytes: 64 * MiB }, () => undefined);
    const rec: ColdObjectRec = { key: indexKey.toString('hex'), versionId: fileId, segments: [seg] };
    const prev = o.freeReplaced ? objects.get(indexKey) : undefined;
    await objects.put(indexKey, rec);
    await meta.durable();
    settleColdSegment(seg);
    if (prev) for (const seg of prev.segments) freeColdSegment(stripes, seg);
    return rec;
  };
  return { objects, putObject };
}

/**
 * coldStores() with a real ObjectStore over it and bucket 'cold' (tier cold)
 * created. Cold buckets use only the manager's LMDB, so the manager is just
 * the MetaStore (no hot pools).
 */
export async function coldObjectStore(t: TestContext, prefix: string) {
  const s = coldStores(t, prefix);
  const store = await ObjectStore.open({ meta: s.meta, pools: new Map() } as unknown as VolumeManager, s.stripes);
  await store.createBucket('cold', 'cold');
  return { ...s, store };
}

/** One buffer as a request body. */
export async function* bodyOf(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}

/** Every byte of object `key` in `bucket`, read through the store. */
export async function readObject(store: ObjectStore, bucket: string, key: string): Promise<Buffer> {
  const h = store.openObject(bucket, key);
  const pieces: Buffer[] = [];
  for await (const piece of h.read(0, h.rec.sizeBytes)) pieces.push(piece as Buffer);
  return Buffer.concat(pieces);
}
