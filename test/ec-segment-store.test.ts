// Segment store on a real directory: durable appends with group commit,
// verified reads, scan across reopen and rolled segments, torn tails after a
// crash, corruption, compaction, and PoolOffline for a missing pool.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PoolOffline as StoragePoolOffline, StorageError } from "../src/dataplane/errors.js";
import { CorruptShard, encodeShardRecord, SHARD_HEADER_BYTES } from "../src/dataplane/ec/shard-record.js";
import {
  PoolOffline,
  SegmentStore,
  SegmentStoreMisuse,
  ShardNotFound,
  type ScanEntry,
  type SegmentLocation,
} from "../src/dataplane/ec/segment-store.js";

const owner = Buffer.from("00112233445566778899aabbccddeeff", "hex");

function record(chunkIndex: number, shardBytes = 4096): { bytes: Buffer; shard: Buffer } {
  const shard = randomBytes(shardBytes);
  const bytes = encodeShardRecord(
    { ownerId: owner, chunkIndex, stripeGeneration: 1, shardIndex: chunkIndex % 6, dataShards: 4, parityShards: 2 },
    shard,
  );
  return { bytes, shard };
}

async function withPool(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "ec-segstore-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function collect(store: SegmentStore): Promise<ScanEntry[]> {
  const entries: ScanEntry[] = [];
  for await (const entry of store.scan()) entries.push(entry);
  return entries;
}

function summary(entries: ScanEntry[]): string[] {
  return entries.map((e) =>
    e.kind === "record" ? `record ${e.location.segment}@${e.location.offsetBytes} chunk ${e.header.chunkIndex}` : `${e.kind} ${"location" in e ? `${e.location.segment}@${e.location.offsetBytes}` : `${e.segment}@${e.offsetBytes}`}`,
  );
}

test("appended records read back byte-exact, before and after reopen, and new appends follow them", async () => {
  await withPool(async (dir) => {
    const recs = [record(0), record(1), record(2)];
    let store = await SegmentStore.open(dir);
    const locations = await store.append(recs.map((r) => r.bytes));
    assert.deepEqual(locations, [
      { segment: 1, offsetBytes: 0, lengthBytes: 4160 },
      { segment: 1, offsetBytes: 4160, lengthBytes: 4160 },
      { segment: 1, offsetBytes: 8320, lengthBytes: 4160 },
    ]);
    for (const [i, loc] of locations.entries()) {
      const got = await store.read(loc);
      assert.ok(got.shard.equals(recs[i]!.shard));
      assert.equal(got.header.chunkIndex, i);
    }
    await store.close();

    store = await SegmentStore.open(dir);
    for (const [i, loc] of locations.entries()) assert.ok((await store.read(loc)).shard.equals(recs[i]!.shard));
    const more = record(3);
    const [loc3] = await store.append([more.bytes]);
    assert.deepEqual(loc3, { segment: 1, offsetBytes: 12480, lengthBytes: 4160 });
    assert.deepEqual(summary(await collect(store)), [
      "record 1@0 chunk 0",
      "record 1@4160 chunk 1",
      "record 1@8320 chunk 2",
      "record 1@12480 chunk 3",
    ]);
    await store.close();
  });
});

test("concurrent appends share one fdatasync per batch and get disjoint locations", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir);
    const recs = Array.from({ length: 20 }, (_, i) => record(i));
    const results = await Promise.all(recs.map((r) => store.append([r.bytes])));
    const offsets = results.map(([loc]) => loc!.offsetBytes).sort((a, b) => a - b);
    assert.deepEqual(offsets, recs.map((_, i) => i * 4160));
    const stats = store.stats();
    assert.equal(stats.recordsAppended, 20);
    assert.equal(stats.bytesAppended, 20 * 4160);
    // The first append starts a commit alone; the 19 that arrive meanwhile share the next one.
    assert.ok(stats.commits <= 2, `expected group commit, got ${stats.commits} fdatasyncs for 20 appends`);
    for (const [i, [loc]] of results.entries()) assert.ok((await store.read(loc!)).shard.equals(recs[i]!.shard));
    await store.close();
  });
});

