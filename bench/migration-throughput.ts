// Online migration throughput, hot -> cold (4+2 erasure coded, verified) and
// cold -> hot, of a filled volume while fio loads another volume of the same
// daemon over NBD, beside the named peer: a raw copy of the same bytes (dd of
// the volume file to a file on the same filesystem, conv=fdatasync) under the
// same load. Throughput = volume bytes / migration time (re-copies of chunks
// written meanwhile are not counted as progress). Median of 3 rounds.
// With --tiers warm (or both, the default): hot -> warm and warm -> hot (the
// volume's file copied chunk by chunk into the warm pool's and back) beside
// its own peer measured in the same round: dd conv=fsync of the same bytes
// from the hot pool's file into the warm pool's directory.
// Run: node dist/bench/migration-throughput.js [--size-mib N] [--tiers cold|warm|both]
// (default 512 MiB: three rounds stay under two minutes on a 2-core machine;
// rounds stop early past BUDGET_MS and the report says how many ran).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const MiB = 1024 * 1024;
const ROUNDS = 3;
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
const sizeArg = process.argv.indexOf('--size-mib');
const SIZE_BYTES = (sizeArg > 0 ? Number(process.argv[sizeArg + 1]) : 512) * MiB;
const tiersArg = process.argv.indexOf('--tiers');
const TIERS = tiersArg > 0 ? process.argv[tiersArg + 1]! : 'both';
if (!['cold', 'warm', 'both'].includes(TIERS)) throw new Error('--tiers takes cold, warm or both');
const COLD = TIERS !== 'warm';
const WARM = TIERS !== 'cold';
/** The concurrent load: 4 KiB random reads + writes on a 64 MiB neighbour volume, capped so it is load, not a second benchmark. */
const LOAD_BYTES = 64 * MiB;
const BUDGET_MS = 100_000;
const LOAD_RATE_IOPS = 500;
/** The embedded default policy (standard-ec): 4 data + 2 parity shards. */
const DATA_SHARDS = 4;
const PARITY_SHARDS = 2;

interface Ready {
  nbd: { port: number };
  api: { port: number };
}

