// Rebuild speed of a 4+2 cold tier beside a raw copy of the same bytes, same
// run: a cold pool holding one shard of each of 256 stripes (64 MiB of shard
// records) is deleted and replaced by an empty directory, and `scrub`
// (POST /v1/scrub: verify every stripe, rebuild the bad ones) is timed; the
// peer is `dd conv=fsync` of that pool's segment files, copied before the
// loss. MB/s = 1e6 bytes of shard records landed on the pool per second.
// Three pools are lost in turn; medians and the ratio are printed (target
// rebuild >= 0.7x raw copy).
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-rebuild.js`
// (VOLUME_MIB=64 for a quicker run). About a minute on this 2-core machine.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MiB, coldStatus, fillColdVolume, losePool, replacePool, scrub, segmentBytes, segmentFiles, startColdDaemon } from '../test/helpers/cold.js';

const VOLUME_MIB = Number(process.env.VOLUME_MIB ?? 256);
const LOST_POOLS = [1, 3, 5];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Raw copy of one pool's segment files, each made durable (fsync) like a rebuilt shard. */
function rawCopy(files: string[], dstDir: string): { bytes: number; mbps: number } {
  fs.mkdirSync(dstDir, { recursive: true });
  let bytes = 0;
  const start = process.hrtime.bigint();
  for (const f of files) {
    const r = spawnSync('dd', [`if=${f}`, `of=${path.join(dstDir, path.basename(f))}`, 'bs=1M', 'conv=fsync', 'status=none'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dd failed: ${r.stderr}`);
    bytes += fs.statSync(f).size;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  fs.rmSync(dstDir, { recursive: true, force: true });
  return { bytes, mbps: bytes / seconds / 1e6 };
}

const d = await startColdDaemon();
try {
  await fillColdVolume(d, 'bench', VOLUME_MIB, 7);
  const stripes = VOLUME_MIB; // fillColdVolume checked: one stripe per MiB

  const rebuild: number[] = [];
  const raw: number[] = [];
  const lines: string[] = [];
  for (const p of LOST_POOLS) {
    const copy = rawCopy(segmentFiles(d, p), path.join(d.dataDir, 'raw-copy'));
    raw.push(copy.mbps);
    losePool(d, p);
    replacePool(d, p);
    const start = process.hrtime.bigint();
    const report = await scrub(d);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (report.badStripes !== stripes || report.stripes.Healthy !== stripes) {
      throw new Error(`rebuild of cold-${p} incomplete: ${JSON.stringify(report)}`);
    }
    const bytes = segmentBytes(d, p);
    rebuild.push(bytes / seconds / 1e6);
    lines.push(`    cold-${p}: rebuilt ${(bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s (scrub ${report.durationMs} ms); raw copy of ${(copy.bytes / 1e6).toFixed(1)} MB at ${copy.mbps.toFixed(1)} MB/s`);
  }
  const r = median(rebuild);
  const c = median(raw);
  console.log(`ec-rebuild: ${VOLUME_MIB} stripes (4+2, 1 MiB), one pool lost and replaced, median of ${LOST_POOLS.length}`);
  console.log(lines.join('\n'));
  console.log(`  rebuild (scrub onto the new pool)  ${r.toFixed(1).padStart(8)} MB/s   runs ${rebuild.map((v) => v.toFixed(1)).join(' ')}`);
  console.log(`  raw copy (dd conv=fsync)           ${c.toFixed(1).padStart(8)} MB/s   runs ${raw.map((v) => v.toFixed(1)).join(' ')}`);
  console.log(`  ratio rebuild / raw copy           ${(r / c).toFixed(2).padStart(8)}x   (target >= 0.70x)`);
  // Both figures share the machine; a busy machine moves them together but adds noise.
  console.log(`  load average during the run: ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
} finally {
  await d.cleanup();
}