test("segments roll at the size bound and scan walks all of them in order after reopen", async () => {
  await withPool(async (dir) => {
    const segmentSizeBytes = 3 * 4160; // three records per segment
    let store = await SegmentStore.open(dir, { segmentSizeBytes });
    const recs = Array.from({ length: 7 }, (_, i) => record(i));
    const locations = await store.append(recs.map((r) => r.bytes));
    assert.deepEqual(
      locations.map((l) => `${l.segment}@${l.offsetBytes}`),
      ["1@0", "1@4160", "1@8320", "2@0", "2@4160", "2@8320", "3@0"],
    );
    assert.deepEqual((await readdir(dir)).sort(), ["seg-000000000001.cseg", "seg-000000000002.cseg", "seg-000000000003.cseg"]);
    await store.close();
    store = await SegmentStore.open(dir, { segmentSizeBytes });
    const entries = await collect(store);
    assert.equal(entries.length, 7);
    entries.forEach((e, i) => {
      assert.equal(e.kind, "record");
      if (e.kind === "record") {
        assert.deepEqual(e.location, locations[i]);
        assert.equal(e.header.chunkIndex, i);
      }
    });
    assert.deepEqual(store.segments(), [
      { segment: 1, sizeBytes: 12480, freedBytes: 0, head: false },
      { segment: 2, sizeBytes: 12480, freedBytes: 0, head: false },
      { segment: 3, sizeBytes: 4160, freedBytes: 0, head: true },
    ]);
    await store.close();
  });
});

test("a record torn by a crash (file cut mid-record) ends the scan cleanly and is never appended after", async () => {
  await withPool(async (dir) => {
    let store = await SegmentStore.open(dir);
    const recs = [record(0), record(1), record(2)];
    const locations = await store.append(recs.map((r) => r.bytes));
    await store.close();
    await truncate(join(dir, "seg-000000000001.cseg"), 8320 + 1000); // third record torn

    store = await SegmentStore.open(dir);
    const entries = await collect(store);
    assert.deepEqual(summary(entries), ["record 1@0 chunk 0", "record 1@4160 chunk 1", "torn-tail 1@8320"]);
    const torn = entries[2]!;
    assert.ok(torn.kind === "torn-tail" && torn.lengthBytes === 1000 && /past the end/.test(torn.reason));
    // Durable records stay readable; the torn one reports corruption, not wrong bytes.
    assert.ok((await store.read(locations[1]!)).shard.equals(recs[1]!.shard));
    await assert.rejects(store.read(locations[2]!), CorruptShard);

    // The torn segment is sealed: new records go to a fresh segment, so they stay reachable by scan.
    const [next] = await store.append([record(9).bytes]);
    assert.deepEqual(next, { segment: 2, offsetBytes: 0, lengthBytes: 4160 });
    assert.deepEqual(summary(await collect(store)), [
      "record 1@0 chunk 0",
      "record 1@4160 chunk 1",
      "torn-tail 1@8320",
      "record 2@0 chunk 9",
    ]);
    await store.close();
  });
});

test("a zero-filled tail and a partial header are torn tails too", async () => {
  await withPool(async (dir) => {
    let store = await SegmentStore.open(dir);
    await store.append([record(0).bytes]);
    await store.close();
    await appendFile(join(dir, "seg-000000000001.cseg"), Buffer.alloc(8192));
    store = await SegmentStore.open(dir);
    let entries = await collect(store);
    assert.deepEqual(summary(entries), ["record 1@0 chunk 0", "torn-tail 1@4160"]);
    assert.ok(entries[1]!.kind === "torn-tail" && /bad magic/.test(entries[1]!.reason));
    await store.close();

    await writeFile(join(dir, "seg-000000000002.cseg"), record(1).bytes.subarray(0, SHARD_HEADER_BYTES - 10));
    store = await SegmentStore.open(dir);
    entries = await collect(store);
    assert.deepEqual(summary(entries), ["record 1@0 chunk 0", "torn-tail 1@4160", "torn-tail 2@0"]);
    assert.equal(store.segments().at(-1)!.segment, 3);
    await store.close();
  });
});

