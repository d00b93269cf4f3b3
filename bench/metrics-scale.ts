// What idle volumes cost a running daemon: the /metrics scrape (bytes, time,
// and how long it holds the event loop) and 4 KiB NBD read latency, with
// `volumes` idle volumes in the index vs none, this build beside a peer
// build (the code before a change, compiled apart). Real `couchestor serve`
// processes on the same data directories, builds alternated, medians.
//
//   node dist/bench/metrics-scale.js <peer dist dir> [runs=3] [volumes=10000] [fioSeconds=10]
//
// The data directories: one real hot volume `real` (64 MiB written with
// nbdcopy); the "many" one also `volumes` volumes shaped like it, written
// into the index with the daemon stopped (test/helpers/many-volumes.ts),
// none ever opened. Per daemon: 3 scrapes, each with GET /healthz sent back
// to back on the admin port while it runs: the slowest probe is the event
// loop's longest hold as a client sees it (an NBD or S3 request waits as
// long). Then fio (ioengine nbd, libnbd) 4 KiB random reads of `real`, queue
// depth 1, for fioSeconds: p50/p99/p99.99 completion latency (the heat
// sampler runs every second meanwhile). And the daemon's RSS after it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { addVolumesLike } from '../test/helpers/many-volumes.js';
import { median, serve, stop, type Ready } from './serve.js';

const MiB = 1024 * 1024;
const here = path.dirname(fileURLToPath(import.meta.url));
const selfDist = path.resolve(here, '..');
const PATH = `/usr/bin:${process.env.PATH ?? ''}`;

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

/** One scrape, with /healthz probes back to back while it runs: its wall time, bytes and the slowest probe. */
async function scrape(ready: Ready): Promise<{ ms: number; bytes: number; maxProbeMs: number }> {
  const probe = `http://127.0.0.1:${ready.api.port}/healthz`;
  let done = false;
  let maxProbeMs = 0;
  const probing = (async () => {
    while (!done) {
      const t0 = performance.now();
      await (await fetch(probe)).arrayBuffer();
      maxProbeMs = Math.max(maxProbeMs, performance.now() - t0);
    }
  })();
  await new Promise((r) => setTimeout(r, 20));
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${ready.metrics.port}/metrics`);
  const text = await res.text();
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`/metrics: ${res.status}`);
  done = true;
  await probing;
  return { ms, bytes: Buffer.byteLength(text), maxProbeMs };
}

function fio(ready: Ready, seconds: number): { p50: number; p99: number; p9999: number } {
  const r = spawnSync('fio', ['--name=r', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${ready.nbd.port}/real`, '--rw=randread', '--bs=4k', '--iodepth=1', `--runtime=${seconds}`, '--time_based', '--size=64M', '--percentile_list=50:99:99.99', '--output-format=json'], { encoding: 'utf8', env: { ...process.env, PATH } });
  if (r.status !== 0) throw new Error(`fio: ${r.stderr}`);
  const pct = (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { read: { clat_ns: { percentile: Record<string, number> } } }[] }).jobs[0]!.read.clat_ns.percentile;
  return { p50: pct['50.000000']! / 1e6, p99: pct['99.000000']! / 1e6, p9999: pct['99.990000']! / 1e6 };
}

