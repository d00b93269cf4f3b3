// EC throughput: our codec.ts (so including the libuv threadpool dispatch and
// shard gathering) beside Intel ISA-L on this machine, same shapes, same run.
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-bench.js`
// (needs libisal-dev: `flock /tmp/apt.lock apt-get install -y libisal-dev`).
// Each figure is the median of 3 timed runs; GB = 1e9 bytes of stripe data.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { decodeStripe, EC_MAX_IN_FLIGHT, encodeStripe } from "../src/dataplane/ec/codec.js";
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

/** Run `inFlight` concurrent loops of makeOp(loop)() for RUN_MS; return GB/s of stripe data. */
async function measure(
  inFlight: number,
  stripeSizeBytes: number,
  makeOp: (loop: number) => () => Promise<unknown>,
): Promise<number> {
  let stripes = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(RUN_MS) * 1_000_000n;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, loop) => {
      const op = makeOp(loop);
      while (process.hrtime.bigint() < deadline) {
        await op();
        stripes++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return (stripes * stripeSizeBytes) / seconds / 1e9;
}

type Figures = { encode: number[]; decode: number[] };
const newFigures = (): Figures => ({ encode: [], decode: [] });

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
}

function isalOnce(binary: string, k: number, m: number, stripeSizeBytes: number, out: Figures): void {
  const text = execFileSync(binary, [String(k), String(m), String(stripeSizeBytes), String(RUN_MS)], { encoding: "utf8" });
  const parsed = JSON.parse(text) as { encodeGBps: number; decodeGBps: number };
  out.encode.push(parsed.encodeGBps);
  out.decode.push(parsed.decodeGBps);
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
    console.log(`EC bench: median of ${REPEATS} x ${RUN_MS} ms, GB/s of stripe data, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}`);
    console.log("ours/core = codec.ts, 1 stripe in flight (one threadpool thread), caller-owned parity/output buffers");
    console.log("ISA-L/core = bench/ec-isal.c on 1 thread; decode = first m data shards lost, for both");
    console.log("fresh-bufs = same with codec.ts allocating its outputs per stripe");
    console.log(`all-cores = ${EC_MAX_IN_FLIGHT} stripes in flight (EC_MAX_IN_FLIGHT), caller-owned buffers`);
    console.log("");
    console.log("shape  stripe    op      ours/core  ISA-L/core  ratio  | ours/core,fresh-bufs  ours/all-cores");
    for (const [k, m, stripeSizeBytes] of SHAPES) {
      const policy = validatePolicy(`bench-${k}-${m}`, { dataShards: k, parityShards: m, stripeSizeBytes }, k + m);
      const peer = newFigures();
      const one = newFigures();
      const fresh = newFigures();
      const all = newFigures();
      // Interleaved so that load from other processes hits both sides alike.
      for (let r = 0; r < REPEATS; r++) {
        isalOnce(binary, k, m, stripeSizeBytes, peer);
        await oursOnce(policy, 1, true, one);
        await oursOnce(policy, 1, false, fresh);
        await oursOnce(policy, EC_MAX_IN_FLIGHT, true, all);
      }
      for (const op of ["encode", "decode"] as const) {
        const [o, p, f, a] = [median(one[op]), median(peer[op]), median(fresh[op]), median(all[op])];
        console.log(
          `${`${k}+${m}`.padEnd(6)} ${String(stripeSizeBytes).padEnd(9)} ${op}  ${o.toFixed(2).padStart(9)}  ${p.toFixed(2).padStart(10)}  ${(o / p).toFixed(2).padStart(4)}x | ${f.toFixed(2).padStart(20)}  ${a.toFixed(2).padStart(14)}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
