// Segment store unsynced appends (append durable:false + sync(), a pool
// rebuild's bulk writes): they are not durable, not scanned and not
// "contained" until a sync or a durable append covers them; the next
// append goes after them; a roll makes them durable; pinRead keeps a
// descriptor readable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeShardRecord } from "../src/dataplane/ec/shard-record.js";
import { SegmentStore } from "../src/dataplane/ec/segment-store.js";

const owner = Buffer.from("00112233445566778899aabbccddeeff", "hex");

function record(chunkIndex: number, shardBytes = 4096): Buffer {
  return encodeShardRecord(
    { ownerId: owner, chunkIndex, stripeGeneration: 1, shardIndex: chunkIndex % 6, dataShards: 4, parityShards: 2 },
    randomBytes(shardBytes),
  );
}

async function withPool(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "ec-segstore-unsynced-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function scannedChunks(store: SegmentStore): Promise<number[]> {
  const out: number[] = [];
  for await (const e of store.scan()) if (e.kind === "record") out.push(e.header.chunkIndex);
  return out;
}

test("unsynced appends are written but not durable until sync(); durable appends go after them and cover them", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir);
    try {
      const [a, b] = [record(0), record(1)];
      const locs = await store.append([a, b], { durable: false });
      assert.deepEqual(locs, [
        { segment: 1, offsetBytes: 0, lengthBytes: a.length },
        { segment: 1, offsetBytes: a.length, lengthBytes: b.length },
      ]);
      // Written (readable by offset), but not durable: not contained, not scanned, not in the segment size.
      assert.equal(store.contains(locs[0]!), false);
      assert.deepEqual(await scannedChunks(store), []);
      assert.equal(store.segments()[0]!.sizeBytes, 0);
      assert.ok((await store.read(locs[1]!)).shard.equals(b.subarray(64)));

      await store.sync();
      assert.equal(store.contains(locs[1]!), true);
      assert.deepEqual(await scannedChunks(store), [0, 1]);
      assert.equal(store.segments()[0]!.sizeBytes, a.length + b.length);
      const commits = store.stats().commits;
      await store.sync(); // nothing new: no fdatasync
      assert.equal(store.stats().commits, commits);

      // Unsynced, then a durable append: the durable one lands after it and its fdatasync covers both.
      const [c, d] = [record(2), record(3)];
      const [lc] = await store.append([c], { durable: false });
      const [ld] = await store.append([d]);
      assert.equal(lc!.offsetBytes, a.length + b.length);
      assert.equal(ld!.offsetBytes, lc!.offsetBytes + c.length);
      assert.equal(store.contains(lc!), true);
      assert.deepEqual(await scannedChunks(store), [0, 1, 2, 3]);
    } finally {
      await store.close();
    }
    // Everything synced survives a reopen.
    const again = await SegmentStore.open(dir);
    try {
      assert.deepEqual(await scannedChunks(again), [0, 1, 2, 3]);
    } finally {
      await again.close();
    }
  });
});

test("a segment roll makes the unsynced records of the old head durable", async () => {
  await withPool(async (dir) => {
    const one = record(0).length;
    const store = await SegmentStore.open(dir, { segmentSizeBytes: one * 2 });
    try {
      const locs = await store.append([record(0), record(1), record(2)], { durable: false });
      assert.deepEqual(
        locs.map((l) => l.segment),
        [1, 1, 2],
      );
      // Segment 1 was synced before it was sealed; segment 2 (the head) is not yet.
      assert.equal(store.contains(locs[0]!), true);
      assert.equal(store.contains(locs[2]!), false);
      await store.sync();
      assert.equal(store.contains(locs[2]!), true);
      assert.deepEqual(await scannedChunks(store), [0, 1, 2]);
    } finally {
      await store.close();
    }
  });
});

test("pinRead keeps a segment's descriptor readable until released", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir);
    try {
      const rec = record(7);
      const [loc] = await store.append([rec]);
      const pin = await store.pinRead(loc!.segment);
      const back = Buffer.alloc(rec.length);
      assert.equal(readSync(pin.fd, back, 0, rec.length, loc!.offsetBytes), rec.length);
      assert.ok(back.equals(rec));
      pin.release();
      pin.release(); // idempotent
      await assert.rejects(store.pinRead(99), { name: "ShardNotFound" });
    } finally {
      await store.close();
    }
  });
});
