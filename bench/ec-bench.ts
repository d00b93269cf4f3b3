// EC throughput: our codec.ts (ISA-L through native/ec_isal.c, including the
// JS API, slot accounting and shard copies) beside Intel ISA-L called from C
// (bench/ec-isal.c) on this machine, same shapes, same run.
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-bench.js`
// (needs libisal-dev: `flock /tmp/apt.lock apt-get install -y libisal-dev`).
// Each figure is the median of 3 timed runs; GB = 1e9 bytes of stripe data.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { decodeStripe, EC_MAX_IN_FLIGHT, EC_SYNC_MAX_STRIPE_BYTES, encodeStripe } from "../src/dataplane/ec/codec.js";
import { validatePolicy, type ErasureCodingPolicy } from "../src/dataplane/ec/policy.js";

const RUN_MS = 400;
const REPEATS = 3;
// 10+4 cannot split 1 MiB into 4 KiB-multiple shards; 1000 KiB is its nearest valid stripe.
const SHAPES: Array<[k: number, m: number, stripeSizeBytes: number]> = [
  [4, 2, 1048576],
  [8, 3, 1048576],
  [10, 4, 1024000],
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

type Rate = { wallGBps: number; cpuGBps: number };

/**
 * Run `inFlight` concurrent loops of makeOp(loop)() for RUN_MS. Returns GB of
 * stripe data per wall second and per second of this process's CPU time (all
 * its threads: main, threadpool, GC). On this shared, loaded 2-core machine
 * the CPU figure is the per-core throughput; wall time mostly measures how
 * much of a core the scheduler gave us.
 */
async function measure(
  inFlight: number,
  stripeSizeBytes: number,
  makeOp: (loop: number) => () => Promise<unknown>,
): Promise<Rate> {
  let stripes = 0;
  const ops = Array.from({ length: inFlight }, (_, loop) => makeOp(loop));
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(RUN_MS) * 1_000_000n;
  await Promise.all(
    ops.map(async (op) => {
      while (process.hrtime.bigint() < deadline) {
        await op();
        stripes++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const bytes = stripes * stripeSizeBytes;
  return { wallGBps: bytes / seconds / 1e9, cpuGBps: bytes / cpuSeconds / 1e9 };
}

type Figures = { encode: Rate[]; decode: Rate[]; decodeInPlace: Rate[] };
const newFigures = (): Figures => ({ encode: [], decode: [], decodeInPlace: [] });

/**
 * One timed repeat of our encode and decode. `reuse`: the caller passes its
 * own parity / output buffers (parityInto / into), as the destager and the
 * cache are meant to; otherwise every call allocates (the simple API).
 */
async function oursOnce(policy: ErasureCodingPolicy, inFlight: number, reuse: boolean, out: Figures): Promise<void> {
  const k = policy.dataShards;
  const m = policy.parityShards;
  const shardBytes = policy.stripeSizeBytes / k;
  const data = randomBytes(policy.stripeSizeBytes);
  const shards = (await encodeStripe(policy, Buffer.from(data))).map((s) => Buffer.from(s));
  // Worst case for a degraded read: the first m data shards are lost.
  const damaged = shards.map((s, i) => (i < m ? undefined : s));
  if (!(await decodeStripe(policy, damaged)).equals(data)) throw new Error("decode mismatch: benchmark would be meaningless");
  out.encode.push(
    await measure(inFlight, policy.stripeSizeBytes, () => {
      const parity = reuse ? Buffer.alloc(shardBytes * m) : undefined;
      return () => encodeStripe(policy, data, parity);
    }),
  );
  out.decode.push(
    await measure(inFlight, policy.stripeSizeBytes, () => {
      const into = reuse ? Buffer.alloc(policy.stripeSizeBytes) : undefined;
      return () => decodeStripe(policy, damaged, into);
    }),
  );
  if (!reuse) return;
  // A reader that lands the surviving data shards at their place in the output
  // buffer (as the cache does) leaves only the lost shards to produce.
  out.decodeInPlace.push(
    await measure(inFlight, policy.stripeSizeBytes, () => {
      const into = Buffer.alloc(policy.stripeSizeBytes);
      const inPlace = damaged.map((s, i) => {
        if (s === undefined || i >= k) return s;
        s.copy(into, i * shardBytes);
        return into.subarray(i * shardBytes, (i + 1) * shardBytes);
      });
      return () => decodeStripe(policy, inPlace, into);
    }),
  );
}

function isalOnce(binary: string, k: number, m: number, stripeSizeBytes: number, out: Figures): void {
  const text = execFileSync(binary, [String(k), String(m), String(stripeSizeBytes), String(RUN_MS)], { encoding: "utf8" });
  const parsed = JSON.parse(text) as { encodeGBps: number; decodeGBps: number; encodeCpuGBps: number; decodeCpuGBps: number };
  out.encode.push({ wallGBps: parsed.encodeGBps, cpuGBps: parsed.encodeCpuGBps });
  out.decode.push({ wallGBps: parsed.decodeGBps, cpuGBps: parsed.decodeCpuGBps });
}

function compileIsal(dir: string): string {
  const source = fileURLToPath(new URL("../../bench/ec-isal.c", import.meta.url));
  const binary = join(dir, "ec-isal");
  try {
    execFileSync("cc", ["-O2", "-o", binary, source, "-lisal"], { stdio: ["ignore", "inherit", "inherit"] });
  } catch {
    throw new Error("could not build bench/ec-isal.c; install ISA-L: flock /tmp/apt.lock apt-get install -y libisal-dev");
  }
  return binary;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "couchestor-ec-bench-"));
  try {
    const binary = compileIsal(dir);
    console.log(`EC bench: median of ${REPEATS} x ${RUN_MS} ms, GB of stripe data, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}`);
    console.log(
      `ours = codec.ts, 1 stripe in flight (coded on the calling thread up to EC_SYNC_MAX_STRIPE_BYTES = ${EC_SYNC_MAX_STRIPE_BYTES}), caller-owned parity/output buffers`,
    );
    console.log("ISA-L = bench/ec-isal.c on 1 thread; decode = first m data shards lost, for both");
    console.log("decode* = ours with the surviving data shards already in place in the output buffer (no copy); ISA-L as decode");
    console.log("/cpu-s = GB per second of process CPU time (the per-core figure); /wall-s = per elapsed second");
    console.log("fresh-bufs = ours allocating outputs per stripe; all-cores = ours with EC_MAX_IN_FLIGHT = " + EC_MAX_IN_FLIGHT + " in flight");
    console.log("");
    console.log(
      "shape  stripe    op       ours/cpu-s  ISA-L/cpu-s  ratio | ours/wall-s  ISA-L/wall-s  ratio | fresh-bufs/cpu-s  all-cores/wall-s",
    );
    for (const [k, m, stripeSizeBytes] of SHAPES) {
      const policy = validatePolicy(`bench-${k}-${m}`, { dataShards: k, parityShards: m, stripeSizeBytes }, k + m);
      const peer = newFigures();
      const one = newFigures();
      const fresh = newFigures();
      const all = newFigures();
      // Untimed pass first: JIT warm-up, so the first timed repeat measures steady state as the C peer does.
      await oursOnce(policy, 1, true, newFigures());
      // Interleaved so that load from other processes hits both sides alike.
      for (let r = 0; r < REPEATS; r++) {
        isalOnce(binary, k, m, stripeSizeBytes, peer);
        await oursOnce(policy, 1, true, one);
        await oursOnce(policy, 1, false, fresh);
        await oursOnce(policy, EC_MAX_IN_FLIGHT, true, all);
      }
      const pick = (rates: Rate[], key: keyof Rate): number => median(rates.map((r) => r[key]));
      const fixed = (value: number, width: number): string => value.toFixed(2).padStart(width);
      for (const op of ["encode", "decode", "decodeInPlace"] as const) {
        const peerRates = peer[op === "decodeInPlace" ? "decode" : op];
        const [oc, pc, ow, pw] = [pick(one[op], "cpuGBps"), pick(peerRates, "cpuGBps"), pick(one[op], "wallGBps"), pick(peerRates, "wallGBps")];
        const f = op === "decodeInPlace" ? "-".padStart(16) : fixed(pick(fresh[op], "cpuGBps"), 16);
        const label = op === "decodeInPlace" ? "decode*" : op;
        console.log(
          `${`${k}+${m}`.padEnd(6)} ${String(stripeSizeBytes).padEnd(9)} ${label.padEnd(7)}  ${fixed(oc, 10)}  ${fixed(pc, 11)}  ${fixed(oc / pc, 4)}x | ${fixed(ow, 11)}  ${fixed(pw, 12)}  ${fixed(ow / pw, 4)}x | ${f}  ${fixed(pick(all[op], "wallGBps"), 16)}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
