// Event-loop stalls of cold-tier maintenance over a large index: this build
// vs a peer build (the same operations before a change, compiled apart),
// medians of alternated runs.
//
//   node dist/bench/cold-maintenance-stalls.js <peer dist dir> [runs=3] [entries=100000] [sealedPerPool=1]
//
// Each run is a child process per build. The index: `entries` cold chunk
// entries of one volume naming places in segments that do not exist (the
// scans read them all, nothing else does), plus 4 real 4+2 stripes in 1 MiB
// segments, indexed as a second cold volume, two of every three freed: each
// pool's sealed segments two thirds dead (sealedPerPool per pool, so 6 x
// sealedPerPool segments compacted a pass: 6 by default, 30 with 5). Timed with perf_hooks.monitorEventLoopDelay
// (1 ms resolution) armed around each operation, beside its wall time:
//  - recount: the compactor's recount (a start's first pass), with 800 LMDB
//    puts of 4 KiB issued one after another while it runs (their wall time
//    and data.mdb's growth: a read snapshot held across the recount keeps
//    LMDB from reusing freed pages), then the same 800 puts alone (peer);
//  - compaction: one unthrottled pass (segments compacted must be > 0), with
//    800 puts issued as it starts (their wall time and data.mdb's growth);
//  - startColdTier: VolumeManager.startColdTier over the same index;
//  - daemon cold-tier start: what daemon.ts openManager does for it (a
//    build with highestDestagedSeqSliced reads the index in slices first and
//    hands the figure over; one without calls startColdTier alone);
//  - VolumeManager.open: the manager's constructor (recomputeUsage reads
//    every chunk entry), for scale: another start-up stall, not sliced;
//  - finishInterruptedReleases: the start's clean-up (every volume's chunk
//    map read, its files stat'ed).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MiB = 1024 * 1024;
const PUTS = 800;
const PUT_VALUE_BYTES = 4096;
/** Stripes (one shard per pool) a 1 MiB segment holds before it is sealed. */
const STRIPES_PER_SEGMENT = 3;

interface Figure {
  /** Longest event-loop delay seen while the operation ran, ms. */
  maxDelayMs: number;
  /** Wall time of the operation, ms. */
  wallMs: number;
}
interface ChildResult {
  recount: Figure;
  /** 800 sequential puts while the recount ran: wall ms, and data.mdb growth bytes. */
  putsDuringRecountMs: number;
  mdbGrowthDuringRecountBytes: number;
  /** The same 800 puts with nothing else running. */
  putsAloneMs: number;
  mdbGrowthAloneBytes: number;
  compaction: Figure;
  /** 800 sequential puts issued as the pass starts: wall ms, data.mdb growth bytes. */
  putsDuringCompactionMs: number;
  mdbGrowthDuringCompactionBytes: number;
  segmentsCompacted: number;
  startColdTier: Figure;
  finishReleases: Figure;
  daemonColdStart: Figure;
  managerOpen: Figure;
}

interface Ref {
  shards: { pool: string; segment: number; offsetBytes: number; lengthBytes: number }[];
}
interface Stripes {
  segmentOptions: { segmentSizeBytes?: number };
  writeStripe(ownerId: Buffer, chunkIndex: number, generation: number, data: Buffer): Promise<Ref>;
  free(ref: Ref): void;
  close(): Promise<void>;
}
interface Db {
  put(k: unknown, v: unknown): Promise<boolean>;
  remove(k: unknown): Promise<boolean>;
}
interface Meta {
  volumes: Db;
  chunks: Db;
  openDB(name: string): Db;
  transaction<T>(fn: () => T): Promise<T>;
  durable(): Promise<void>;
  close(): Promise<void>;
}
interface Compactor {
  stop(): Promise<void>;
  recount(): Promise<void>;
  runOnce(o: { unthrottled?: boolean }): Promise<{ segmentsCompacted: number }>;
  deadSettled(): Promise<void>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timed(what: () => Promise<unknown> | unknown): Promise<Figure> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  // The histogram records the gap between two of its ticks: one tick first, or a block before it goes unseen.
  await new Promise((r) => setTimeout(r, 5));
  const t0 = process.hrtime.bigint();
  await what();
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  // One tick after the operation: a block is recorded when the loop comes back.
  await new Promise((r) => setTimeout(r, 5));
  h.disable();
  return { maxDelayMs: h.max / 1e6, wallMs };
}

