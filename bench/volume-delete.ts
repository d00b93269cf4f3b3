// What deleting a volume with a big chunk map costs everyone else: this
// build beside a peer build (the code before a change, compiled apart), on
// copies of one data directory, builds alternated, medians of `runs`.
//
//   node .X-dist/bench/volume-delete.js <peer dist dir> [runs=3] [entries=1000000]
//
// The data directory has volumes `big` (that many Allocated chunk entries
// of 4 KiB, written into the index with the daemon stopped:
// test/helpers/big-chunk-map.ts; a fully written 4 TiB volume at 4 MiB
// chunks, 1 TiB at 1 MiB) and `small` (4 MiB). Two measures:
//  - daemon: a real `couchestor serve`; two probes run back to back, GET
//    /healthz on the admin port and a 4 KiB NBD READ of `small`, while
//    DELETE /v1/volumes/big runs; reported: the DELETE's answer time, the
//    time until the chunk map is gone (the answer for a build that removes
//    it before answering; else its "chunk map is removed" log line), and the
//    slowest probe of each kind over that whole time (unloaded: before it).
//  - in process: the build's VolumeManager on a copy, deleteVolume('big')
//    awaited to its end, with the event loop's longest hold (a 1 ms timer's
//    largest lateness).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bigChunkMap } from '../test/helpers/big-chunk-map.js';
import { RawNbd } from '../test/helpers/nbd-client.js';
import { holdDuring, median, prober, serve, sleep, stop } from './serve.js';

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

function request(port: number, method: string, urlPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

interface DaemonResult {
  answerMs: number;
  doneMs: number;
  healthzMs: number;
  nbdMs: number;
  healthzBaseMs: number;
  nbdBaseMs: number;
}

async function daemonRun(dist: string, dataDir: string): Promise<DaemonResult> {
  const { proc, ready } = await serve(dist, dataDir);
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  try {
    const small = await RawNbd.connect({ path: ready.nbd.socketPath });
    await small.handshake('small');
    const h = prober(() => request(ready.api.port, 'GET', '/healthz'));
    const r = prober(() => small.readAt(0, 4096));
    await sleep(1000);
    const healthzBaseMs = h.reset();
    const nbdBaseMs = r.reset();
    const t0 = performance.now();
    const status = await request(ready.api.port, 'DELETE', '/v1/volumes/big');
    if (status !== 204) throw new Error(`DELETE answered ${status}`);
    const answerMs = performance.now() - t0;
    // A build that answers before the map is removed logs its end.
    if (removesInBackground(dist)) while (!/chunk map is removed/.test(stderr)) await sleep(5);
    const doneMs = performance.now() - t0;
    const healthzMs = await h.stop();
    const nbdMs = await r.stop();
    await small.disconnect();
    return { answerMs, doneMs, healthzMs, nbdMs, healthzBaseMs, nbdBaseMs };
  } finally {
    await stop(proc);
  }
}

/** Whether `dist`'s delete removes the chunk map after answering (it has MetaStore.removeDeletingChunks). */
const background = new Map<string, boolean>();
function removesInBackground(dist: string): boolean {
  let b = background.get(dist);
  if (b === undefined) {
    b = fs.readFileSync(path.join(dist, 'src/dataplane/meta/store.js'), 'utf8').includes('removeDeletingChunks');
    background.set(dist, b);
  }
  return b;
}

async function inProcess(dist: string, dataDir: string): Promise<{ deleteMs: number; holdMs: number }> {
  const { VolumeManager } = (await import(pathToFileURL(path.join(dist, 'src/dataplane/volumes/manager.js')).href)) as typeof import('../src/dataplane/volumes/manager.js');
  const m = VolumeManager.open(dataDir);
  try {
    const r = await holdDuring(() => m.deleteVolume('big'));
    return { deleteMs: r.ms, holdMs: r.holdMs };
  } finally {
    await m.close();
  }
}

function copyDir(from: string, to: string): void {
  const r = spawnSync('cp', ['-a', '--sparse=always', from, to]);
  if (r.status !== 0) throw new Error(`cp failed: ${r.stderr}`);
}

async function main(): Promise<void> {
  const peerDist = process.argv[2];
  if (!peerDist) throw new Error('usage: volume-delete.js <peer dist dir> [runs] [entries]');
  const runs = Number(process.argv[3] ?? 3);
  const entries = Number(process.argv[4] ?? 1_000_000);
  const builds: [string, string][] = [
    ['this', selfDist],
    ['peer', path.resolve(peerDist)],
  ];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-vdel-'));
  try {
    const template = path.join(work, 'template');
    fs.mkdirSync(template);
    fs.writeFileSync(path.join(template, 'couchestor.yaml'), CONFIG);
    cli(selfDist, template, 'volumes', 'create', 'big', '4M', '--tier', 'hot');
    cli(selfDist, template, 'volumes', 'create', 'small', '4M', '--tier', 'hot');
    await bigChunkMap(template, 'big', { chunks: entries, chunkBytes: CHUNK_BYTES });
    const daemon = new Map<string, DaemonResult[]>(builds.map(([n]) => [n, []]));
    const proc = new Map<string, { deleteMs: number; holdMs: number }[]>(builds.map(([n]) => [n, []]));
    for (let i = 0; i < runs; i++) {
      for (const [name, dist] of i % 2 === 0 ? builds : [...builds].reverse()) {
        const d1 = path.join(work, `${name}-${i}-d`);
        copyDir(template, d1);
        daemon.get(name)!.push(await daemonRun(dist, d1));
        fs.rmSync(d1, { recursive: true, force: true });
        const d2 = path.join(work, `${name}-${i}-p`);
        copyDir(template, d2);
        proc.get(name)!.push(await inProcess(dist, d2));
        fs.rmSync(d2, { recursive: true, force: true });
      }
    }
    const f = (x: number) => x.toFixed(1);
    console.log(`volume delete, ${entries} chunk entries, median of ${runs} (load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})`);
    for (const [name] of builds) {
      const ds = daemon.get(name)!;
      const ps = proc.get(name)!;
      const med = (k: keyof DaemonResult) => f(median(ds.map((x) => x[k])));
      console.log(
        `${name}: daemon DELETE answered ${med('answerMs')} ms, map gone ${med('doneMs')} ms; slowest /healthz ${med('healthzMs')} ms (unloaded ${med('healthzBaseMs')}), slowest NBD read of another volume ${med('nbdMs')} ms (unloaded ${med('nbdBaseMs')}); ` +
          `in process: deleteVolume ${f(median(ps.map((x) => x.deleteMs)))} ms, longest event-loop hold ${f(median(ps.map((x) => x.holdMs)))} ms`,
      );
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