async function setup(dataDir: string, volumes: number): Promise<void> {
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n');
  const { proc, ready } = await serve(selfDist, dataDir);
  try {
    const create = await fetch(`http://127.0.0.1:${ready.api.port}/v1/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'real', sizeBytes: 64 * MiB }) });
    if (!create.ok) throw new Error(`create: ${create.status} ${await create.text()}`);
    const src = path.join(dataDir, '..', `src-${path.basename(dataDir)}.bin`);
    fs.writeFileSync(src, Buffer.alloc(64 * MiB, 0x5a));
    const w = spawnSync('nbdcopy', [src, `nbd://127.0.0.1:${ready.nbd.port}/real`], { env: { ...process.env, PATH }, encoding: 'utf8' });
    if (w.status !== 0) throw new Error(`nbdcopy: ${w.stderr}`);
  } finally {
    await stop(proc);
  }
  if (volumes > 0) await addVolumesLike(dataDir, 'real', 'v', volumes);
}

interface Run {
  scrapeMs: number;
  scrapeBytes: number;
  maxProbeMs: number;
  readP50Ms: number;
  readP99Ms: number;
  readP9999Ms: number;
  rssMiB: number;
}

async function once(dist: string, dataDir: string, fioSeconds: number): Promise<Run> {
  const { proc, ready } = await serve(dist, dataDir);
  try {
    await new Promise((r) => setTimeout(r, 2_000)); // the heat sampler's first ticks
    const scrapes = [await scrape(ready), await scrape(ready), await scrape(ready)];
    const f = fio(ready, fioSeconds);
    return {
      scrapeMs: median(scrapes.map((s) => s.ms)),
      scrapeBytes: median(scrapes.map((s) => s.bytes)),
      maxProbeMs: median(scrapes.map((s) => s.maxProbeMs)),
      readP50Ms: f.p50,
      readP99Ms: f.p99,
      readP9999Ms: f.p9999,
      rssMiB: rssMiB(ready.pid),
    };
  } finally {
    await stop(proc);
  }
}

async function main(): Promise<void> {
  const peerDist = path.resolve(process.argv[2] ?? '');
  if (!fs.existsSync(path.join(peerDist, 'src/cli.js'))) throw new Error('usage: metrics-scale.js <peer dist dir> [runs] [volumes] [fioSeconds]');
  const runs = Number(process.argv[3] ?? 3);
  const volumes = Number(process.argv[4] ?? 10_000);
  const fioSeconds = Number(process.argv[5] ?? 10);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-metrics-scale-'));
  const load = (): string => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  try {
    const dirs = { none: path.join(root, 'none'), many: path.join(root, 'many') };
    await setup(dirs.none, 0);
    await setup(dirs.many, volumes);
    console.log(`setup: 'none' = 1 volume (64 MiB written); 'many' = it and ${volumes} idle volumes; load ${load()}`);
    type Key = `${'peer' | 'this'} ${'none' | 'many'}`;
    const results = new Map<Key, Run[]>();
    for (let r = 0; r < runs; r++) {
      const builds: ['peer' | 'this', string][] = r % 2 === 0 ? [['peer', peerDist], ['this', selfDist]] : [['this', selfDist], ['peer', peerDist]];
      for (const [label, dist] of builds) {
        for (const set of ['none', 'many'] as const) {
          const run = await once(dist, dirs[set], fioSeconds);
          const key: Key = `${label} ${set}`;
          results.set(key, [...(results.get(key) ?? []), run]);
          console.log(`${key} run ${r + 1}: ${JSON.stringify(Object.fromEntries(Object.entries(run).map(([k, v]) => [k, Math.round(v * 100) / 100])))}`);
        }
      }
    }
    console.log(`\nmedians of ${runs} runs (load ${load()}):`);
    const keys: (keyof Run)[] = ['scrapeMs', 'scrapeBytes', 'maxProbeMs', 'readP50Ms', 'readP99Ms', 'readP9999Ms', 'rssMiB'];
    console.log(`  ${''.padEnd(12)} ${(['peer none', 'peer many', 'this none', 'this many'] as Key[]).map((k) => k.padStart(11)).join(' ')}  many/none peer  many/none this`);
    for (const k of keys) {
      const m = (key: Key): number => median(results.get(key)!.map((x) => x[k]));
      const row = (['peer none', 'peer many', 'this none', 'this many'] as Key[]).map((key) => m(key).toFixed(2).padStart(11)).join(' ');
      console.log(`  ${k.padEnd(12)} ${row}  ${(m('peer many') / m('peer none')).toFixed(2).padStart(14)}  ${(m('this many') / m('this none')).toFixed(2).padStart(14)}`);
    }
    const rss = (key: Key): number => median(results.get(key)!.map((x) => x.rssMiB));
    console.log(`  RSS per idle volume: peer ${(((rss('peer many') - rss('peer none')) * MiB) / volumes).toFixed(0)} bytes, this ${(((rss('this many') - rss('this none')) * MiB) / volumes).toFixed(0)} bytes`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();
