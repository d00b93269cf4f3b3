// The heat samples' memory with many busy volumes, and the sampler's tick
// time: this build vs a peer build (the HeatTracker before a change, compiled
// apart), each run in its own process (node --expose-gc) so the heaps do not
// mix, runs alternated, medians.
//
//   node .NAME-dist/bench/heat-memory.js <peer heat.js> [volumes=10000,100000] [runs=3] [ticks=600]
//
// A run: a VolumeManager over an index of `volumes` volumes (made once per
// count, shared by the runs), every one busy: its counters (as at its close,
// the manager's closedVolumeCounters: no file open, 100,000 volumes fit the
// fd limit) move before every tick, so each tick takes a sample of each.
// `ticks` 1 s ticks: past MAX_SAMPLES_PER_VOLUME (512), so each volume has
// been thinned once (to 384) and holds ~470, about the steady state's mean
// (384..512). Memory: heapUsed + external after gc, less the same before the
// tracker was made (its samples, maps and per-volume records). Tick: the
// median and the mean (a walk of every volume at 300 s and the thinnings
// included) of the ticks' times.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { VolumeCounters } from '../src/dataplane/volumes/volume.js';
import { addVolumesLike } from '../test/helpers/many-volumes.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 3_600_000;

interface Tracker {
  sample(nowMs?: number): void;
  tick(nowMs?: number): void;
  samplesHeld(volume?: string): number;
}
type TrackerClass = new (m: VolumeManager, retainMs: number, sampleIntervalMs: number) => Tracker;

interface RunResult {
  bytes: number;
  heapBytes: number;
  externalBytes: number;
  samples: number;
  tickMedianMs: number;
  tickMeanMs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** After gc, and again once freed array buffers' memory is counted off (V8 releases their stores off the main thread). */
async function used(): Promise<{ heap: number; external: number }> {
  const gc = (globalThis as { gc?: () => void }).gc!;
  gc();
  await new Promise((resolve) => setTimeout(resolve, 200));
  gc();
  const u = process.memoryUsage();
  return { heap: u.heapUsed, external: u.external };
}

/** One run in this process: the tracker of `heatJs` over the index in `dir`. */
async function child(heatJs: string, dir: string, ticks: number): Promise<void> {
  const Tracker = ((await import(pathToFileURL(path.resolve(heatJs)).href)) as { HeatTracker: TrackerClass }).HeatTracker;
  const m = VolumeManager.open(path.join(dir, 'meta'));
  // Every volume busy, none open: the counters a closed volume left (the tick reads those that moved).
  const closed = (m as unknown as { closedCounters: Map<number, VolumeCounters> }).closedCounters;
  const counters = m.listVolumes().map((rec) => {
    const c: VolumeCounters = { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 };
    closed.set(rec.id, c);
    return c;
  });
  const before = await used();
  const tracker = new Tracker(m, WINDOW_MS, 1_000);
  const t0 = Date.now() - 2 * WINDOW_MS;
  tracker.sample(t0);
  const ms: number[] = [];
  for (let k = 1; k <= ticks; k++) {
    for (const c of counters) {
      c.readOps += 1 + (k % 7);
      c.writeOps += k % 3;
    }
    const s = performance.now();
    tracker.tick(t0 + k * 1_000);
    ms.push(performance.now() - s);
  }
  const after = await used();
  const r: RunResult = {
    bytes: after.heap + after.external - before.heap - before.external,
    heapBytes: after.heap - before.heap,
    externalBytes: after.external - before.external,
    samples: tracker.samplesHeld(),
    tickMedianMs: median(ms),
    tickMeanMs: ms.reduce((a, b) => a + b, 0) / ms.length,
  };
  process.stdout.write(JSON.stringify(r) + '\n');
  await m.close();
}

async function makeIndex(dir: string, count: number): Promise<void> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * 1024 * MiB, labels: { tier: 'hot' } });
  await m.createVolume({ name: 'v0', sizeBytes: MiB });
  await m.close();
  await addVolumesLike(path.join(dir, 'meta'), 'v0', 'w', count - 1);
}

function runChild(heatJs: string, dir: string, ticks: number): RunResult {
  const self = fileURLToPath(import.meta.url);
  const out = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=12288', self, '--child', heatJs, dir, String(ticks)], { encoding: 'utf8', maxBuffer: 16 * MiB });
  if (out.status !== 0) throw new Error(`run of ${heatJs} failed (${out.status}): ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').pop()!) as RunResult;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
  const peerJs = process.argv[2];
  if (!peerJs) throw new Error('usage: heat-memory.js <peer heat.js> [volumes=10000,100000] [runs=3] [ticks=600]');
  const counts = (process.argv[3] ?? '10000,100000').split(',').map(Number);
  const runs = Number(process.argv[4] ?? 3);
  const ticks = Number(process.argv[5] ?? 600);
  const selfJs = fileURLToPath(new URL('../src/control/heat.js', import.meta.url));
  for (const count of counts) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'heat-memory-bench-'));
    try {
      await makeIndex(dir, count);
      const got: Record<'self' | 'peer', RunResult[]> = { self: [], peer: [] };
      for (let i = 0; i < runs; i++) {
        got.peer.push(runChild(peerJs, dir, ticks));
        got.self.push(runChild(selfJs, dir, ticks));
      }
      const med = (who: 'self' | 'peer', k: keyof RunResult): number => median(got[who].map((r) => r[k]));
      const mb = (b: number): string => `${(b / MiB).toFixed(1)} MiB`;
      const [sb, pb] = [med('self', 'bytes'), med('peer', 'bytes')];
      const [ss, ps] = [med('self', 'samples'), med('peer', 'samples')];
      console.log(`${count} busy volumes, ${ticks} ticks, median of ${runs} (load ${os.loadavg()[0]!.toFixed(1)}):`);
      console.log(`  samples memory: this build ${mb(sb)} (${(sb / ss).toFixed(1)} B a sample; heap ${mb(med('self', 'heapBytes'))}, external ${mb(med('self', 'externalBytes'))}), before ${mb(pb)} (${(pb / ps).toFixed(1)} B a sample; heap ${mb(med('peer', 'heapBytes'))}): x${(pb / sb).toFixed(2)} less [samples held ${ss} vs ${ps}]`);
      for (const k of ['tickMedianMs', 'tickMeanMs'] as const) {
        const [s, p] = [med('self', k), med('peer', k)];
        console.log(`  ${k === 'tickMedianMs' ? 'tick median' : 'tick mean  '}: this build ${s.toFixed(2)} ms, before ${p.toFixed(2)} ms (x${(s / p).toFixed(2)}) [this ${got.self.map((r) => r[k].toFixed(1)).join(', ')}; before ${got.peer.map((r) => r[k].toFixed(1)).join(', ')}]`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

await main();
