// First 4 KiB write to each of 256 fresh chunks below a hot volume file's size
// after a restart (the maybe-stale check of Volume.allocate), this build vs a
// peer build's VolumeManager, medians of alternated runs.
//
//   node dist/bench/stale-chunk-first-write.js <peer manager.js> [runs=3]
//
// Each run is a child process per build: 64 GiB sparse volume, a few chunks
// written (the last one included, as a GPT backup header would), flushed,
// manager closed and reopened in the same process, then each first write is
// timed alone (awaited before the next) and the child prints the median ms.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const VOLUME_BYTES = 64 * GiB;
const FRESH_CHUNKS = 256;

interface Vol {
  write(offsetBytes: number, data: Buffer, fua: boolean, cb: (err: Error | null) => void): void;
  flush(): Promise<void>;
}
interface Manager {
  putPool(p: { name: string; path: string; tier: string; capacityBytes: number; labels: Record<string, string> }): Promise<unknown>;
  createVolume(o: { name: string; sizeBytes: number }): Promise<unknown>;
  openVolume(name: string): Vol;
  close(): Promise<void>;
}

function write(vol: Vol, offsetBytes: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => vol.write(offsetBytes, data, false, (err) => (err ? reject(err) : resolve())));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function child(managerPath: string): Promise<void> {
  const { VolumeManager } = (await import(pathToFileURL(managerPath).href)) as { VolumeManager: { open(dir: string): Manager } };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-stale-chunk-'));
  try {
    const meta = path.join(dir, 'meta');
    let m = VolumeManager.open(meta);
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 2 * VOLUME_BYTES, labels: { tier: 'hot' } });
    await m.createVolume({ name: 'v', sizeBytes: VOLUME_BYTES });
    let vol = m.openVolume('v');
    const data = Buffer.alloc(4096, 0x5a);
    for (const c of [0, 1, 7, VOLUME_BYTES / MiB - 1]) await write(vol, c * MiB, data);
    await vol.flush();
    await m.close();
    m = VolumeManager.open(meta); // the restart: the file's size at open is now 64 GiB
    vol = m.openVolume('v');
    const ms: number[] = [];
    const strideChunks = Math.floor(VOLUME_BYTES / MiB / (FRESH_CHUNKS + 2));
    for (let i = 1; i <= FRESH_CHUNKS; i++) {
      const t0 = process.hrtime.bigint();
      await write(vol, (i * strideChunks + 3) * MiB, data);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    await vol.flush();
    await m.close();
    process.stdout.write(`${median(ms)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function runChild(managerPath: string): number {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', managerPath], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`bench child (${managerPath}) failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]!);
} else {
  const peer = process.argv[2];
  const runs = Number(process.argv[3] ?? 3);
  if (!peer) throw new Error('usage: stale-chunk-first-write.js <peer dist>/src/dataplane/volumes/manager.js [runs]');
  const ours = fileURLToPath(new URL('../src/dataplane/volumes/manager.js', import.meta.url));
  const oursMs: number[] = [];
  const peerMs: number[] = [];
  for (let r = 0; r < runs; r++) {
    // Alternate which build goes first so drift in load hits both alike.
    if (r % 2 === 0) {
      oursMs.push(runChild(ours));
      peerMs.push(runChild(peer));
    } else {
      peerMs.push(runChild(peer));
      oursMs.push(runChild(ours));
    }
    console.log(`run ${r + 1}: ours ${oursMs[r]!.toFixed(3)} ms, peer ${peerMs[r]!.toFixed(3)} ms`);
  }
  const o = median(oursMs);
  const p = median(peerMs);
  console.log(`first 4 KiB write to a fresh chunk below the file size after restart, median of ${runs} run medians (${FRESH_CHUNKS} chunks each):`);
  console.log(`  ours ${o.toFixed(3)} ms   peer ${p.toFixed(3)} ms   ours/peer ${(o / p).toFixed(3)}   load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}
