// What the first open of a big volume costs everyone else: this build beside
// a peer build (the code before a change, compiled apart), on the same data
// directories, builds alternated, medians of `runs`.
//
//   node .X-dist/bench/volume-open.js <peer dist dir> [runs=3] [entries=100000,1000000] [open,destage,scrub,rebuild]
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
// And a destage of a closed cold volume `cbig` of that many chunk entries
// (1 MiB chunks, trimmed: Discarded) with a 4 KiB record of chunk 0 in the
// journal (the state after a restart: every volume with records is closed),
// which the destager opens (VolumeManager.borrowById):
//  - daemon: the record written over NBD, the daemon restarted, then POST
//    /v1/destage (`couchestor destage`) timed, with the slowest GET
//    /healthz during it (probed back to back; unloaded: before it);
//  - in process: the build's VolumeManager with its cold tier started
//    (destager by hand), the record written, the manager opened again, and
//    destager.drain() timed with the event loop's longest hold (as above).
// And the background passes over `cbig` closed, its chunk 0 destaged (a
// stripe with a shard on every cold pool): a scrub (POST /v1/scrub; in
// process Reconstructor.scrub) and a pool rebuild of cold-0 (POST
// /v1/rebuild; its shards are all there, but the rebuild reads the closed
// volume's map for stripes on the pool and opens it to look at them), each
// timed with the slowest GET /healthz during it (daemon) or the event
// loop's longest hold (in process), on a daemon / manager just started (the
// volume closed).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bigChunkMap } from '../test/helpers/big-chunk-map.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { RawNbd } from '../test/helpers/nbd-client.js';
import { holdDuring, median, prober, serve, sleep, stop } from './serve.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const selfDist = path.resolve(here, '..');
const CHUNK_BYTES = 4096;
/** The cold volume's chunk: the default policy's stripe (the journal's chunk). */
const COLD_CHUNK_BYTES = 1024 * 1024;

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
coldTier:
  destageIntervalMs: 3600000
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
    const r = await holdDuring(() => (self ? m.borrowVolumeAsync('big') : Promise.resolve(m.openVolume('big'))));
    return { startMs, openMs: r.ms, holdMs: r.holdMs };
  } finally {
    await m.close();
  }
}

/**
 * A daemon of the build on `dataDir` probed with GET /healthz back to back
 * from its start: a second unloaded (the slowest probe then: healthzBaseMs),
 * then `measure(apiPort)` timed (ms) with the slowest probe during it
 * (healthzMs). The daemon is stopped after.
 */
async function timedWithHealthz(dist: string, dataDir: string, measure: (apiPort: number) => Promise<void>): Promise<{ ms: number; healthzMs: number; healthzBaseMs: number }> {
  const { proc, ready } = await serve(dist, dataDir);
  try {
    const h = prober(() => healthz(ready.api.port));
    await sleep(1000);
    const healthzBaseMs = h.reset();
    const t0 = performance.now();
    await measure(ready.api.port);
    const ms = performance.now() - t0;
    const healthzMs = await h.stop();
    return { ms, healthzMs, healthzBaseMs };
  } finally {
    await stop(proc);
  }
}

/** The daemon's destage of `cbig` after a restart (its record written over NBD first): its time and the slowest /healthz during it. */
async function daemonDestageRun(dist: string, dataDir: string): Promise<{ destageMs: number; healthzMs: number; healthzBaseMs: number }> {
  const first = await serve(dist, dataDir);
  try {
    const c = await RawNbd.connect({ path: first.ready.nbd.socketPath });
    await c.handshake('cbig');
    if ((await c.writeAt(0, Buffer.alloc(4096, 0x5a))).error !== 0 || (await c.flush()).error !== 0) throw new Error('write to cbig failed');
    await c.disconnect();
  } finally {
    await stop(first.proc);
  }
  const { ms: destageMs, healthzMs, healthzBaseMs } = await timedWithHealthz(dist, dataDir, async (apiPort) => {
    const res = await fetch(`http://127.0.0.1:${apiPort}/v1/destage`, { method: 'POST' });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`destage: HTTP ${res.status}`);
  });
  return { destageMs, healthzMs, healthzBaseMs };
}

/**
 * The build's (`dist`) VolumeManager opener for the in-process measures: a
 * data directory's manager with its cold tier started (default 4+2 policy,
 * destager by hand: an hour's interval), closed again if the start fails.
 */