test("a corrupted payload byte: read throws CorruptShard, scan reports it and continues", async () => {
  await withPool(async (dir) => {
    let store = await SegmentStore.open(dir);
    const recs = [record(0), record(1), record(2)];
    const locations = await store.append(recs.map((r) => r.bytes));
    await store.close();
    const path = join(dir, "seg-000000000001.cseg");
    const bytes = await readFile(path);
    bytes[4160 + SHARD_HEADER_BYTES + 100]! ^= 0xff;
    await writeFile(path, bytes);

    store = await SegmentStore.open(dir);
    await assert.rejects(
      store.read(locations[1]!),
      (error: unknown) => error instanceof CorruptShard && error instanceof StorageError && /CRC32C mismatch/.test(error.message),
    );
    assert.ok((await store.read(locations[2]!)).shard.equals(recs[2]!.shard));
    assert.deepEqual(summary(await collect(store)), ["record 1@0 chunk 0", "corrupt 1@4160", "record 1@8320 chunk 2"]);
    // The chain of headers is intact, so appends continue in the same segment.
    const [next] = await store.append([record(3).bytes]);
    assert.deepEqual(next, { segment: 1, offsetBytes: 12480, lengthBytes: 4160 });
    await store.close();
  });
});

test("compaction copies live records to the head; the old segment is removed only when asked", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir, { segmentSizeBytes: 4 * 4160 });
    const recs = Array.from({ length: 5 }, (_, i) => record(i));
    const locations = await store.append(recs.map((r) => r.bytes)); // 4 in segment 1, 1 in segment 2
    const live: SegmentLocation[] = [locations[1]!, locations[3]!];
    store.markFree(locations[0]!);
    store.markFree(locations[2]!);
    assert.deepEqual(store.segments(), [
      { segment: 1, sizeBytes: 4 * 4160, freedBytes: 2 * 4160, head: false },
      { segment: 2, sizeBytes: 4160, freedBytes: 0, head: true },
    ]);
    await assert.rejects(store.compactSegment(2, []), SegmentStoreMisuse); // the head
    const { relocations, corrupt } = await store.compactSegment(1, live);
    assert.deepEqual(corrupt, []);
    assert.deepEqual(relocations.map((r) => r.from), live);
    assert.deepEqual(relocations.map((r) => `${r.to.segment}@${r.to.offsetBytes}`), ["2@4160", "2@8320"]);
    // Until removeSegment, both copies are readable (the index flips in between).
    assert.ok((await store.read(locations[1]!)).shard.equals(recs[1]!.shard));
    assert.ok((await store.read(relocations[0]!.to)).shard.equals(recs[1]!.shard));
    assert.ok((await store.read(relocations[1]!.to)).shard.equals(recs[3]!.shard));
    await store.removeSegment(1);
    await assert.rejects(store.read(locations[1]!), ShardNotFound);
    assert.deepEqual(summary(await collect(store)), ["record 2@0 chunk 4", "record 2@4160 chunk 1", "record 2@8320 chunk 3"]);
    await assert.rejects(store.removeSegment(2), SegmentStoreMisuse);
    await store.close();
  });
});

test("compaction by predicate asks about every valid record and copies only the live ones", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir, { segmentSizeBytes: 4 * 4160 });
    const recs = Array.from({ length: 5 }, (_, i) => record(i));
    const locations = await store.append(recs.map((r) => r.bytes));
    const asked: number[] = [];
    const { relocations, corrupt } = await store.compactSegment(1, async (location, header) => {
      asked.push(header.chunkIndex);
      assert.equal(location.segment, 1);
      return header.chunkIndex % 2 === 0; // the index still references even chunks
    });
    assert.deepEqual(asked, [0, 1, 2, 3]);
    assert.deepEqual(corrupt, []);
    assert.deepEqual(relocations.map((r) => r.from), [locations[0], locations[2]]);
    assert.ok((await store.read(relocations[1]!.to)).shard.equals(recs[2]!.shard));
    await store.close();
  });
});

