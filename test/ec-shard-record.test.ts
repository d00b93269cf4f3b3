// Shard record format: round trip of every header field, LZ4 on and off, and
// CorruptShard for any flipped byte, truncation or bad magic.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import {
  CorruptShard,
  decodeShardHeader,
  decodeShardRecord,
  encodeShardRecord,
  ownerIdFromUuid,
  ownerIdToUuid,
  SHARD_HEADER_BYTES,
  ShardRecordInvalid,
  type ShardRecordFields,
} from "../src/dataplane/ec/shard-record.js";

const uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const fields: ShardRecordFields = {
  ownerId: ownerIdFromUuid(uuid),
  chunkIndex: 2 ** 40 + 3, // above 32 bits: the u64 fields really are 64-bit
  stripeGeneration: 2 ** 33 + 7,
  shardIndex: 5,
  dataShards: 4,
  parityShards: 2,
};

test("every header field and the shard bytes survive encode/decode", () => {
  const shard = randomBytes(16384);
  const record = encodeShardRecord(fields, shard);
  assert.equal(record.length, SHARD_HEADER_BYTES + 16384);
  assert.equal(record.subarray(0, 4).toString("latin1"), "CSHD");
  const { header, shard: decoded } = decodeShardRecord(record);
  assert.ok(decoded.equals(shard));
  assert.equal(ownerIdToUuid(header.ownerId), uuid);
  assert.equal(header.chunkIndex, fields.chunkIndex);
  assert.equal(header.stripeGeneration, fields.stripeGeneration);
  assert.equal(header.shardIndex, 5);
  assert.equal(header.dataShards, 4);
  assert.equal(header.parityShards, 2);
  assert.equal(header.compression, "none");
  assert.equal(header.payloadLengthBytes, 16384);
  assert.equal(header.uncompressedLengthBytes, 16384);
  assert.deepEqual(decodeShardHeader(record), header);
});

test("lz4: compressible shards are stored compressed, incompressible ones raw", () => {
  const compressible = Buffer.alloc(65536, "couchestor ");
  const small = encodeShardRecord(fields, compressible, "lz4");
  assert.ok(small.length < 8192, `compressed record is ${small.length} bytes`);
  const a = decodeShardRecord(small);
  assert.equal(a.header.compression, "lz4");
  assert.equal(a.header.uncompressedLengthBytes, 65536);
  assert.ok(a.shard.equals(compressible));

  const random = randomBytes(65536);
  const raw = encodeShardRecord(fields, random, "lz4");
  assert.equal(raw.length, SHARD_HEADER_BYTES + 65536);
  const b = decodeShardRecord(raw);
  assert.equal(b.header.compression, "none");
  assert.ok(b.shard.equals(random));
});

test("flipping any single header byte or payload byte is detected as CorruptShard", () => {
  for (const compression of ["none", "lz4"] as const) {
    const record = encodeShardRecord(fields, Buffer.alloc(4096, "abcd"), compression);
    const positions = [...Array(SHARD_HEADER_BYTES).keys(), SHARD_HEADER_BYTES, record.length >> 1, record.length - 1];
    for (const pos of positions) {
      const bad = Buffer.from(record);
      bad[pos]! ^= 0x01;
      assert.throws(() => decodeShardRecord(bad), CorruptShard, `${compression}: flip at byte ${pos} not detected`);
    }
  }
});

test("truncated, extended, zeroed and foreign bytes are CorruptShard", () => {
  const record = encodeShardRecord(fields, randomBytes(4096));
  assert.throws(() => decodeShardRecord(record.subarray(0, 30)), /shorter than the 64-byte header/);
  assert.throws(() => decodeShardRecord(record.subarray(0, record.length - 1)), /header says 4160/);
  assert.throws(() => decodeShardRecord(Buffer.concat([record, Buffer.alloc(1)])), CorruptShard);
  assert.throws(() => decodeShardRecord(Buffer.alloc(4160)), /bad magic/);
  assert.throws(() => decodeShardRecord(Buffer.from("PK\x03\x04" + "x".repeat(100))), /bad magic/);
});

test("random UUIDs round trip through the 16-byte owner id", () => {
  for (let i = 0; i < 20; i++) {
    const id = randomUUID();
    assert.equal(ownerIdToUuid(ownerIdFromUuid(id)), id);
  }
  assert.throws(() => ownerIdFromUuid("vol-1"), ShardRecordInvalid);
});

test("invalid fields are refused at encode time", () => {
  const shard = Buffer.alloc(8);
  assert.throws(() => encodeShardRecord({ ...fields, ownerId: Buffer.alloc(15) }, shard), /ownerId must be 16 bytes/);
  assert.throws(() => encodeShardRecord({ ...fields, shardIndex: 6 }, shard), /shardIndex must be an integer in 0..5/);
  assert.throws(() => encodeShardRecord({ ...fields, chunkIndex: -1 }, shard), ShardRecordInvalid);
  assert.throws(() => encodeShardRecord({ ...fields, stripeGeneration: 2 ** 53 }, shard), ShardRecordInvalid);
});