async function coldTierOpener(dist: string): Promise<(dataDir: string) => Promise<import('../src/dataplane/volumes/manager.js').VolumeManager>> {
  const { VolumeManager } = (await import(pathToFileURL(path.join(dist, 'src/dataplane/volumes/manager.js')).href)) as typeof import('../src/dataplane/volumes/manager.js');
  const { parsePolicyYaml } = (await import(pathToFileURL(path.join(dist, 'src/dataplane/ec/policy.js')).href)) as typeof import('../src/dataplane/ec/policy.js');
  const { DEFAULT_EC_POLICY_YAML } = (await import(pathToFileURL(path.join(dist, 'src/config.js')).href)) as typeof import('../src/config.js');
  return async (dataDir) => {
    const m = VolumeManager.open(dataDir);
    try {
      m.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6), { intervalMs: 3_600_000, thresholdPercent: 90, concurrency: 2 });
    } catch (err) {
      await m.close();
      throw err;
    }
    return m;
  };
}

/** The build's destager, in process, destaging `cbig`'s record with the volume closed: its time and the event loop's longest hold. */
async function inProcessDestage(dist: string, dataDir: string): Promise<{ destageMs: number; holdMs: number }> {
  const start = await coldTierOpener(dist);
  let m = await start(dataDir);
  try {
    const vol = await m.borrowVolumeAsync('cbig');
    await new Promise<void>((resolve, reject) => vol.write(0, Buffer.alloc(4096, 0x6b), false, (err) => (err ? reject(err) : resolve())));
    await vol.flush();
    m.giveBack(vol);
  } finally {
    await m.close();
  }
  m = await start(dataDir);
  try {
    if (m.isOpen('cbig')) throw new Error('cbig is open after the restart');
    const r = await holdDuring(() => m.cold!.destager.drain());
    return { destageMs: r.ms, holdMs: r.holdMs };
  } finally {
    await m.close();
  }
}

/** `cbig`'s chunk 0 written over NBD and destaged (a stripe), the daemon stopped: what the scrub and rebuild measures need. */
async function destagedChunk0(dist: string, dataDir: string): Promise<void> {
  const { proc, ready } = await serve(dist, dataDir);
  try {
    const c = await RawNbd.connect({ path: ready.nbd.socketPath });
    await c.handshake('cbig');
    if ((await c.writeAt(0, Buffer.alloc(4096, 0x3c))).error !== 0 || (await c.flush()).error !== 0) throw new Error('write to cbig failed');
    await c.disconnect();
    const res = await fetch(`http://127.0.0.1:${ready.api.port}/v1/destage`, { method: 'POST' });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`destage: HTTP ${res.status}`);
  } finally {
    await stop(proc);
  }
}

type Pass = 'scrub' | 'rebuild';
const PASS_REQUEST: Record<Pass, { path: string; body?: string }> = { scrub: { path: '/v1/scrub' }, rebuild: { path: '/v1/rebuild', body: JSON.stringify({ pool: 'cold-0' }) } };

/** A scrub or a rebuild of cold-0 by a daemon just started (cbig closed): its time and the slowest /healthz during it. */
async function daemonPassRun(dist: string, dataDir: string, pass: Pass): Promise<{ passMs: number; healthzMs: number; healthzBaseMs: number }> {
  const req = PASS_REQUEST[pass];
  const { ms: passMs, healthzMs, healthzBaseMs } = await timedWithHealthz(dist, dataDir, async (apiPort) => {
    const res = await fetch(`http://127.0.0.1:${apiPort}${req.path}`, { method: 'POST', ...(req.body ? { body: req.body, headers: { 'content-type': 'application/json' } } : {}) });
    const report = (await res.json()) as { stripesChecked?: number };
    if (!res.ok) throw new Error(`${pass}: HTTP ${res.status} ${JSON.stringify(report)}`);
    if (!((report.stripesChecked ?? 0) >= 1)) throw new Error(`${pass} looked at no stripe: ${JSON.stringify(report)}`);
  });
  return { passMs, healthzMs, healthzBaseMs };
}

/** The build's Reconstructor, in process, scrubbing or rebuilding cold-0 with cbig closed: its time and the event loop's longest hold. */
async function inProcessPass(dist: string, dataDir: string, pass: Pass): Promise<{ passMs: number; holdMs: number }> {
  const m = await (await coldTierOpener(dist))(dataDir);
  try {
    if (m.isOpen('cbig')) throw new Error('cbig is open after the start');
    const rc = m.cold!.reconstructor;
    const r = await holdDuring<{ stripesChecked: number }>(() => (pass === 'scrub' ? rc.scrub() : rc.rebuildPool('cold-0')));
    if (!(r.result.stripesChecked >= 1)) throw new Error(`${pass} looked at no stripe`);
    return { passMs: r.ms, holdMs: r.holdMs };
  } finally {
    await m.close();
  }
}

