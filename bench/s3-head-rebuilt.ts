// HEAD of an older cold S3 object after three of its 4+2 pools were replaced
// and rebuilt one after another: this build (a complete rebuild ends the
// pool's distrust, objects/pool-disks.ts) beside the build before (every HEAD
// read the shard headers on those pools for as long as the object lived).
// Each run starts a daemon per build (test/helpers of that build's dist),
// PUTs one cold object, replaces and rebuilds cold-0, -1, -2, then times HEADs
// (@aws-sdk/client-s3): median of HEADS, before the replacements, after the
// rebuilds, and after a restart. Printed per run and as medians of the runs,
// with the ratio ours/before.
// Run (after `npx tsc -p tsconfig.json --outDir DIST` here and in a worktree of the build before):
//   flock /tmp/bench.lock node DIST/bench/s3-head-rebuilt.js BEFORE_DIST [sizeMiB=256] [runs=5]
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HEADS = 7;
const MiB = 1024 * 1024;

interface Figures {
  baseMs: number;
  rebuiltMs: number;
  restartedMs: number;
  headerReadsPerHead: number | null;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** In a child process: one build's figures (its own test helpers, so its own daemon). */
async function child(distDir: string, sizeMiB: number): Promise<Figures> {
  const mod = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(path.join(distDir, rel)).href)) as T;
  const s3 = await mod<typeof import('../test/helpers/s3-env.js')>('test/helpers/s3-env.js');
  const cold = await mod<typeof import('../test/helpers/cold.js')>('test/helpers/cold.js');
  const { HeadObjectCommand, PutObjectCommand } = await import('@aws-sdk/client-s3');
  let env = await s3.startS3HotAndCold();
  try {
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'big', Body: cold.patternBytes(sizeMiB * MiB, 7) }));
    const heads = async (): Promise<number> => {
      const ms: number[] = [];
      for (let i = 0; i < HEADS; i++) {
        const t0 = process.hrtime.bigint();
        const h = await env.sdk.send(new HeadObjectCommand({ Bucket: 'cold', Key: 'big' }));
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (h.ContentLength !== sizeMiB * MiB) throw new Error(`HEAD: ${h.ContentLength} bytes`);
      }
      return median(ms);
    };
    const baseMs = await heads();
    for (const i of [0, 1, 2]) {
      cold.loseAndReplacePool(env.daemon, i);
      const r = await cold.rebuildPool(env.daemon, i);
      if (r.notRebuilt !== 0) throw new Error(`rebuild of cold-${i}: ${JSON.stringify(r)}`);
    }
    const rebuiltMs = await heads();
    await env.daemon.kill();
    env = await s3.restartS3(env);
    await cold.dropCache(env.daemon);
    const restartedMs = await heads();
    // The counter exists in this build only.
    const text = await s3.scrapeMetrics(env);
    const line = text.split('\n').find((l) => l.startsWith('couchestor_s3_cold_header_reads_total '));
    const headerReadsPerHead = line === undefined ? null : Number(line.split(' ')[1]) / HEADS;
    return { baseMs, rebuiltMs, restartedMs, headerReadsPerHead };
  } finally {
    await env.cleanup();
  }
}

function runChild(distDir: string, sizeMiB: number): Figures {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', distDir, String(sizeMiB)], { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 * MiB });
  const line = r.stdout.split('\n').find((l) => l.startsWith('FIGURES '));
  if (r.status !== 0 || line === undefined) throw new Error(`child for ${distDir} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(line.slice('FIGURES '.length)) as Figures;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') {
    const f = await child(process.argv[3]!, Number(process.argv[4]));
    process.stdout.write(`FIGURES ${JSON.stringify(f)}\n`);
    return;
  }
  const beforeDist = process.argv[2];
  if (beforeDist === undefined) throw new Error('usage: s3-head-rebuilt.js BEFORE_DIST [sizeMiB] [runs]');
  const sizeMiB = Number(process.argv[3] ?? 256);
  const runs = Number(process.argv[4] ?? 5);
  const ours = fileURLToPath(new URL('..', import.meta.url));
  const all: Record<'before' | 'ours', Figures[]> = { before: [], ours: [] };
  for (let run = 0; run < runs; run++) {
    // Alternating order, so drift in the machine's load hits both alike.
    const order: ['before' | 'ours', string][] = run % 2 === 0 ? [['before', beforeDist], ['ours', ours]] : [['ours', ours], ['before', beforeDist]];
    for (const [name, dist] of order) {
      const f = runChild(dist, sizeMiB);
      all[name].push(f);
      console.log(`run ${run + 1} ${name.padEnd(6)} HEAD ms: before replacements ${f.baseMs.toFixed(2)}, after 3 replacements + rebuilds ${f.rebuiltMs.toFixed(2)}, after a restart ${f.restartedMs.toFixed(2)}; header reads per HEAD after the restart ${f.headerReadsPerHead ?? 'n/a'}`);
    }
  }
  const m = (name: 'before' | 'ours', k: 'baseMs' | 'rebuiltMs' | 'restartedMs') => median(all[name].map((f) => f[k]));
  console.log(`\n${sizeMiB} MiB cold object, medians of ${runs} runs (each a median of ${HEADS} HEADs):`);
  for (const k of ['baseMs', 'rebuiltMs', 'restartedMs'] as const) {
    console.log(`  ${k.padEnd(12)} before ${m('before', k).toFixed(2)} ms, ours ${m('ours', k).toFixed(2)} ms, ours/before ${(m('ours', k) / m('before', k)).toFixed(3)}`);
  }
}

await main();
