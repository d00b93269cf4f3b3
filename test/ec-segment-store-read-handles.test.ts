// SegmentStore's cached read handles (bounded, released on removeSegment and
// close) and readBackMatches, the byte-exact read-back behind migration VERIFY.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readlinkSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeShardRecord } from "../src/dataplane/ec/shard-record.js";
import { MAX_CACHED_READ_HANDLES, SegmentStore, ShardNotFound } from "../src/dataplane/ec/segment-store.js";

const owner = Buffer.from("00112233445566778899aabbccddeeff", "hex");

function record(chunkIndex: number, shardBytes = 1024): { bytes: Buffer; shard: Buffer } {
  const shard = randomBytes(shardBytes);
  const bytes = encodeShardRecord(
    { ownerId: owner, chunkIndex, stripeGeneration: 1, shardIndex: chunkIndex % 6, dataShards: 4, parityShards: 2 },
    shard,
  );
  return { bytes, shard };
}

/** File descriptors of this process open on files under `dir`. */
function openFdsUnder(dir: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir + "/")) n++;
    } catch {
      // the fd closed while listing (readdir's own)
    }
  }
  return n;
}

async function withPool(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "ec-segstore-fds-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("reads over more segments than the handle bound stay byte-exact; open handles stay bounded and close releases them", async () => {
  await withPool(async (dir) => {
    const recs = Array.from({ length: MAX_CACHED_READ_HANDLES + 16 }, (_, i) => record(i));
    // One record per segment: every read below touches a different segment.
    const store = await SegmentStore.open(dir, { segmentSizeBytes: recs[0]!.bytes.length });
    const locations = await store.append(recs.map((r) => r.bytes));
    assert.equal(new Set(locations.map((l) => l.segment)).size, recs.length);
    for (let round = 0; round < 2; round++) {
      const read = await Promise.all(locations.map((l) => store.read(l)));
      read.forEach((r, i) => assert.ok(r.shard.equals(recs[i]!.shard), `record ${i} round ${round}`));
      assert.equal(store.stats().readHandles, MAX_CACHED_READ_HANDLES);
    }
    assert.ok(openFdsUnder(dir) > 0);
    // close() waits for idle handles to close: nothing of the pool stays open.
    await store.close();
    assert.equal(store.stats().readHandles, 0);
    assert.equal(openFdsUnder(dir), 0);
  });
});

test("a removed segment is not served from its cached handle", async () => {
  await withPool(async (dir) => {
    const recs = [record(0), record(1)];
    const store = await SegmentStore.open(dir, { segmentSizeBytes: recs[0]!.bytes.length });
    const [first, second] = await store.append(recs.map((r) => r.bytes));
    assert.ok((await store.read(first!)).shard.equals(recs[0]!.shard)); // caches segment 1's handle
    const { relocations } = await store.compactSegment(first!.segment, [first!]);
    await store.removeSegment(first!.segment);
    await assert.rejects(store.read(first!), ShardNotFound);
    assert.ok((await store.read(relocations[0]!.to)).shard.equals(recs[0]!.shard));
    assert.ok((await store.read(second!)).shard.equals(recs[1]!.shard));
    await store.close();
  });
});

test("readBackMatches returns the stored bytes only when they equal the record written", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir);
    const [a, b] = [record(0), record(1)];
    const [locA, locB] = await store.append([a.bytes, b.bytes]);
    const stored = await store.readBackMatches(locA!, a.bytes);
    assert.ok(stored?.equals(a.bytes));
    // Another record of the same length at that place (a misdirected write) does not match.
    assert.equal(await store.readBackMatches(locA!, b.bytes), undefined);
    // One flipped byte on disk does not match either.
    const fh = await open(join(dir, "seg-000000000001.cseg"), "r+");
    try {
      const at = locB!.offsetBytes + 100;
      const one = Buffer.alloc(1);
      await fh.read(one, 0, 1, at);
      one[0] = one[0]! ^ 0x5a;
      await fh.write(one, 0, 1, at);
    } finally {
      await fh.close();
    }
    assert.equal(await store.readBackMatches(locB!, b.bytes), undefined);
    await store.close();
  });
});
