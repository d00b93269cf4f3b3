// What the first open of a big volume costs everyone else: this build beside
// a peer build (the code before a change, compiled apart), on the same data
// directories, builds alternated, medians of `runs`.
//
//   node .X-dist/bench/volume-open.js <peer dist dir> [runs=3] [entries=100000,1000000]
//
// Per entry count: a data directory with volumes `big` (that many Allocated
// chunk entries of 4 KiB, written into the index with the daemon stopped:
// test/helpers/big-chunk-map.ts) and `small` (4 MiB). Two measures:
//  - daemon: a real `couchestor serve`; two probes run back to back, GET
//    /healthz on the admin port and a 4 KiB NBD READ of `small` on its own
//    connection, while a third connection negotiates `big` (NBD_OPT_GO:
//    the open); reported: the open's time (GO sent to its reply), the
//    slowest probe of each kind during it (what a client of another volume
//    waits), and both probes' slowest before the open (unloaded).
//  - in process: the build's VolumeManager on the same directory, the open
//    of `big` (this build: borrowVolumeAsync; the peer: openVolume, its only
//    open) with the event loop's longest hold (a 1 ms timer's largest lateness
//    plus the gap measured by perf_hooks' event-loop delay histogram), and
//    VolumeManager.open's start-up time (its pool-usage scan of every entry).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bigChunkMap } from '../test/helpers/big-chunk-map.js';
import { RawNbd } from '../test/helpers/nbd-client.js';
import { median, serve, stop } from './serve.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const selfDist = path.resolve(here, '..');
const CHUNK_BYTES = 4096;

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;

function cli(dist: string, dataDir: string, ...args: string[]): void {
  const r = spawnSync(process.execPath, [path.join(dist, 'src/cli.js'), ...args, '--data-dir', dataDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`couchestor ${args.join(' ')} failed: ${r.stderr}`);
}

function healthz(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve());
      })
      .on('error', reject);
  });
}

/** Runs `once` back to back until stop(); the slowest call's ms. */
function prober(once: () => Promise<unknown>): { stop: () => Promise<number>; reset: () => number; count: () => number } {
  let running = true;
  let worst = 0;
  let n = 0;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      await once();
      worst = Math.max(worst, performance.now() - t0);
      n++;
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return worst;
    },
    reset: () => {
      const w = worst;
      worst = 0;
      return w;
    },
    count: () => n,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function daemonRun(dist: string, dataDir: string): Promise<{ openMs: number; healthzMs: number; nbdMs: number; healthzBaseMs: number; nbdBaseMs: number }> {
  const { proc, ready } = await serve(dist, dataDir);
  try {
    const small = await RawNbd.connect({ path: ready.nbd.socketPath });
    await small.handshake('small');
    const h = prober(() => healthz(ready.api.port));
    const r = prober(() => small.readAt(0, 4096));
    await sleep(1000);
    const healthzBaseMs = h.reset();
    const nbdBaseMs = r.reset();
    const big = await RawNbd.connect({ path: ready.nbd.socketPath });
    const t0 = performance.now();
    await big.handshake('big');
    const openMs = performance.now() - t0;
    const healthzMs = await h.stop();
    const nbdMs = await r.stop();
    await big.disconnect();
    await small.disconnect();
    return { openMs, healthzMs, nbdMs, healthzBaseMs, nbdBaseMs };
  } finally {
    await stop(proc);
  }
}

async function inProcess(dist: string, dataDir: string, self: boolean): Promise<{ startMs: number; openMs: number; holdMs: number }> {
  const { VolumeManager } = (await import(pathToFileURL(path.join(dist, 'src/dataplane/volumes/manager.js')).href)) as typeof import('../src/dataplane/volumes/manager.js');
  const t0 = performance.now();
  const m = VolumeManager.open(dataDir);
  const startMs = performance.now() - t0;
  try {
    // The largest lateness of a 1 ms timer: the longest the event loop was held.
    let hold = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      hold = Math.max(hold, now - last - 1);
      last = now;
    }, 1);
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    await sleep(5);
    hold = 0;
    last = performance.now();
    const t1 = performance.now();
    const vol = self ? await m.borrowVolumeAsync('big') : m.openVolume('big');
    const openMs = performance.now() - t1;
    await sleep(5);
    clearInterval(timer);
    h.disable();
    void vol;
    return { startMs, openMs, holdMs: Math.max(hold, h.max / 1e6) };
  } finally {
    await m.close();
  }
}

async function main(): Promise<void> {
  const peerDist = process.argv[2];
  if (!peerDist) throw new Error('usage: volume-open.js <peer dist dir> [runs=3] [entries=100000,1000000]');
  const runs = Number(process.argv[3] ?? 3);
  const counts = (process.argv[4] ?? '100000,1000000').split(',').map(Number);
  const builds: [string, string][] = [
    ['this', selfDist],
    ['peer', path.resolve(peerDist)],
  ];
  console.log(`load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (const entries of counts) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-open-'));
    try {
      fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), CONFIG);
      const { proc } = await serve(selfDist, dataDir);
      await stop(proc);
      cli(selfDist, dataDir, 'volumes', 'create', 'big', '4M', '--tier', 'hot');
      cli(selfDist, dataDir, 'volumes', 'create', 'small', '4M', '--tier', 'hot');
      await bigChunkMap(dataDir, 'big', { chunks: entries, chunkBytes: CHUNK_BYTES });
      const daemon = new Map<string, Awaited<ReturnType<typeof daemonRun>>[]>();
      const proc2 = new Map<string, Awaited<ReturnType<typeof inProcess>>[]>();
      for (let i = 0; i < runs; i++) {
        for (const [name, dist] of builds) {
          daemon.set(name, [...(daemon.get(name) ?? []), await daemonRun(dist, dataDir)]);
          proc2.set(name, [...(proc2.get(name) ?? []), await inProcess(dist, dataDir, name === 'this')]);
        }
      }
      for (const [name] of builds) {
        const d = daemon.get(name)!;
        const p = proc2.get(name)!;
        const f = (xs: number[]) => median(xs).toFixed(1);
        console.log(
          `${entries} entries ${name}: daemon open ${f(d.map((x) => x.openMs))} ms, slowest during it: healthz ${f(d.map((x) => x.healthzMs))} ms, nbd read ${f(d.map((x) => x.nbdMs))} ms (unloaded ${f(d.map((x) => x.healthzBaseMs))} / ${f(d.map((x) => x.nbdBaseMs))} ms); ` +
            `in process: open ${f(p.map((x) => x.openMs))} ms, longest event-loop hold ${f(p.map((x) => x.holdMs))} ms, VolumeManager.open ${f(p.map((x) => x.startMs))} ms`,
        );
      }
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }
  console.log(`load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}

await main();