async function child(distDir: string, entries: number, sealedPerPool: number): Promise<void> {
  // Real stripes: with 1 MiB segments, `sealedPerPool` sealed segments per pool, the last stripe in the head.
  const STRIPES = STRIPES_PER_SEGMENT * sealedPerPool + 1;
  const mod = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(path.join(distDir, rel)).href)) as T;
  const { StripeStore } = await mod<{ StripeStore: new (pools: () => unknown[], policy: unknown) => Stripes }>('src/dataplane/ec/stripe-store.js');
  const { SegmentCompactor } = await mod<{ SegmentCompactor: new (s: Stripes, m: Meta, v: () => unknown[], o: unknown) => Compactor }>('src/dataplane/ec/compaction.js');
  const { MetaStore } = await mod<{ MetaStore: { open(dir: string): Meta } }>('src/dataplane/meta/store.js');
  const { VolumeManager } = await mod<{
    VolumeManager: {
      open(dir: string): {
        putPool(rec: unknown): Promise<unknown>;
        startColdTier(policy: unknown, o: unknown): void;
        finishInterruptedReleases(): Promise<unknown>;
        close(): Promise<void>;
      };
    };
  }>('src/dataplane/volumes/manager.js');
  const daemon = await mod<{ highestDestagedSeqSliced?: (m: unknown) => Promise<number> }>('src/daemon.js');
  const { Pool } = await mod<{ Pool: new (rec: unknown) => unknown }>('src/dataplane/pools/pool.js');
  const { parsePolicyYaml } = await mod<{ parsePolicyYaml(y: string, pools: number): unknown }>('src/dataplane/ec/policy.js');
  const { DEFAULT_EC_POLICY_YAML } = await mod<{ DEFAULT_EC_POLICY_YAML: string }>('src/config.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-maint-'));
  const poolRecs = Array.from({ length: 6 }, (_, i) => {
    const p = path.join(dir, `cold-${i}`);
    fs.mkdirSync(p, { recursive: true });
    return { name: `cold-${i}`, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: { tier: 'cold' } };
  });
  const hotRec = { name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } };
  fs.mkdirSync(hotRec.path, { recursive: true });
  try {
    const pools = poolRecs.map((r) => new Pool(r));
    const meta = MetaStore.open(dir);
    const stripes = new StripeStore(() => pools, parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6));
    stripes.segmentOptions = { segmentSizeBytes: MiB };
    const compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0, deadFraction: 0.3 });
    const volume = (id: number, name: string, chunks: number) => ({ name, id, sizeBytes: chunks * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: 'hot-0', readOnly: false, createdMs: 0, keptFilePools: [] });
    await meta.volumes.put('padding', volume(1, 'padding', entries));
    await meta.volumes.put('real', volume(2, 'real', STRIPES));
    const ref0 = await stripes.writeStripe(Buffer.alloc(16, 1), 0, 1, Buffer.alloc(MiB, 0x5a));
    await meta.transaction(() => {
      // Places in segments no store has: scanned by every pass over the index, compacted by none.
      for (let i = 0; i < entries; i++) void meta.chunks.put([1, i], { state: 3, pool: '', stripe: { ...ref0, chunkIndex: i, shards: ref0.shards.map((s) => ({ ...s, segment: 1_000_000 + Math.floor(i / 1000), offsetBytes: (i % 1000) * 4096 })) } });
    });
    const real: Ref[] = [];
    for (let c = 0; c < STRIPES; c++) {
      const ref = await stripes.writeStripe(Buffer.alloc(16, 2), c, 1, Buffer.alloc(MiB, c + 1));
      real.push(ref);
      await meta.chunks.put([2, c], { state: 3, pool: '', stripe: ref });
    }
    // Shards 0..2 of each pool fill its first segment (sealed), 3..5 the next...; the last opens the head. Two of every three freed.
    for (let c = 0; c < STRIPES - 1; c++) {
      if (c % STRIPES_PER_SEGMENT === 1) continue;
      await meta.chunks.remove([2, c]);
      stripes.free(real[c]!);
    }
    await meta.durable();
    await compactor.deadSettled();

    const scratch = meta.openDB('bench-scratch');
    const value = Buffer.alloc(PUT_VALUE_BYTES, 7);
    const mdb = path.join(dir, 'meta', 'data.mdb');
    const puts = async (base: number): Promise<{ ms: number; growthBytes: number }> => {
      const size0 = fs.statSync(mdb).size;
      const t0 = process.hrtime.bigint();
      // Overwrites of the same 100 keys: pages freed by one commit can serve the next (unless a snapshot pins them).
      for (let i = 0; i < PUTS; i++) await scratch.put(`k${(base + i) % 100}`, value);
      return { ms: Number(process.hrtime.bigint() - t0) / 1e6, growthBytes: fs.statSync(mdb).size - size0 };
    };
    await puts(0); // the keys exist before either measurement
    let during = { ms: 0, growthBytes: 0 };
    let recountMs = 0;
    const recount = await timed(async () => {
      const t0 = process.hrtime.bigint();
      const r = compactor.recount().then(() => (recountMs = Number(process.hrtime.bigint() - t0) / 1e6));
      during = await puts(1);
      await r;
    });
    // Its own wall time, not the puts' (they may outlast it).
    recount.wallMs = recountMs;
    const alone = await puts(2);
    const pass = { segmentsCompacted: 0, wallMs: 0 };
    let duringPass = { ms: 0, growthBytes: 0 };
    const compaction = await timed(async () => {
      const t0 = process.hrtime.bigint();
      const r = compactor.runOnce({ unthrottled: true }).then((report) => {
        pass.segmentsCompacted = report.segmentsCompacted;
        pass.wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      });
      duringPass = await puts(3);
      await r;
    });
    compaction.wallMs = pass.wallMs;
    await compactor.stop();
    await stripes.close();
    await meta.close();

    let manager!: ReturnType<typeof VolumeManager.open>;
    const managerOpen = await timed(() => (manager = VolumeManager.open(dir)));
    await manager.putPool(hotRec);
    for (const r of poolRecs) await manager.putPool(r);
    const coldOpts = { intervalMs: 3_600_000, thresholdPercent: 100, concurrency: 1 };
    const startColdTier = await timed(() => manager.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6), coldOpts));
    const finishReleases = await timed(() => manager.finishInterruptedReleases());
    await manager.close();
    // The daemon's way, on a manager of its own (startColdTier runs once per manager).
    const again = VolumeManager.open(dir);
    await again.putPool(hotRec);
    for (const r of poolRecs) await again.putPool(r);
    const sliced = daemon.highestDestagedSeqSliced;
    const daemonColdStart = await timed(async () => {
      const policy = parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6);
      if (sliced === undefined) return again.startColdTier(policy, coldOpts);
      again.startColdTier(policy, { ...coldOpts, highestDestagedSeq: await sliced(again) });
    });
    await again.close();
    const result: ChildResult = {
      recount,
      putsDuringRecountMs: during.ms,
      mdbGrowthDuringRecountBytes: during.growthBytes,
      putsAloneMs: alone.ms,
      mdbGrowthAloneBytes: alone.growthBytes,
      compaction,
      putsDuringCompactionMs: duringPass.ms,
      mdbGrowthDuringCompactionBytes: duringPass.growthBytes,
      segmentsCompacted: pass.segmentsCompacted,
      startColdTier,
      finishReleases,
      daemonColdStart,
      managerOpen,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function runChild(distDir: string, entries: number, sealedPerPool: number): ChildResult {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', distDir, String(entries), String(sealedPerPool)], { encoding: 'utf8', timeout: 110_000 });
  if (r.status !== 0) throw new Error(`bench child (${distDir}) failed: ${r.stderr}`);
  const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ChildResult;
  if (res.segmentsCompacted === 0) throw new Error(`${distDir}: the pass compacted nothing, the figure is meaningless: ${r.stdout}`);
  return res;
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5] ?? 1));
} else {
  const peer = process.argv[2];
  const runs = Number(process.argv[3] ?? 3);
  const entries = Number(process.argv[4] ?? 100_000);
  const sealedPerPool = Number(process.argv[5] ?? 1);
  if (!(Number.isInteger(sealedPerPool) && sealedPerPool >= 1)) throw new Error(`sealedPerPool must be a positive integer, got ${process.argv[5]}`);
  if (!peer) throw new Error('usage: cold-maintenance-stalls.js <peer dist dir> [runs] [entries]');
  const ours = fileURLToPath(new URL('..', import.meta.url));
  const o: ChildResult[] = [];
  const p: ChildResult[] = [];
  for (let r = 0; r < runs; r++) {
    // Alternate which build goes first so drift in load hits both alike.
    if (r % 2 === 0) {
      o.push(runChild(ours, entries, sealedPerPool));
      p.push(runChild(peer, entries, sealedPerPool));
    } else {
      p.push(runChild(peer, entries, sealedPerPool));
      o.push(runChild(ours, entries, sealedPerPool));
    }
    console.log(`run ${r + 1}: ours ${JSON.stringify(o[r])}\n       peer ${JSON.stringify(p[r])}`);
  }
  const rows: [string, (x: ChildResult) => number][] = [
    ['recount, max event-loop delay ms', (x) => x.recount.maxDelayMs],
    ['recount, wall ms', (x) => x.recount.wallMs],
    [`${PUTS} puts during the recount, ms`, (x) => x.putsDuringRecountMs],
    ['  data.mdb growth during them, KiB', (x) => x.mdbGrowthDuringRecountBytes / 1024],
    [`${PUTS} puts alone (peer op), ms`, (x) => x.putsAloneMs],
    ['  data.mdb growth during them, KiB', (x) => x.mdbGrowthAloneBytes / 1024],
    ['compaction pass, max delay ms', (x) => x.compaction.maxDelayMs],
    ['compaction pass, wall ms', (x) => x.compaction.wallMs],
    [`${PUTS} puts as the pass starts, ms`, (x) => x.putsDuringCompactionMs],
    ['  data.mdb growth during them, KiB', (x) => x.mdbGrowthDuringCompactionBytes / 1024],
    ['startColdTier, max delay ms', (x) => x.startColdTier.maxDelayMs],
    ['startColdTier, wall ms', (x) => x.startColdTier.wallMs],
    ['finishInterruptedReleases, max delay ms', (x) => x.finishReleases.maxDelayMs],
    ['finishInterruptedReleases, wall ms', (x) => x.finishReleases.wallMs],
    ['daemon cold-tier start, max delay ms', (x) => x.daemonColdStart.maxDelayMs],
    ['daemon cold-tier start, wall ms', (x) => x.daemonColdStart.wallMs],
    ['VolumeManager.open, max delay ms', (x) => x.managerOpen.maxDelayMs],
    ['VolumeManager.open, wall ms', (x) => x.managerOpen.wallMs],
  ];
  console.log(`${entries} chunk entries in the index, ${6 * sealedPerPool} segments to compact, median of ${runs} runs:`);
  for (const [name, pick] of rows) {
    const a = median(o.map(pick));
    const b = median(p.map(pick));
    console.log(`  ${name.padEnd(42)} ours ${a.toFixed(1).padStart(9)}   peer ${b.toFixed(1).padStart(9)}   ours/peer ${(a / b).toFixed(3)}`);
  }
  console.log(`  load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}
