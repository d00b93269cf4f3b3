// Segment compaction speed of a 4+2 cold tier beside a raw copy of the same
// bytes, same run: a cold volume is filled, then two chunks in three are
// rewritten and destaged, so its sealed segments are about two thirds dead
// (over the 0.5 threshold); one unthrottled pass (POST /v1/compact) copies
// the live third out and deletes the old files. MB/s = 1e6 bytes of live
// records copied per second of the pass (index flips, deletes and all). The
// peer is `dd conv=fsync` of as many bytes of segment files (a copy with
// nothing to decide). Three rounds (a fresh volume each); medians and the
// ratio are printed.
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-compaction.js`
// (VOLUME_MIB=32 for a quicker run). Under a minute on this 2-core machine.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV } from '../test/helpers/daemon.js';
import { COLD_POOLS, MiB, api, destage, patternBytes, segmentBytes, segmentFiles, startColdDaemon, createVolume } from '../test/helpers/cold.js';

const VOLUME_MIB = Number(process.env.VOLUME_MIB ?? 64);
const SEGMENT_BYTES = 4 * MiB;
const ROUNDS = 3;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** dd conv=fsync of `bytes` taken from the given segment files into a scratch directory. */
function rawCopy(files: string[], bytes: number, dstDir: string): number {
  fs.mkdirSync(dstDir, { recursive: true });
  let left = bytes;
  const start = process.hrtime.bigint();
  for (const f of files) {
    if (left <= 0) break;
    const take = Math.min(left, fs.statSync(f).size);
    const r = spawnSync('dd', [`if=${f}`, `of=${path.join(dstDir, path.basename(f))}`, 'bs=64K', `count=${Math.ceil(take / 65536)}`, 'conv=fsync', 'status=none'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dd failed: ${r.stderr}`);
    left -= take;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  fs.rmSync(dstDir, { recursive: true, force: true });
  return (bytes - Math.max(0, left)) / seconds / 1e6;
}

function writeChunks(uri: string, src: string, chunks: number[]): void {
  const script = [`h.connect_uri(${JSON.stringify(uri)})`, `src = open(${JSON.stringify(src)}, 'rb').read()`, `for c in ${JSON.stringify(chunks)}:`, `  h.pwrite(src[c * ${MiB}:(c + 1) * ${MiB}], c * ${MiB})`, 'h.flush()'].join('\n');
  const r = spawnSync('nbdsh', ['-c', script], { env: CLIENT_ENV, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nbdsh failed: ${r.stderr}`);
}

const d = await startColdDaemon(`demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${SEGMENT_BYTES}\n  compaction:\n    intervalMs: 0\n`);
try {
  const src = path.join(d.dataDir, 'src.bin');
  const compaction: number[] = [];
  const raw: number[] = [];
  const lines: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // A fresh volume per round: its segments start all live, then half of it is rewritten.
    const name = `bench-${round}`;
    await createVolume(d, name, VOLUME_MIB * MiB, 'cold');
    fs.writeFileSync(src, patternBytes(VOLUME_MIB * MiB, round));
    writeChunks(d.exportUri(name), src, Array.from({ length: VOLUME_MIB }, (_, c) => c));
    await destage(d);
    fs.writeFileSync(src, patternBytes(VOLUME_MIB * MiB, 10 + round));
    writeChunks(d.exportUri(name), src, Array.from({ length: VOLUME_MIB }, (_, c) => c).filter((c) => c % 3 !== 0));
    await destage(d);
    const before = Array.from({ length: COLD_POOLS }, (_, i) => segmentBytes(d, i)).reduce((a, b) => a + b, 0);
    const start = process.hrtime.bigint();
    const r = await api<{ copiedBytes: number; reclaimedBytes: number; segmentsCompacted: number }>(d, 'POST', '/v1/compact');
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const after = Array.from({ length: COLD_POOLS }, (_, i) => segmentBytes(d, i)).reduce((a, b) => a + b, 0);
    if (r.segmentsCompacted === 0 || r.copiedBytes === 0) throw new Error(`round ${round}: nothing compacted: ${JSON.stringify(r)}`);
    compaction.push(r.copiedBytes / seconds / 1e6);
    const files = Array.from({ length: COLD_POOLS }, (_, i) => segmentFiles(d, i)).flat();
    raw.push(rawCopy(files, r.copiedBytes, path.join(os.tmpdir(), `compaction-raw-${process.pid}`)));
    lines.push(`round ${round}: ${r.segmentsCompacted} segments, copied ${(r.copiedBytes / MiB).toFixed(1)} MiB in ${seconds.toFixed(2)} s = ${compaction.at(-1)!.toFixed(1)} MB/s; segment bytes ${(before / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB; dd conv=fsync ${raw.at(-1)!.toFixed(1)} MB/s`);
  }
  for (const l of lines) console.log(l);
  const c = median(compaction);
  const p = median(raw);
  console.log(`compaction ${c.toFixed(1)} MB/s vs dd conv=fsync ${p.toFixed(1)} MB/s: ratio ${(c / p).toFixed(2)}x (median of ${ROUNDS}, ${VOLUME_MIB} MiB volume, ${SEGMENT_BYTES / MiB} MiB segments)`);
} finally {
  await d.cleanup();
}
