// Rebuild speed of a 4+2 cold tier beside a raw copy of the same bytes, same
// run: a cold pool holding one shard of each of 256 stripes (64 MiB of shard
// records) is deleted and replaced by an empty directory, and the operator's
// pool rebuild (`couchestor rebuild cold-N`, POST /v1/rebuild: rebuild the
// shards that pool no longer holds, onto it) is timed; the peer is
// `dd conv=fsync` of that pool's segment files, copied before the loss.
// Three pools are lost in turn; medians and the ratio are printed (target
// rebuild >= 0.7x raw copy). After each timed rebuild an untimed scrub
// must find every stripe whole.
//
// What the two sides move, so the ratio stays honest:
// - Bytes: MB/s = 1e6 bytes of shard records landed on the replaced pool per
//   second. The raw copy copies exactly those bytes (the lost pool's segment
//   files, byte for byte what the rebuild writes back), not the surviving
//   shards the rebuild reads: it is "what a copy of the lost data would
//   cost", the floor any rebuild is compared with. The rebuild also reads and
//   CRC-checks k surviving shards of every stripe (decode input: a survivor
//   that fails its check is replaced by another; verifying all survivors is
//   the scrub's job, not a rebuild's), 4 bytes read per byte landed at 4+2,
//   and decodes; dd reads 1.
// - Durability: both end durable. dd fsyncs each file before it exits; the
//   rebuild returns after the rebuilt records are fdatasync'ed and the index
//   flips (LMDB) are synced.
// - Caches: both read from the page cache (the segment files were just
//   written or read), so neither waits on the disk for its reads.
// - Timing: dd from spawn to exit; the rebuild from the HTTP request to its
//   reply (an operator's `couchestor rebuild`), every stripe then Healthy.
// Besides wall clock, the daemon's CPU time over the rebuild (utime + stime
// from /proc) is printed as MB landed per CPU-second: it moves less with the
// load the other engineers put on this shared 2-core VM, so it shows whether
// a change made the rebuild do less work. dd's CPU is printed but not made a
// ratio: 10-20 ms for 64 MiB, at the 10 ms clock-tick resolution, and its
// page writeback runs in kernel threads that are not charged to it.
//
// A second series does the same with the stripes held by cold S3 objects
// (16 MiB objects, 1 MiB stripes, the same number of stripes) in a fresh
// daemon: the same batched path, but each stripe's flip is the object
// index's compare-and-swap (one LMDB transaction per window, each record
// written once: ColdObjectHolders.replaceMany) instead of a volume chunk
// entry's. Its MB/s is printed beside the volumes' (ratio
// objects / volumes, same run) and its own raw copy. Object stripes took a
// per-stripe path (every survivor read) until this series measured it at
// 0.12-0.14x of the volumes' rate.
// A third mode (MODE=large-object) rebuilds ONE cold S3 object of LARGE_MIB
// (64) MiB beside SMALL_OBJECTS objects of the same total size, both with
// STRIPE_KIB (64) KiB stripes (the policy allows 16 KiB x k and up), so one
// object holds many stripes cheaply. A flip per stripe rewrote the object's
// whole index record and each stripe's identity check decoded it: O(stripes^2)
// for one object, O(stripes) for many small ones (one object of 1024 stripes
// rebuilt at 0.07x the small objects' rate; 1.07x once a window's flips
// wrote each record once and current() decoded a record once per content).
// Printed: the large object's MB/s beside the small objects' (ratio large /
// small, same run), medians of the three lost pools.
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-rebuild.js`
// (VOLUME_MIB=64 for a quicker run; OBJECTS=0 skips the object series).
// About two minutes on this 2-core machine.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import type { TestDaemon } from '../test/helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, fillColdVolume, losePool, patternBytes, rebuildPool, replacePool, scrub, segmentBytes, segmentFiles, startColdDaemon, type PoolRebuildResult } from '../test/helpers/cold.js';
import { createColdBucket, startS3 } from '../test/helpers/s3-env.js';

const VOLUME_MIB = Number(process.env.VOLUME_MIB ?? 256);
const LOST_POOLS = [1, 3, 5];
const OBJECTS = process.env.OBJECTS !== '0';
const OBJECT_MIB = 16;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** CPU milliseconds (user + system) a process has used, from /proc (clock ticks of 10 ms). */
function processCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * (1000 / CLOCK_TICKS_PER_SECOND);
}
const CLOCK_TICKS_PER_SECOND = 100;

/** Raw copy of one pool's segment files, each made durable (fsync) like a rebuilt shard. */
function rawCopy(files: string[], dstDir: string): { bytes: number; mbps: number; cpuMs: number } {
  fs.mkdirSync(dstDir, { recursive: true });
  let bytes = 0;
  let cpuMs = 0;
  const start = process.hrtime.bigint();
  for (const f of files) {
    const r = spawnSync('/usr/bin/time', ['-f', 'cpu %U %S', 'dd', `if=${f}`, `of=${path.join(dstDir, path.basename(f))}`, 'bs=1M', 'conv=fsync', 'status=none'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dd failed: ${r.stderr}`);
    const cpu = /cpu ([\d.]+) ([\d.]+)/.exec(r.stderr);
    if (!cpu) throw new Error(`no CPU time from /usr/bin/time: ${r.stderr}`);
    cpuMs += (Number(cpu[1]) + Number(cpu[2])) * 1000;
    bytes += fs.statSync(f).size;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  fs.rmSync(dstDir, { recursive: true, force: true });
  return { bytes, mbps: bytes / seconds / 1e6, cpuMs };
}

