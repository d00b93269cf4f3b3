// The cost of one heat refresh (what a control-loop pass pays before its
// readings: a sample of every volume and, since the samples are kept in the
// index, their write) with many volumes: this build vs a peer build (the
// HeatTracker before a change, compiled apart), in one process over the same
// VolumeManager, passes alternated, medians.
//
//   node dist/bench/heat-refresh.js <peer heat.js> [volumes=10000] [passes=3]
//
// Two loads: idle (no volume open: nothing changed since the last pass, the
// index write has nothing to do) and busy (every volume open and each one's
// read counter moved since the last pass: a sample per volume written).
// Also: the first sample of a fresh tracker over that index (a restart's
// read-back of every volume's kept samples), and the index's size.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { HEAT_SAMPLES_DB, HeatTracker } from '../src/control/heat.js';
import { addVolumesLike } from '../test/helpers/many-volumes.js';

interface Tracker {
  refresh(windowMs?: number, volumes?: string[], nowMs?: number): Promise<void>;
  sample(nowMs?: number): void;
}
type TrackerClass = new (m: VolumeManager, retainMs: number, sampleIntervalMs: number) => Tracker;

const MiB = 1024 * 1024;
const WINDOW_MS = 3_600_000;
const PASS_MS = 30_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const peerPath = process.argv[2];
  if (!peerPath) throw new Error('usage: heat-refresh.js <peer heat.js> [volumes] [passes]');
  const count = Number(process.argv[3] ?? 10_000);
  const passes = Number(process.argv[4] ?? 3);
  const Peer = ((await import(pathToFileURL(path.resolve(peerPath)).href)) as { HeatTracker: TrackerClass }).HeatTracker;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'heat-refresh-bench-'));
  try {
    const setup = VolumeManager.open(path.join(dir, 'meta'));
    await setup.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * 1024 * MiB, labels: { tier: 'hot' } });
    await setup.createVolume({ name: 'v0', sizeBytes: MiB });
    await setup.close();
    await addVolumesLike(path.join(dir, 'meta'), 'v0', 'w', count - 1);
    const m = VolumeManager.open(path.join(dir, 'meta'));
    const names = m.meta.listVolumes().map((v) => v.name);
    let nowMs = Date.now() - 10 * WINDOW_MS;
    const self: Tracker = new HeatTracker(m, WINDOW_MS, 1_000);
    const peer: Tracker = new Peer(m, WINDOW_MS, 1_000);
    const time = async (tr: Tracker, at: number): Promise<number> => {
      const t0 = performance.now();
      await tr.refresh(WINDOW_MS, names, at);
      return performance.now() - t0;
    };
    const run = async (label: string, before: () => void): Promise<void> => {
      const ms: Record<'self' | 'peer', number[]> = { self: [], peer: [] };
      for (let i = 0; i < passes + 1; i++) {
        nowMs += PASS_MS;
        before();
        // Alternated: each build's pass sees the same load; the first pass of each is a warm-up.
        const p = await time(peer, nowMs);
        const s = await time(self, nowMs);
        if (i > 0) {
          ms.peer.push(p);
          ms.self.push(s);
        }
      }
      const [s, p] = [median(ms.self), median(ms.peer)];
      console.log(`${label}: refresh of ${count} volumes, median of ${passes}: this build ${s.toFixed(1)} ms, before ${p.toFixed(1)} ms (x${(s / p).toFixed(2)}) [this ${ms.self.map((x) => x.toFixed(0)).join(', ')}; before ${ms.peer.map((x) => x.toFixed(0)).join(', ')}]`);
    };
    await run('idle', () => undefined);
    const vols = names.map((n) => m.openVolume(n));
    await run('busy', () => {
      for (const v of vols) v.counters.readOps += 10;
    });
    (self as HeatTracker).stop();
    const heatDb = m.meta.openDB(HEAT_SAMPLES_DB);
    const rows = heatDb.getCount();
    // Pages of the heat db's tree (leaf + branch + overflow) x the page size: its share of the index file.
    const st = heatDb.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
    const bytes = st.pageSize * (st.treeBranchPageCount + st.treeLeafPageCount + st.overflowPages);
    const t0 = performance.now();
    const fresh = new HeatTracker(m, WINDOW_MS, 1_000);
    fresh.sample(nowMs + PASS_MS);
    const restoreMs = performance.now() - t0;
    console.log(`restart: a fresh tracker's first sample (reads back ${rows} kept samples of ${count} volumes) ${restoreMs.toFixed(0)} ms; heat samples db ${(bytes / MiB).toFixed(2)} MiB (${(bytes / rows).toFixed(0)} bytes a sample)`);
    await m.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