async function startDaemon(dataDir: string): Promise<{ proc: ChildProcess; ready: Ready }> {
  // The default pools (hot-0, cold-0..5) plus a warm pool, all on this filesystem.
  const pools = [
    'pools:',
    '  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }',
    '  - { name: warm-0, tier: warm, path: pools/warm-0, capacity: auto }',
    ...Array.from({ length: DATA_SHARDS + PARITY_SHARDS }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }`),
  ];
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), ['demoVolume: null', 'control:', '  reconcileIntervalMs: 3600000', ...pools, ''].join('\n'));
  const proc = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = await new Promise<Ready>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout! }).on('line', (l) => {
      const m = /^couchestor ready (.*)$/.exec(l);
      if (m) resolve(JSON.parse(m[1]!) as Ready);
    });
    proc.once('exit', (c) => reject(new Error(`daemon exited ${c}`)));
  });
  return { proc, ready };
}

async function api<T>(r: Ready, method: string, url: string, body?: unknown): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${r.api.port}${url}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

function fio(uri: string, args: string[]): ChildProcess {
  return spawn('fio', ['--name=load', '--ioengine=nbd', `--uri=${uri}`, '--output-format=terse', ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
}

async function stopFio(p: ChildProcess): Promise<void> {
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGINT');
  await done;
}

/**
 * sync(1) before every timed step: each starts with no dirty pages waiting
 * for writeback (the step before it just wrote 512 MiB). Without it, a dd
 * right after a migration measured 300-400 MiB/s and one after a dd
 * 1100-1300 MiB/s in the same run, so the ratio said more about the order
 * of the steps than about the copy.
 */
function settle(): void {
  spawnSync('sync', [], { stdio: 'ignore' });
}

/** dd of the first SIZE_BYTES of `from` into `to` with `conv`; MiB/s; the copy is removed. */
function ddCopy(from: string, to: string, conv: string): number {
  settle();
  const t0 = performance.now();
  const dd = spawnSync('dd', [`if=${from}`, `of=${to}`, 'bs=1M', `count=${SIZE_BYTES / MiB}`, conv], { stdio: 'ignore' });
  if (dd.status !== 0) throw new Error('dd failed');
  const rate = mbps(SIZE_BYTES, performance.now() - t0);
  fs.rmSync(to);
  return rate;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-migration-'));
const { proc, ready } = await startDaemon(dataDir);
try {
  const rec = await api<{ id: number; poolName: string }>(ready, 'POST', '/v1/volumes', { name: 'bench', sizeBytes: SIZE_BYTES });
  await api(ready, 'POST', '/v1/volumes', { name: 'neighbour', sizeBytes: LOAD_BYTES });
  const uri = `nbd://127.0.0.1:${ready.nbd.port}/bench`;
  const loadUri = `nbd://127.0.0.1:${ready.nbd.port}/neighbour`;
  // fio's default buffers are random: no chunk is all zeros (those would be skipped, not striped).
  const fill = spawnSync('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=4', `--size=${SIZE_BYTES}`, '--output-format=terse'], { stdio: 'ignore' });
  if (fill.status !== 0) throw new Error('fio fill failed');
  const volumeFile = path.join(dataDir, 'pools', rec.poolName, 'volumes', `${rec.id}.dat`);
  const rawTarget = path.join(dataDir, 'raw-copy.dat');

  const raw: number[] = [];
  const toCold: number[] = [];
  const toHot: number[] = [];
  const rawWarm: number[] = [];
  const toWarm: number[] = [];
  const warmToHot: number[] = [];
  const warmTarget = path.join(dataDir, 'pools', 'warm-0', 'raw-copy.dat');
  const startMs = performance.now();
  for (let round = 0; round < ROUNDS && (round === 0 || performance.now() - startMs < BUDGET_MS); round++) {
    const load = fio(loadUri, ['--rw=randrw', '--bs=4k', '--iodepth=4', `--size=${LOAD_BYTES}`, `--rate_iops=${LOAD_RATE_IOPS}`, '--time_based', '--runtime=600']);
    try {
      const migrate = async (tier: 'hot' | 'warm' | 'cold', out: number[]) => {
        settle();
        const p = await api<{ bytesCopied: number; startedMs: number; finishedMs: number }>(ready, 'POST', '/v1/volumes/bench/migrate', { tier });
        if (p.bytesCopied < SIZE_BYTES) throw new Error(`migration to ${tier} copied ${p.bytesCopied} of ${SIZE_BYTES} bytes`);
        out.push(mbps(SIZE_BYTES, p.finishedMs - p.startedMs));
      };
      if (COLD) {
        // Peer: the same bytes copied once, durably, on the same filesystem.
        raw.push(ddCopy(volumeFile, rawTarget, 'conv=fdatasync'));
        await migrate('cold', toCold);
        await migrate('hot', toHot);
      }
      if (WARM) {
        // Peer: the same bytes from the hot pool's file into the warm pool's directory, durably.
        rawWarm.push(ddCopy(volumeFile, warmTarget, 'conv=fsync'));
        await migrate('warm', toWarm);
        await migrate('hot', warmToHot);
      }
    } finally {
      await stopFio(load);
    }
    const last = (xs: number[]) => (xs.length ? `${xs.at(-1)!.toFixed(0)} MiB/s` : '-');
    console.error(`round ${round + 1}: raw ${last(raw)}, hot->cold ${last(toCold)}, cold->hot ${last(toHot)}; raw (fsync) ${last(rawWarm)}, hot->warm ${last(toWarm)}, warm->hot ${last(warmToHot)}`);
  }
  console.log(`migration throughput, ${SIZE_BYTES / MiB} MiB volume, fio randrw ${2 * LOAD_RATE_IOPS} IOPS on a neighbour volume, median of ${Math.max(raw.length, rawWarm.length)} rounds`);
  if (WARM) {
    const rw = median(rawWarm);
    console.log(`peer  raw copy (dd conv=fsync, hot pool -> warm pool dir)  ${rw.toFixed(1)} MiB/s`);
    for (const [name, xs] of [['hot -> warm (copy + fdatasync + verify)', toWarm], ['warm -> hot (copy + fdatasync + verify)', warmToHot]] as const) {
      const m = median(xs);
      console.log(`ours  ${name.padEnd(40)}  ${m.toFixed(1)} MiB/s  ratio ${(m / rw).toFixed(2)}x`);
    }
  }
  if (COLD) {
    const r = median(raw);
    console.log(`peer  raw copy (dd conv=fdatasync, same fs)  ${r.toFixed(1)} MiB/s`);
    for (const [name, xs] of [['hot -> cold (encode + verify)', toCold], ['cold -> hot (decode + verify)', toHot]] as const) {
      const m = median(xs);
      console.log(`ours  ${name.padEnd(36)}  ${m.toFixed(1)} MiB/s  ratio ${(m / r).toFixed(2)}x (target >= 0.50x)`);
    }
    // hot -> cold writes (k+m)/k bytes per volume byte (4+2: 1.5x), dd writes
    // 1x: at a ratio of k/(k+m) the shard writes run as fast as the raw copy's
    // writes, so this line says how close the migration is to the disk's bound.
    const writeAmp = (DATA_SHARDS + PARITY_SHARDS) / DATA_SHARDS;
    console.log(`info  hot -> cold shard bytes written ${(median(toCold) * writeAmp).toFixed(1)} MiB/s = ${((median(toCold) * writeAmp) / r).toFixed(2)}x the raw copy's write rate`);
  }
} finally {
  proc.kill('SIGTERM');
  await new Promise((res) => proc.once('exit', res));
  fs.rmSync(dataDir, { recursive: true, force: true });
}
