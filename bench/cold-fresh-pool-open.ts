// Start-up event-loop blocking when a cold pool's store opens empty (a new
// cold pool) over an index of 100,000 cold stripes: this build vs a peer
// build (the previous commit compiled apart), medians of alternated runs.
//
//   node dist/bench/cold-fresh-pool-open.js <peer dist dir> [runs=3] [stripes=100000] [upgrade]
//
// With `upgrade`, a build that keeps pool marks (it exports POOLS_WRITTEN_DB)
// has them cleared before the restart: the first start over an index written
// by a build without them (which marks the known pools once).
//
// Each run is a child process per build: six cold pools, one real 4+2 stripe
// written through the build's StripeStore (with its SegmentCompactor, as the
// daemon wires them), then `stripes` cold chunk entries naming that stripe's
// places put straight into the LMDB chunk map; everything closed and opened
// again with a seventh, new and empty pool cold-6. Timed, with
// perf_hooks.monitorEventLoopDelay (1 ms resolution) armed around each open:
// the store open of the new pool cold-6 (the case measured), of the written
// pool cold-0 (the named peer: no index look-up) and of cold-1 after its
// directory was replaced by an empty one (the lost pool the look-up exists
// for; must report mayHoldStalePlaces true in both builds); then the
// compactor's recount (a start's first pass), twice.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MiB = 1024 * 1024;

interface OpenFigure {
  /** Longest event-loop delay seen while the open ran, ms. */
  maxDelayMs: number;
  /** Wall time of the open, ms. */
  wallMs: number;
}
interface ChildResult {
  /** The restart's construction of the stripe store and compactor (where pool marks are read, or made on upgrade). */
  start: OpenFigure;
  fresh: OpenFigure;
  written: OpenFigure;
  lost: OpenFigure;
  /** The compactor's start-up recount (its first pass). */
  recount: OpenFigure;
  /** The same recount again: warm, as the peer build's first one is after its scan of the index at the new pool's open. */
  recountAgain: OpenFigure;
  freshMayHoldStale: boolean;
  lostMayHoldStale: boolean;
}

