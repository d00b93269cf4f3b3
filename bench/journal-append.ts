// The journal's append path in process, this build vs a peer build's Journal
// (e.g. the previous commit's), both loaded in one process and measured in
// alternated short segments so drift in machine load hits both alike.
//
//   node dist/bench/journal-append.js <peer dist>/src/dataplane/journal/journal.js [segments=10]
//
// Rows (ops/s, median over the segments, each SEGMENT_MS long):
//   qd1:  append 4 KiB, then sync (a FLUSH after every write, as fio --fsync=1);
//   qd32: 32 concurrent 4 KiB appends, then one sync (group commit).
// After each segment every record is released (as a destage would), so the
// journal files are removed and the disk does not fill.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const BLOCK_BYTES = 4096;
const SEGMENT_MS = 500;
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

/** One segment of a row: ops/s. */
async function segment(j: JournalLike, qd: number): Promise<number> {
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(SEGMENT_MS) * 1_000_000n;
  const batch: Promise<void>[] = new Array(qd);
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < qd; i++) batch[i] = j.append(1, 1, ((n + i) % 256) * BLOCK_BYTES, BLOCK_BYTES, data);
    await Promise.all(batch);
    await j.sync();
    n += qd;
  }
  const opsPerS = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  j.release(1, 0, Number.MAX_SAFE_INTEGER);
  return opsPerS;
}

const peerPath = process.argv[2];
const segments = Number(process.argv[3] ?? 10);
if (!peerPath) throw new Error('usage: journal-append.js <peer dist>/src/dataplane/journal/journal.js [segments]');
const oursPath = fileURLToPath(new URL('../src/dataplane/journal/journal.js', import.meta.url));
const builds = await Promise.all([oursPath, peerPath].map(async (p) => (await import(pathToFileURL(p).href)) as JournalModule));
const dirs = builds.map(() => fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bench-journal-')));
try {
  const journals = builds.map((b, i) => b.Journal.open({ dir: dirs[i]!, chunkSizeBytes: 1 << 20, destagedSeq: () => 0, volumeExists: () => true }));
  for (const qd of [1, QD]) {
    const ops: number[][] = [[], []];
    for (let s = 0; s < segments; s++) {
      const order = s % 2 === 0 ? [0, 1] : [1, 0];
      for (const b of order) ops[b]!.push(await segment(journals[b]!, qd));
    }
    const [o, p] = ops.map(median) as [number, number];
    console.log(`qd${qd} append 4 KiB${qd > 1 ? 's' : ''} + one sync: ours ${o.toFixed(0)} ops/s   peer ${p.toFixed(0)} ops/s   ours/peer ${(o / p).toFixed(3)}   (median of ${segments} alternated ${SEGMENT_MS} ms segments)`);
  }
  for (const j of journals) await j.close();
} finally {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}
console.log(`load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