test("compaction never copies a record that fails its CRC; it reports it for rebuilding", async () => {
  await withPool(async (dir) => {
    let store = await SegmentStore.open(dir, { segmentSizeBytes: 2 * 4160 });
    const locations = await store.append([record(0).bytes, record(1).bytes, record(2).bytes]);
    await store.close();
    const path = join(dir, "seg-000000000001.cseg");
    const bytes = await readFile(path);
    bytes[SHARD_HEADER_BYTES + 5]! ^= 0x10;
    await writeFile(path, bytes);
    store = await SegmentStore.open(dir, { segmentSizeBytes: 2 * 4160 });
    const byList = await store.compactSegment(1, [locations[0]!, locations[1]!]);
    assert.deepEqual(byList.corrupt, [locations[0]]);
    assert.deepEqual(byList.relocations.map((r) => r.from), [locations[1]]);
    const byPredicate = await store.compactSegment(1, () => true);
    assert.deepEqual(byPredicate.corrupt, [locations[0]]);
    assert.deepEqual(byPredicate.relocations.map((r) => r.from), [locations[1]]);
    await store.close();
  });
});

test("a read-only store scans and reads without creating, writing or sealing anything", async () => {
  await withPool(async (dir) => {
    const writer = await SegmentStore.open(dir, { segmentSizeBytes: 2 * 4160 });
    const recs = [record(0), record(1), record(2)];
    const locations = await writer.append(recs.map((r) => r.bytes));
    // A torn tail on the head would make a writable open start a new segment.
    await appendFile(join(dir, "seg-000000000002.cseg"), Buffer.alloc(100));
    const before = (await readdir(dir)).sort();

    const reader = await SegmentStore.open(dir, { readOnly: true, segmentSizeBytes: 2 * 4160 });
    assert.deepEqual(summary(await collect(reader)), ["record 1@0 chunk 0", "record 1@4160 chunk 1", "record 2@0 chunk 2", "torn-tail 2@4160"]);
    assert.ok((await reader.read(locations[2]!)).shard.equals(recs[2]!.shard));
    assert.ok(reader.segments().every((s) => !s.head));
    await assert.rejects(reader.append([record(3).bytes]), /read-only/);
    await assert.rejects(reader.compactSegment(1, () => true), /read-only/);
    await assert.rejects(reader.removeSegment(1), /read-only/);
    await reader.close();
    assert.deepEqual((await readdir(dir)).sort(), before);
    assert.equal((await readFile(join(dir, "seg-000000000002.cseg"))).length, 4160 + 100);
    await writer.close();
  });
});

test("appending bytes that are not a whole shard record is refused", async () => {
  await withPool(async (dir) => {
    const store = await SegmentStore.open(dir);
    await assert.rejects(store.append([Buffer.alloc(100)]), SegmentStoreMisuse);
    await assert.rejects(store.append([record(0).bytes.subarray(0, 200)]), /its header says 4160/);
    assert.deepEqual(await store.append([]), []);
    assert.equal(store.stats().commits, 0);
    await store.close();
  });
});

test("a missing pool directory is PoolOffline on open and on read", async () => {
  await withPool(async (dir) => {
    await assert.rejects(SegmentStore.open(join(dir, "absent")), (error: unknown) => {
      assert.ok(error instanceof PoolOffline);
      assert.ok(error instanceof StoragePoolOffline, "front ends map the shared errors.ts class");
      assert.equal(error.poolDir, join(dir, "absent"));
      return true;
    });
    await writeFile(join(dir, "file"), "x");
    await assert.rejects(SegmentStore.open(join(dir, "file")), PoolOffline);

    const pool = join(dir, "pool");
    await mkdir(pool);
    const store = await SegmentStore.open(pool);
    const [loc] = await store.append([record(0).bytes]);
    await rm(pool, { recursive: true });
    await assert.rejects(store.read(loc!), PoolOffline);
    await store.close();
  });
});