interface Stripes {
  writeStripe(ownerId: Buffer, chunkIndex: number, generation: number, data: Buffer): Promise<{ shards: unknown[] }>;
  segmentStore(pool: string): Promise<unknown>;
  mayHoldStalePlaces(pool: string): boolean;
  close(): Promise<void>;
}
interface Meta {
  volumes: { put(k: string, v: unknown): Promise<boolean> };
  chunks: { put(k: [number, number], v: unknown): Promise<boolean> };
  transaction<T>(fn: () => T): Promise<T>;
  durable(): Promise<void>;
  close(): Promise<void>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function child(distDir: string, stripeCount: number, upgrade: boolean): Promise<void> {
  const mod = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(path.join(distDir, rel)).href)) as T;
  const { StripeStore, POOLS_WRITTEN_DB } = await mod<{ StripeStore: new (pools: () => unknown[], policy: unknown) => Stripes; POOLS_WRITTEN_DB?: string }>('src/dataplane/ec/stripe-store.js');
  const { SegmentCompactor } = await mod<{ SegmentCompactor: new (s: Stripes, m: Meta, v: () => unknown[], o: unknown) => { stop(): Promise<void>; recount(): Promise<void> } }>('src/dataplane/ec/compaction.js');
  const { MetaStore } = await mod<{ MetaStore: { open(dir: string): Meta & { openDB(name: string): { clearAsync(): Promise<void> } } } }>('src/dataplane/meta/store.js');
  const { Pool } = await mod<{ Pool: new (rec: unknown) => unknown }>('src/dataplane/pools/pool.js');
  const { parsePolicyYaml } = await mod<{ parsePolicyYaml(y: string, pools: number): unknown }>('src/dataplane/ec/policy.js');
  const { DEFAULT_EC_POLICY_YAML: POLICY_YAML } = await mod<{ DEFAULT_EC_POLICY_YAML: string }>('src/config.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-fresh-pool-'));
  const poolsOf = (n: number) =>
    Array.from({ length: n }, (_, i) => {
      const p = path.join(dir, `cold-${i}`);
      fs.mkdirSync(p, { recursive: true });
      return new Pool({ name: `cold-${i}`, path: p, tier: 'cold', capacityBytes: 1024 * MiB, labels: {} });
    });
  try {
    // The index: one real stripe, and stripeCount chunk entries naming its places.
    let pools = poolsOf(6);
    let meta = MetaStore.open(dir);
    let stripes = new StripeStore(() => pools, parsePolicyYaml(POLICY_YAML, 6));
    let compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
    const ref = await stripes.writeStripe(Buffer.alloc(16, 1), 0, 1, Buffer.alloc(MiB, 0x5a));
    await meta.volumes.put('v', { name: 'v', id: 1, sizeBytes: stripeCount * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: '', readOnly: false, createdMs: 0 });
    await meta.transaction(() => {
      // Each entry its own places (as distinct stripes have), so the recount's map of live places is full size.
      const shards = ref.shards as { offsetBytes: number }[];
      for (let i = 0; i < stripeCount; i++) void meta.chunks.put([1, i], { state: 3, pool: '', stripe: { ...ref, chunkIndex: i, shards: shards.map((s) => ({ ...s, offsetBytes: s.offsetBytes + i * 4096 })) } });
    });
    await meta.durable();
    await compactor.stop();
    await stripes.close();
    await meta.close();

    if (upgrade && POOLS_WRITTEN_DB !== undefined) {
      const m = MetaStore.open(dir);
      await m.openDB(POOLS_WRITTEN_DB).clearAsync();
      await m.close();
    }

    // The restart, with the new pool cold-6 and cold-1 lost and replaced (empty directory).
    fs.rmSync(path.join(dir, 'cold-1'), { recursive: true });
    pools = poolsOf(7);
    meta = MetaStore.open(dir);
    const timed = async (what: () => Promise<unknown>): Promise<OpenFigure> => {
      const h = monitorEventLoopDelay({ resolution: 1 });
      h.enable();
      // The histogram records the gap between two of its ticks: one tick first, or a block before it goes unseen.
      await new Promise((r) => setTimeout(r, 5));
      const t0 = process.hrtime.bigint();
      await what();
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      // Let the histogram's timer fire once after the open: a block is recorded when the loop comes back.
      await new Promise((r) => setTimeout(r, 5));
      h.disable();
      return { maxDelayMs: h.max / 1e6, wallMs };
    };
    const start = await timed(async () => {
      stripes = new StripeStore(() => pools, parsePolicyYaml(POLICY_YAML, 6));
      compactor = new SegmentCompactor(stripes, meta, () => [], { intervalMs: 0 });
    });
    const written = await timed(() => stripes.segmentStore('cold-0'));
    const fresh = await timed(() => stripes.segmentStore('cold-6'));
    const lost = await timed(() => stripes.segmentStore('cold-1'));
    const recount = await timed(() => compactor.recount());
    const recountAgain = await timed(() => compactor.recount());
    const result: ChildResult = { start, fresh, written, lost, recount, recountAgain, freshMayHoldStale: stripes.mayHoldStalePlaces('cold-6'), lostMayHoldStale: stripes.mayHoldStalePlaces('cold-1') };
    await compactor.stop();
    await stripes.close();
    await meta.close();
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function runChild(distDir: string, stripeCount: number, upgrade: boolean): ChildResult {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', distDir, String(stripeCount), upgrade ? 'upgrade' : ''], { encoding: 'utf8', timeout: 110_000 });
  if (r.status !== 0) throw new Error(`bench child (${distDir}) failed: ${r.stderr}`);
  const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ChildResult;
  // The lost pool must be told apart from a new one by both builds, or the figure is meaningless
  // (on upgrade the new pool is judged conservatively: every pool configured then is marked).
  if (!res.lostMayHoldStale || (res.freshMayHoldStale && !upgrade)) throw new Error(`${distDir}: lost cold-1 / new cold-6 judged wrongly: ${r.stdout}`);
  return res;
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]!, Number(process.argv[4]), process.argv[5] === 'upgrade');
} else {
  const peer = process.argv[2];
  const runs = Number(process.argv[3] ?? 3);
  const stripeCount = Number(process.argv[4] ?? 100_000);
  const upgrade = process.argv[5] === 'upgrade';
  if (!peer) throw new Error('usage: cold-fresh-pool-open.js <peer dist dir> [runs] [stripes]');
  const ours = fileURLToPath(new URL('..', import.meta.url));
  const o: ChildResult[] = [];
  const p: ChildResult[] = [];
  for (let r = 0; r < runs; r++) {
    // Alternate which build goes first so drift in load hits both alike.
    if (r % 2 === 0) {
      o.push(runChild(ours, stripeCount, upgrade));
      p.push(runChild(peer, stripeCount, upgrade));
    } else {
      p.push(runChild(peer, stripeCount, upgrade));
      o.push(runChild(ours, stripeCount, upgrade));
    }
    const f = (x: ChildResult) => `start ${x.start.maxDelayMs.toFixed(1)} ms, new pool max delay ${x.fresh.maxDelayMs.toFixed(1)} ms (open ${x.fresh.wallMs.toFixed(1)} ms), written pool ${x.written.maxDelayMs.toFixed(1)} ms, lost pool ${x.lost.maxDelayMs.toFixed(1)} ms`;
    console.log(`run ${r + 1}: ours: ${f(o[r]!)}\n       peer: ${f(p[r]!)}`);
  }
  const m = (xs: ChildResult[], pick: (x: ChildResult) => number) => median(xs.map(pick));
  const rows: [string, (x: ChildResult) => number][] = [
    ['start (store + compactor), max delay ms', (x) => x.start.maxDelayMs],
    ['new pool open, max event-loop delay ms', (x) => x.fresh.maxDelayMs],
    ['new pool open, wall ms', (x) => x.fresh.wallMs],
    ['written pool open (peer op), max delay ms', (x) => x.written.maxDelayMs],
    ['lost pool open, max delay ms', (x) => x.lost.maxDelayMs],
    ['compactor recount, max delay ms', (x) => x.recount.maxDelayMs],
    ['compactor recount, wall ms', (x) => x.recount.wallMs],
    ['  the same recount again, max delay ms', (x) => x.recountAgain.maxDelayMs],
  ];
  console.log(`${stripeCount} cold stripes in the index${upgrade ? ', upgrade start (pool marks cleared)' : ''}, median of ${runs} runs:`);
  for (const [name, pick] of rows) {
    const a = m(o, pick);
    const b = m(p, pick);
    console.log(`  ${name.padEnd(44)} ours ${a.toFixed(1).padStart(8)}   peer ${b.toFixed(1).padStart(8)}   ours/peer ${(a / b).toFixed(3)}`);
  }
  console.log(`  load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}
