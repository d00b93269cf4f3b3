// The journal's append path in process, this build vs a peer build's Journal
// (e.g. the previous commit's), both loaded in one process and measured in
// alternated short segments so drift in machine load hits both alike.
//
//   node dist/bench/journal-append.js <peer dist>/src/dataplane/journal/journal.js [segments=10] [dir]
//
// Rows (ops/s, median over the segments, each SEGMENT_MS long):
//   qd1:  append 4 KiB, then sync (a FLUSH after every write, as fio --fsync=1);
//   qd32: 32 concurrent 4 KiB appends, then one sync (group commit);
//   qd32 no sync: 32 concurrent appends, no sync (the append path alone).
// `dir` (default the OS temp dir) holds the journals: a tmpfs (/dev/shm)
// takes the disk, and other work's load on it, out of the figures, leaving
// the code path's own cost.
// After each segment every record is released (as a destage would), so the
// journal files are removed and the disk does not fill.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const BLOCK_BYTES = 4096;
const SEGMENT_MS = 300;
const QD = 32;

interface JournalLike {
  append(type: number, volumeId: number, offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void>;
  sync(): Promise<void>;
  release(volumeId: number, chunkIndex: number, uptoSeq: number): void;
  close(): Promise<void>;
}
type JournalModule = { Journal: { open(o: object): JournalLike } };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const data = Buffer.alloc(BLOCK_BYTES, 0x5a);

/**
 * One segment of a row: ops/s, and the process's CPU time (user + system,
 * thread pool included) per op in µs, which other work on the machine moves
 * less than it moves throughput.
 */
async function segment(j: JournalLike, qd: number, sync: boolean): Promise<[number, number]> {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(SEGMENT_MS) * 1_000_000n;
  const batch: Promise<void>[] = new Array(qd);
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < qd; i++) batch[i] = j.append(1, 1, ((n + i) % 256) * BLOCK_BYTES, BLOCK_BYTES, data);
    await Promise.all(batch);
    if (sync) await j.sync();
    n += qd;
  }
  const opsPerS = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  const cpu = process.cpuUsage(cpu0);
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  return [opsPerS, (cpu.user + cpu.system) / n];
}

const peerPath = process.argv[2];
const segments = Number(process.argv[3] ?? 10);
const parentDir = process.argv[4] ?? os.tmpdir();
if (!peerPath) throw new Error('usage: journal-append.js <peer dist>/src/dataplane/journal/journal.js [segments]');
const oursPath = fileURLToPath(new URL('../src/dataplane/journal/journal.js', import.meta.url));
const builds = await Promise.all([oursPath, peerPath].map(async (p) => (await import(pathToFileURL(p).href)) as JournalModule));
const dirs = builds.map(() => fs.mkdtempSync(path.join(parentDir, 'couchestor-bench-journal-')));
try {
  const journals = builds.map((b, i) => b.Journal.open({ dir: dirs[i]!, chunkSizeBytes: 1 << 20, destagedSeq: () => 0, volumeExists: () => true }));
  for (const [qd, sync] of [[1, true], [QD, true], [QD, false]] as const) {
    const ops: number[][] = [[], []];
    const cpuUs: number[][] = [[], []];
    for (let s = 0; s < segments; s++) {
      const order = s % 2 === 0 ? [0, 1] : [1, 0];
      for (const b of order) {
        const [opsPerS, cpuUsPerOp] = await segment(journals[b]!, qd, sync);
        ops[b]!.push(opsPerS);
        cpuUs[b]!.push(cpuUsPerOp);
      }
    }
    const cpuPairRatio = median(cpuUs[0]!.map((x, i) => x / cpuUs[1]![i]!));
    const [o, p] = ops.map(median) as [number, number];
    // Each pair ran back to back: the median of the pairs' ratios is less exposed to load drift than the ratio of medians.
    const pairRatio = median(ops[0]!.map((x, i) => x / ops[1]![i]!));
    console.log(`qd${qd} append${qd > 1 ? 's' : ''} 4 KiB${sync ? ' + one sync' : ', no sync'}: ours ${o.toFixed(0)} ops/s   peer ${p.toFixed(0)} ops/s   ours/peer ${(o / p).toFixed(3)}, median pair ratio ${pairRatio.toFixed(3)}; CPU µs/op ours ${median(cpuUs[0]!).toFixed(1)} peer ${median(cpuUs[1]!).toFixed(1)}, median pair ratio ${cpuPairRatio.toFixed(3)}   (${segments} alternated ${SEGMENT_MS} ms segments each)`);
  }
  for (const j of journals) await j.close();
} finally {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}
console.log(`load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
