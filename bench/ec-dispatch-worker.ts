// piscina worker for bench/ec-dispatch.ts: encodes one stripe with the same
// addon codec.ts uses, as a worker-pool based codec would.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const ReedSolomon = require("@ronomon/reed-solomon") as typeof import("@ronomon/reed-solomon");
const contexts = new Map<number, Buffer>();

export interface DispatchTask {
  k: number;
  m: number;
  data: Uint8Array;
  parity: Uint8Array;
}

export default function encode(task: DispatchTask): Promise<DispatchTask> {
  const { k, m } = task;
  let context = contexts.get(k * 64 + m);
  if (context === undefined) {
    context = ReedSolomon.create(k, m);
    contexts.set(k * 64 + m, context);
  }
  const data = Buffer.from(task.data.buffer, task.data.byteOffset, task.data.byteLength);
  const parity = Buffer.from(task.parity.buffer, task.parity.byteOffset, task.parity.byteLength);
  return new Promise((resolve) =>
    ReedSolomon.encode(context, (1 << k) - 1, ((1 << m) - 1) << k, data, 0, data.length, parity, 0, parity.length, () =>
      resolve(task),
    ),
  );
}