interface Series {
  rebuild: number[];
  raw: number[];
  rebuildPerCpu: number[];
  lines: string[];
}

/** Loses and replaces each of LOST_POOLS in turn, times its rebuild beside a raw copy of its records. */
async function series(d: TestDaemon, stripes: number, complete: (r: PoolRebuildResult & { objectStripesChecked?: number }) => boolean): Promise<Series> {
  const out: Series = { rebuild: [], raw: [], rebuildPerCpu: [], lines: [] };
  for (const p of LOST_POOLS) {
    const copy = rawCopy(segmentFiles(d, p), path.join(d.dataDir, 'raw-copy'));
    out.raw.push(copy.mbps);
    losePool(d, p);
    replacePool(d, p);
    const cpuBefore = processCpuMs(d.proc.pid!);
    const start = process.hrtime.bigint();
    const report = await rebuildPool(d, p);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpuMs = processCpuMs(d.proc.pid!) - cpuBefore;
    if (!complete(report) || report.notRebuilt !== 0 || report.stripes.Healthy !== stripes) {
      throw new Error(`rebuild of cold-${p} incomplete: ${JSON.stringify(report)}`);
    }
    // Untimed: every shard of every stripe (the rebuilt ones included) must verify.
    const check = await scrub(d);
    if (check.badStripes !== 0 || check.stripes.Healthy !== stripes) throw new Error(`after rebuilding cold-${p}, scrub found: ${JSON.stringify(check)}`);
    const bytes = segmentBytes(d, p);
    if (bytes !== copy.bytes) throw new Error(`cold-${p}: rebuilt ${bytes} bytes, the raw copy copied ${copy.bytes}: not the same bytes`);
    out.rebuild.push(bytes / seconds / 1e6);
    out.rebuildPerCpu.push(bytes / 1e6 / (Math.max(cpuMs, 10) / 1000));
    out.lines.push(
      `    cold-${p}: rebuilt ${(bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s (rebuild ${report.durationMs} ms, daemon CPU ${cpuMs} ms); ` +
        `raw copy of ${(copy.bytes / 1e6).toFixed(1)} MB at ${copy.mbps.toFixed(1)} MB/s (dd CPU ${copy.cpuMs.toFixed(0)} ms)`,
    );
  }
  return out;
}

function print(label: string, s: Series): void {
  console.log(s.lines.join('\n'));
  console.log(`  rebuild, ${label.padEnd(26)}${median(s.rebuild).toFixed(1).padStart(8)} MB/s   runs ${s.rebuild.map((v) => v.toFixed(1)).join(' ')}`);
  console.log(`  raw copy (dd conv=fsync)           ${median(s.raw).toFixed(1).padStart(8)} MB/s   runs ${s.raw.map((v) => v.toFixed(1)).join(' ')}`);
  console.log(`  ratio rebuild / raw copy           ${(median(s.rebuild) / median(s.raw)).toFixed(2).padStart(8)}x   (target >= 0.70x)`);
  console.log(`  rebuild MB per daemon CPU-second   ${median(s.rebuildPerCpu).toFixed(0).padStart(8)}      runs ${s.rebuildPerCpu.map((v) => v.toFixed(0)).join(' ')}`);
}