async function main(): Promise<void> {
  const peerDist = process.argv[2];
  if (!peerDist) throw new Error('usage: volume-open.js <peer dist dir> [runs=3] [entries=100000,1000000]');
  const runs = Number(process.argv[3] ?? 3);
  const counts = (process.argv[4] ?? '100000,1000000').split(',').map(Number);
  // Which measures: 'open' (the NBD open of big), 'destage' (the destage of cbig), 'scrub', 'rebuild' (passes over cbig); all by default.
  const only = new Set((process.argv[5] ?? '').split(',').filter((x) => x !== ''));
  const want = (what: string) => only.size === 0 || only.has(what);
  const passes = (['scrub', 'rebuild'] as const).filter(want);
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
      cli(selfDist, dataDir, 'volumes', 'create', 'cbig', '2M', '--tier', 'cold');
      await bigChunkMap(dataDir, 'big', { chunks: entries, chunkBytes: CHUNK_BYTES });
      await bigChunkMap(dataDir, 'cbig', { chunks: entries, chunkBytes: COLD_CHUNK_BYTES, state: ChunkState.Discarded });
      const daemon = new Map<string, Awaited<ReturnType<typeof daemonRun>>[]>();
      const proc2 = new Map<string, Awaited<ReturnType<typeof inProcess>>[]>();
      const destage = new Map<string, Awaited<ReturnType<typeof daemonDestageRun>>[]>();
      const destage2 = new Map<string, Awaited<ReturnType<typeof inProcessDestage>>[]>();
      const passD = new Map<string, Awaited<ReturnType<typeof daemonPassRun>>[]>();
      const passP = new Map<string, Awaited<ReturnType<typeof inProcessPass>>[]>();
      if (passes.length > 0) await destagedChunk0(selfDist, dataDir);
      for (let i = 0; i < runs; i++) {
        // Builds alternated: which goes first swaps every run.
        for (const [name, dist] of i % 2 === 0 ? builds : [...builds].reverse()) {
          for (const pass of passes) {
            passD.set(`${name} ${pass}`, [...(passD.get(`${name} ${pass}`) ?? []), await daemonPassRun(dist, dataDir, pass)]);
            passP.set(`${name} ${pass}`, [...(passP.get(`${name} ${pass}`) ?? []), await inProcessPass(dist, dataDir, pass)]);
          }
          if (want('open')) {
            daemon.set(name, [...(daemon.get(name) ?? []), await daemonRun(dist, dataDir)]);
            proc2.set(name, [...(proc2.get(name) ?? []), await inProcess(dist, dataDir, name === 'this')]);
          }
          if (want('destage')) {
            destage.set(name, [...(destage.get(name) ?? []), await daemonDestageRun(dist, dataDir)]);
            destage2.set(name, [...(destage2.get(name) ?? []), await inProcessDestage(dist, dataDir)]);
          }
        }
      }
      for (const pass of passes) {
        const ratio = (pick: (n: string) => number[]) => (median(pick('this')) / median(pick('peer'))).toFixed(3);
        console.log(
          `${entries} entries ${pass}, this/peer: slowest healthz ${ratio((n) => passD.get(`${n} ${pass}`)!.map((x) => x.healthzMs))}, daemon time ${ratio((n) => passD.get(`${n} ${pass}`)!.map((x) => x.passMs))}, ` +
            `in-process hold ${ratio((n) => passP.get(`${n} ${pass}`)!.map((x) => x.holdMs))}, in-process time ${ratio((n) => passP.get(`${n} ${pass}`)!.map((x) => x.passMs))}`,
        );
      }
      for (const [name] of builds) {
        const d = daemon.get(name) ?? [];
        const p = proc2.get(name) ?? [];
        const f = (xs: number[]) => median(xs).toFixed(1);
        const dd = destage.get(name) ?? [];
        const dp = destage2.get(name) ?? [];
        for (const pass of passes) {
          const pd = passD.get(`${name} ${pass}`)!;
          const pp = passP.get(`${name} ${pass}`)!;
          console.log(
            `${entries} entries ${name}: ${pass} with the cold volume closed: daemon ${f(pd.map((x) => x.passMs))} ms, slowest healthz during it ${f(pd.map((x) => x.healthzMs))} ms (unloaded ${f(pd.map((x) => x.healthzBaseMs))} ms); ` +
              `in process ${f(pp.map((x) => x.passMs))} ms, longest event-loop hold ${f(pp.map((x) => x.holdMs))} ms`,
          );
        }
        if (dd.length > 0) {
          console.log(
            `${entries} entries ${name}: destage of the closed cold volume: daemon ${f(dd.map((x) => x.destageMs))} ms, slowest healthz during it ${f(dd.map((x) => x.healthzMs))} ms (unloaded ${f(dd.map((x) => x.healthzBaseMs))} ms); ` +
              `in process ${f(dp.map((x) => x.destageMs))} ms, longest event-loop hold ${f(dp.map((x) => x.holdMs))} ms`,
          );
        }
        if (d.length === 0) continue;
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
