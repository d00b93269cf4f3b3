// The cost of the stripe counts (Reconstructor.counts) to a daemon with many
// volumes: this build vs a peer build (the code before a change, compiled
// apart), each a real `couchestor serve` started on the same data directory,
// runs alternated, medians.
//
//   node dist/bench/stripe-counts-scrape.js <peer dist dir> [runs=3] [volumes=10000] [chunksPerVolume=10]
//
// The data directory: one real cold volume (4 MiB written with nbdcopy and
// destaged: 4 stripes), then, written into the index with the daemon
// stopped, `volumes` more cold volumes of `chunksPerVolume` cold chunks each
// (their entries name the real volume's first stripe: nothing here reads
// them) and an empty file each on hot-0, as a created volume has. Per run:
// the daemon's open descriptors after start and after the first scrape, the
// wall time of the first and second GET /metrics (counts() is synchronous:
// the event loop is held that long), and the healthy figure (must be
// volumes x chunksPerVolume + 4 for both builds). Compaction is off
// (intervalMs 0): it would read the made-up places.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median, serve, stop, type Ready } from './serve.js';

const MiB = 1024 * 1024;
const here = path.dirname(fileURLToPath(import.meta.url));
const selfDist = path.resolve(here, '..');

function fds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

async function timed(url: string): Promise<{ ms: number; text: string }> {
  const t0 = performance.now();
  const res = await fetch(url);
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${text}`);
  return { ms: performance.now() - t0, text };
}

function healthy(text: string): number {
  const m = /^couchestor_stripes\{state="healthy"\} (\d+)$/m.exec(text);
  if (!m) throw new Error('no couchestor_stripes{state="healthy"} in /metrics');
  return Number(m[1]);
}

async function setup(dataDir: string, volumes: number, chunksPerVolume: number): Promise<void> {
  fs.mkdirSync(path.join(dataDir, 'policies'), { recursive: true });
  const { DEFAULT_EC_POLICY_YAML } = (await import(pathToFileURL(path.join(selfDist, 'src/config.js')).href)) as { DEFAULT_EC_POLICY_YAML: string };
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  compaction:\n    intervalMs: 0\n');
  const { proc, ready } = await serve(selfDist, dataDir);
  try {
    const api = `http://127.0.0.1:${ready.api.port}`;
    const create = await fetch(`${api}/v1/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'real', sizeBytes: 4 * MiB, tier: 'cold' }) });
    if (!create.ok) throw new Error(`create: ${create.status} ${await create.text()}`);
    const src = path.join(dataDir, '..', 'src.bin');
    fs.writeFileSync(src, Buffer.alloc(4 * MiB, 0x5a));
    const w = spawnSync('nbdcopy', [src, `nbd://127.0.0.1:${ready.nbd.port}/real`], { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` }, encoding: 'utf8' });
    if (w.status !== 0) throw new Error(`nbdcopy: ${w.stderr}`);
    const d = await fetch(`${api}/v1/destage`, { method: 'POST' });
    if (!d.ok) throw new Error(`destage: ${d.status}`);
  } finally {
    await stop(proc);
  }
  type Db = { get(k: unknown): unknown; put(k: unknown, v: unknown): void };
  const { MetaStore } = (await import(pathToFileURL(path.join(selfDist, 'src/dataplane/meta/store.js')).href)) as {
    MetaStore: { open(dir: string): { volumes: Db; chunks: Db; nextVolumeId(): number; transaction<T>(fn: () => T): Promise<T>; close(): Promise<void> } };
  };
  const meta = MetaStore.open(dataDir);
  const real = meta.volumes.get('real') as { id: number };
  const ref = (meta.chunks.get([real.id, 0]) as { stripe: unknown }).stripe;
  const volumesDir = path.join(dataDir, 'pools', 'hot-0', 'volumes');
  for (let first = 0; first < volumes; first += 1000) {
    const ids: number[] = [];
    for (let i = first; i < Math.min(volumes, first + 1000); i++) ids.push(meta.nextVolumeId());
    await meta.transaction(() => {
      ids.forEach((id, j) => {
        const name = `v${first + j}`;
        meta.volumes.put(name, { name, id, sizeBytes: chunksPerVolume * MiB, chunkSizeBytes: MiB, tier: 'cold', poolName: 'hot-0', readOnly: false, createdMs: Date.now() });
        for (let c = 0; c < chunksPerVolume; c++) meta.chunks.put([id, c], { state: 3, pool: '', stripe: ref });
      });
    });
    for (const id of ids) fs.closeSync(fs.openSync(path.join(volumesDir, `${id}.dat`), 'w'));
  }
  await meta.close();
}

interface Run {
  startMs: number;
  fdsAfterStart: number;
  firstScrapeMs: number;
  secondScrapeMs: number;
  fdsAfterScrape: number;
  healthy: number;
}

async function once(dist: string, dataDir: string): Promise<Run> {
  const { proc, ready, startMs } = await serve(dist, dataDir);
  try {
    const url = `http://127.0.0.1:${ready.metrics.port}/metrics`;
    const fdsAfterStart = fds(ready.pid);
    const first = await timed(url);
    const second = await timed(url);
    return { startMs, fdsAfterStart, firstScrapeMs: first.ms, secondScrapeMs: second.ms, fdsAfterScrape: fds(ready.pid), healthy: healthy(second.text) };
  } finally {
    await stop(proc);
  }
}

async function main(): Promise<void> {
  const peerDist = path.resolve(process.argv[2] ?? '');
  if (!fs.existsSync(path.join(peerDist, 'src/cli.js'))) throw new Error('usage: stripe-counts-scrape.js <peer dist dir> [runs] [volumes] [chunksPerVolume]');
  const runs = Number(process.argv[3] ?? 3);
  const volumes = Number(process.argv[4] ?? 10_000);
  const chunksPerVolume = Number(process.argv[5] ?? 10);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-stripe-counts-'));
  try {
    const dataDir = path.join(root, 'data');
    const t0 = performance.now();
    await setup(dataDir, volumes, chunksPerVolume);
    console.log(`setup: ${volumes} volumes x ${chunksPerVolume} cold chunks + 1 real (4 stripes), ${((performance.now() - t0) / 1000).toFixed(1)} s; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    const results: Record<'peer' | 'this', Run[]> = { peer: [], this: [] };
    for (let r = 0; r < runs; r++) {
      for (const [label, dist] of (r % 2 === 0 ? [['peer', peerDist], ['this', selfDist]] : [['this', selfDist], ['peer', peerDist]]) as ['peer' | 'this', string][]) {
        const run = await once(dist, dataDir);
        results[label].push(run);
        console.log(`${label} run ${r + 1}: ${JSON.stringify(Object.fromEntries(Object.entries(run).map(([k, v]) => [k, Math.round(v * 10) / 10])))}`);
      }
    }
    const keys: (keyof Run)[] = ['startMs', 'fdsAfterStart', 'firstScrapeMs', 'secondScrapeMs', 'fdsAfterScrape', 'healthy'];
    console.log(`\nmedians of ${runs} (load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}):`);
    for (const k of keys) {
      const p = median(results.peer.map((x) => x[k]));
      const t = median(results.this.map((x) => x[k]));
      console.log(`  ${k.padEnd(15)} peer ${p.toFixed(1).padStart(9)}  this ${t.toFixed(1).padStart(9)}  this/peer ${(t / p).toFixed(3)}`);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();