/** Starts a daemon with an S3 front end whose EC policy has `stripeBytes` stripes, and a cold bucket. */
async function objectDaemon(stripeBytes: number): Promise<Awaited<ReturnType<typeof startS3>>> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-'));
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), MANUAL_DESTAGE_CONFIG);
  fs.mkdirSync(path.join(dataDir, 'policies'));
  const policy = DEFAULT_EC_POLICY_YAML.replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${stripeBytes}`);
  if (!policy.includes(`stripeSizeBytes: ${stripeBytes}`)) throw new Error('default policy has no stripeSizeBytes line to replace');
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), policy);
  const env = await startS3({ dataDir });
  await createColdBucket(env, 'bench');
  return env;
}

if (process.env.MODE === 'large-object') {
  const largeMiB = Number(process.env.LARGE_MIB ?? 64);
  const stripeBytes = Number(process.env.STRIPE_KIB ?? 64) * 1024;
  const smallObjects = Number(process.env.SMALL_OBJECTS ?? 64);
  const stripeCount = (largeMiB * MiB) / stripeBytes;
  const run = async (objects: number): Promise<Series> => {
    const env = await objectDaemon(stripeBytes);
    try {
      const each = (largeMiB * MiB) / objects;
      for (let i = 0; i < objects; i++) await env.sdk.send(new PutObjectCommand({ Bucket: 'bench', Key: `o-${i}`, Body: patternBytes(each, 100 + i) }));
      return await series(env.daemon, stripeCount, (r) => r.stripesRebuilt === stripeCount && r.objectStripesChecked === stripeCount);
    } finally {
      await env.cleanup();
    }
  };
  const large = await run(1);
  const small = await run(smallObjects);
  console.log(`ec-rebuild large-object: ${largeMiB} MiB in ${stripeCount} stripes of ${stripeBytes / 1024} KiB (4+2), one pool lost and replaced, median of ${LOST_POOLS.length}`);
  console.log(`  one object of ${largeMiB} MiB (${stripeCount} stripes in one object):`);
  print('one large object', large);
  console.log(`  ${smallObjects} objects of ${largeMiB / smallObjects} MiB (${stripeCount / smallObjects} stripes each):`);
  print('many small objects', small);
  console.log(`  ratio large / small rebuild        ${(median(large.rebuild) / median(small.rebuild)).toFixed(2).padStart(8)}x   (MB per CPU-second ${(median(large.rebuildPerCpu) / median(small.rebuildPerCpu)).toFixed(2)}x)`);
  console.log(`  load average during the run: ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
  process.exit(0);
}

const stripes = VOLUME_MIB; // one stripe per MiB on both sides
let volumes: Series;
const d = await startColdDaemon();
try {
  await fillColdVolume(d, 'bench', VOLUME_MIB, 7);
  volumes = await series(d, stripes, (r) => r.stripesRebuilt === stripes);
} finally {
  await d.cleanup();
}
console.log(`ec-rebuild: ${VOLUME_MIB} stripes (4+2, 1 MiB), one pool lost and replaced, median of ${LOST_POOLS.length}`);
console.log('  volume stripes (batched fast path: k survivors per stripe, native kernel):');
print('volume stripes', volumes);

if (OBJECTS) {
  // Same policy, same stripe count, held by cold S3 objects instead of a volume.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cold-'));
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), MANUAL_DESTAGE_CONFIG);
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  const env = await startS3({ dataDir });
  try {
    await createColdBucket(env, 'bench');
    for (let i = 0; i < VOLUME_MIB / OBJECT_MIB; i++) {
      await env.sdk.send(new PutObjectCommand({ Bucket: 'bench', Key: `o-${i}`, Body: patternBytes(OBJECT_MIB * MiB, 100 + i) }));
    }
    const objects = await series(env.daemon, stripes, (r) => r.stripesRebuilt === stripes && r.objectStripesChecked === stripes);
    console.log(`  object stripes (${VOLUME_MIB / OBJECT_MIB} cold S3 objects of ${OBJECT_MIB} MiB; same batched path, CAS flip per stripe):`);
    print('object stripes', objects);
    console.log(`  ratio object / volume rebuild      ${(median(objects.rebuild) / median(volumes.rebuild)).toFixed(2).padStart(8)}x   (MB per CPU-second ${(median(objects.rebuildPerCpu) / median(volumes.rebuildPerCpu)).toFixed(2)}x)`);
  } finally {
    await env.cleanup();
  }
}
// Both figures share the machine; a busy machine moves them together but adds noise.
console.log(`  load average during the run: ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
