// Crash safety of the segment store with a real process kill: a child appends
// concurrently and reports every acknowledged location; it is SIGKILLed while
// appends are in flight. Every acknowledged record must read back intact, the
// scan must see them all with no corruption, and appends must resume.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { encodeShardRecord } from "../src/dataplane/ec/shard-record.js";
import { SegmentStore, type SegmentLocation } from "../src/dataplane/ec/segment-store.js";

const SEGMENT_SIZE_BYTES = 256 * 1024; // small, so the crash run rolls segments too
const ACKS_BEFORE_KILL = 150;

/** Deterministic shard bytes for chunk i, so the parent can verify without being told them. */
function shardFor(chunkIndex: number): Buffer {
  const lengthBytes = 4096 * (1 + (chunkIndex % 4));
  const shard = Buffer.allocUnsafe(lengthBytes);
  for (let j = 0; j < lengthBytes; j += 4) shard.writeUInt32LE((chunkIndex * 2654435761 + j) >>> 0, j);
  return shard;
}

const owner = Buffer.alloc(16, 0xab);
function recordFor(chunkIndex: number): Buffer {
  return encodeShardRecord(
    { ownerId: owner, chunkIndex, stripeGeneration: 1, shardIndex: 0, dataShards: 4, parityShards: 2 },
    shardFor(chunkIndex),
  );
}

// The child: 4 concurrent appenders, each printing "chunkIndex segment offset length" once durable.
const childSource = (storeUrl: string, recordUrl: string, dir: string) => `
import { SegmentStore } from ${JSON.stringify(storeUrl)};
import { encodeShardRecord } from ${JSON.stringify(recordUrl)};
${shardFor.toString()}
const owner = Buffer.alloc(16, 0xab);
const store = await SegmentStore.open(${JSON.stringify(dir)}, { segmentSizeBytes: ${SEGMENT_SIZE_BYTES} });
let next = 0;
await Promise.all([0, 1, 2, 3].map(async () => {
  for (;;) {
    const chunkIndex = next++;
    const record = encodeShardRecord({ ownerId: owner, chunkIndex, stripeGeneration: 1, shardIndex: 0, dataShards: 4, parityShards: 2 }, shardFor(chunkIndex));
    const [loc] = await store.append([record]);
    process.stdout.write(chunkIndex + " " + loc.segment + " " + loc.offsetBytes + " " + loc.lengthBytes + "\\n");
  }
}));
`;

test("records acknowledged before a SIGKILL mid-append all survive; scan and appends resume cleanly", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ec-segcrash-"));
  try {
    const storeUrl = new URL("../src/dataplane/ec/segment-store.js", import.meta.url).href;
    const recordUrl = new URL("../src/dataplane/ec/shard-record.js", import.meta.url).href;
    const child = spawn(process.execPath, ["--input-type=module", "-e", childSource(storeUrl, recordUrl, dir)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const acked = new Map<number, SegmentLocation>();
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    for await (const line of createInterface({ input: child.stdout! })) {
      const [chunkIndex, segment, offsetBytes, lengthBytes] = line.split(" ").map(Number) as [number, number, number, number];
      acked.set(chunkIndex, { segment, offsetBytes, lengthBytes });
      if (acked.size === ACKS_BEFORE_KILL) child.kill("SIGKILL"); // appends of the other loops are in flight
    }
    assert.equal(await exited, "SIGKILL");
    assert.ok(acked.size >= ACKS_BEFORE_KILL);

    const store = await SegmentStore.open(dir, { segmentSizeBytes: SEGMENT_SIZE_BYTES });
    for (const [chunkIndex, location] of acked) {
      const { header, shard } = await store.read(location);
      assert.equal(header.chunkIndex, chunkIndex);
      assert.ok(shard.equals(shardFor(chunkIndex)), `chunk ${chunkIndex} bytes differ`);
    }
    const seen = new Set<number>();
    let tornTails = 0;
    for await (const entry of store.scan()) {
      assert.notEqual(entry.kind, "corrupt", `corrupt record after a process crash: ${JSON.stringify(entry)}`);
      if (entry.kind === "record") seen.add(entry.header.chunkIndex);
      else tornTails++;
    }
    for (const chunkIndex of acked.keys()) assert.ok(seen.has(chunkIndex), `scan missed acknowledged chunk ${chunkIndex}`);
    assert.ok(tornTails <= 1, `at most the crashed head has a torn tail, saw ${tornTails}`);
    assert.ok(store.segments().length > 2, "the run should have rolled segments");

    const [after] = await store.append([recordFor(1_000_000)]);
    assert.equal((await store.read(after!)).header.chunkIndex, 1_000_000);
    let last: number | undefined;
    for await (const entry of store.scan()) if (entry.kind === "record") last = entry.header.chunkIndex;
    assert.equal(last, 1_000_000);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
