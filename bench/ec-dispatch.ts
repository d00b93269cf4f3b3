// Which way to run Reed-Solomon off the event loop: codec.ts or a piscina
// worker pool running @ronomon/reed-solomon. 4+2, 1 MiB stripes, encode,
// median of 3 x 300 ms. Run: node dist/bench/ec-dispatch.js
// Since issue #3 codec.ts codes ISA-L on the calling thread (native/README.md),
// so the "addon-threadpool" column now measures that; the piscina columns
// still measure the old @ronomon codec.
import { randomBytes } from "node:crypto";
import { Piscina } from "piscina";
import { encodeStripe } from "../src/dataplane/ec/codec.js";
import { validatePolicy } from "../src/dataplane/ec/policy.js";

const RUN_MS = 300;
const K = 4;
const M = 2;
const STRIPE_BYTES = 1048576;
const policy = validatePolicy("dispatch", { dataShards: K, parityShards: M, stripeSizeBytes: STRIPE_BYTES }, K + M);

async function gbps(inFlight: number, makeOp: () => () => Promise<unknown>): Promise<number> {
  const runs: number[] = [];
  for (let r = 0; r < 3; r++) {
    let stripes = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        const op = makeOp();
        while (performance.now() - start < RUN_MS) {
          await op();
          stripes++;
        }
      }),
    );
    runs.push((stripes * STRIPE_BYTES) / ((performance.now() - start) / 1000) / 1e9);
  }
  return runs.sort((a, b) => a - b)[1]!;
}

const pool = new Piscina({
  filename: new URL("./ec-dispatch-worker.js", import.meta.url).href,
  minThreads: 2,
  maxThreads: 2,
  concurrentTasksPerWorker: 2,
});
try {
  console.log("4+2 encode, 1 MiB stripes, GB/s (median of 3)");
  console.log("in-flight  addon-threadpool  piscina-copy  piscina-SharedArrayBuffer  addon/piscina-SAB");
  for (const inFlight of [1, 2, 4]) {
    const addon = await gbps(inFlight, () => {
      const data = randomBytes(STRIPE_BYTES);
      const parity = Buffer.alloc((STRIPE_BYTES / K) * M);
      return () => encodeStripe(policy, data, parity);
    });
    // Plain Buffers are structured-cloned (copied) to the worker and back.
    const copy = await gbps(inFlight, () => {
      const data = randomBytes(STRIPE_BYTES);
      const parity = Buffer.alloc((STRIPE_BYTES / K) * M);
      return () => pool.run({ k: K, m: M, data, parity });
    });
    const shared = await gbps(inFlight, () => {
      const data = new Uint8Array(new SharedArrayBuffer(STRIPE_BYTES));
      data.set(randomBytes(STRIPE_BYTES));
      const parity = new Uint8Array(new SharedArrayBuffer((STRIPE_BYTES / K) * M));
      return () => pool.run({ k: K, m: M, data, parity });
    });
    console.log(
      `${String(inFlight).padStart(9)}  ${addon.toFixed(2).padStart(16)}  ${copy.toFixed(2).padStart(12)}  ${shared.toFixed(2).padStart(25)}  ${(addon / shared).toFixed(2).padStart(16)}x`,
    );
  }
} finally {
  await pool.destroy();
}
