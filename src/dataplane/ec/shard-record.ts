// The self-describing on-disk shard record: a fixed 64-byte header plus the
// (optionally LZ4-compressed) shard payload, CRC32C over both. Pools can be
// scanned to rebuild the index, and every read detects corruption.
//
// Header layout (little-endian, 64 bytes):
//   0  u32  magic "CSHD" (0x44485343)
//   4  u16  format version (1)
//   6  u16  flags: bit 0 = payload is LZ4 block-compressed (lz4-napi compressSync framing)
//   8  16B  owner id: the volume or object id as 128 bits (a UUID's 16 bytes).
//           Fixed width so the header has no variable part; the index keys
//           volumes and objects by UUID, see ownerIdFromUuid / ownerIdToUuid.
//  24  u64  chunk index within the owner
//  32  u64  stripe generation (bumped by every rewrite of the chunk; newest wins on fsck)
//  40  u8   shard index (0..k-1 data, k..k+m-1 parity)
//  41  u8   k (data shards)
//  42  u8   m (parity shards)
//  43  u8   reserved, 0
//  44  u32  payload length in bytes (as stored)
//  48  u32  uncompressed length in bytes (the shard size)
//  52  u32  CRC32C over header bytes 0..51, then bytes 56..63, then the payload
//  56  8B   reserved, 0
import { crc32c } from "./codec.js";
import { compressSync, uncompressSync } from "lz4-napi";
import { StorageError } from "../errors.js";

export const SHARD_MAGIC = 0x44485343; // "CSHD" read as u32 LE
// 2: parity is ISA-L's Cauchy code (version 1 records carried @ronomon parity and must
// not be decoded with the new matrix).
export const SHARD_FORMAT_VERSION = 2;
export const SHARD_HEADER_BYTES = 64;
/** Bound on one payload: the largest shard a valid policy can produce (64 MiB stripe / 2). */
export const MAX_SHARD_PAYLOAD_BYTES = 32 * 1024 * 1024;
const FLAG_LZ4 = 1;
const CRC_OFFSET = 52;

export type ShardCompression = "none" | "lz4";

export interface ShardHeader {
  /** 16 bytes: the owning volume's or object's id. */
  readonly ownerId: Buffer;
  readonly chunkIndex: number;
  readonly stripeGeneration: number;
  readonly shardIndex: number;
  readonly dataShards: number;
  readonly parityShards: number;
  /** How the payload is stored on disk. */
  readonly compression: ShardCompression;
  readonly payloadLengthBytes: number;
  readonly uncompressedLengthBytes: number;
  readonly crc32c: number;
}

export interface ShardRecordFields {
  readonly ownerId: Buffer;
  readonly chunkIndex: number;
  readonly stripeGeneration: number;
  readonly shardIndex: number;
  readonly dataShards: number;
  readonly parityShards: number;
}

export interface DecodedShardRecord {
  readonly header: ShardHeader;
  /** The shard bytes, decompressed. */
  readonly shard: Buffer;
}

/** Record bytes that fail magic, version, length or CRC checks. Never returned as data. */
export class CorruptShard extends StorageError {
  override name = "CorruptShard";
  constructor(readonly reason: string) {
    super(`corrupt shard record: ${reason}`);
  }
}

/** Invalid fields handed to encodeShardRecord (a caller bug). */
export class ShardRecordInvalid extends Error {
  override name = "ShardRecordInvalid";
}

export function ownerIdFromUuid(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new ShardRecordInvalid(`not a UUID: ${JSON.stringify(uuid)}`);
  return Buffer.from(hex, "hex");
}

export function ownerIdToUuid(ownerId: Buffer): string {
  const hex = ownerId.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function checkU8(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new ShardRecordInvalid(`${name} must be an integer in 0..${max}, got ${value}`);
  }
}

function checkSafe(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ShardRecordInvalid(`${name} must be a non-negative safe integer, got ${value}`);
  }
}

function recordCrc(header: Buffer, payload: Buffer): number {
  let crc = crc32c(header.subarray(0, CRC_OFFSET));
  crc = crc32c(header.subarray(CRC_OFFSET + 4, SHARD_HEADER_BYTES), crc);
  return crc32c(payload, crc);
}

/**
 * Build one record. With compression "lz4" the payload is compressed, but
 * stored raw (flag clear) when LZ4 does not make it smaller: parity and
 * already-compressed data would only grow. With `into` (at least the
 * record's length) the record is built there and returned as a view of it;
 * `shard` must then either not overlap `into` or sit exactly at its payload
 * offset (SHARD_HEADER_BYTES), where it is left in place.
 */
export function encodeShardRecord(
  fields: ShardRecordFields,
  shard: Buffer,
  compression: ShardCompression = "none",
  into?: Buffer,
): Buffer {
  checkFields(fields);
  if (shard.length > MAX_SHARD_PAYLOAD_BYTES) {
    throw new ShardRecordInvalid(`shard is ${shard.length} bytes, max ${MAX_SHARD_PAYLOAD_BYTES}`);
  }
  let payload = shard;
  let flags = 0;
  if (compression === "lz4" && shard.length > 0) {
    const compressed = compressSync(shard);
    if (compressed.length < shard.length) {
      payload = compressed;
      flags |= FLAG_LZ4;
    }
  }
  // `into` (a caller's recycled buffer, e.g. the rebuild's) saves an allocation;
  // a shard already sitting at into[SHARD_HEADER_BYTES..] is not copied.
  const record =
    into !== undefined && into.length >= SHARD_HEADER_BYTES + payload.length
      ? into.subarray(0, SHARD_HEADER_BYTES + payload.length)
      : Buffer.allocUnsafe(SHARD_HEADER_BYTES + payload.length);
  const header = writeHeader(record, fields, flags, payload.length, shard.length);
  const inPlace = payload.buffer === record.buffer && payload.byteOffset === record.byteOffset + SHARD_HEADER_BYTES;
  if (!inPlace) payload.copy(record, SHARD_HEADER_BYTES);
  header.writeUInt32LE(recordCrc(header, record.subarray(SHARD_HEADER_BYTES)), CRC_OFFSET);
  return record;
}

/**
 * Writes the 64-byte header of an uncompressed record of `shardBytes` into
 * `into` (a whole record buffer) with the CRC field zero: for a caller that
 * fills the payload and CRC itself (the native pool-rebuild kernel). Same
 * field checks as encodeShardRecord.
 */
export function encodeShardHeader(fields: ShardRecordFields, shardBytes: number, into: Buffer): void {
  checkFields(fields);
  if (!Number.isSafeInteger(shardBytes) || shardBytes < 0 || shardBytes > MAX_SHARD_PAYLOAD_BYTES) throw new ShardRecordInvalid(`shard is ${shardBytes} bytes, max ${MAX_SHARD_PAYLOAD_BYTES}`);
  if (into.length < SHARD_HEADER_BYTES + shardBytes) throw new ShardRecordInvalid(`record buffer of ${into.length} bytes, need ${SHARD_HEADER_BYTES + shardBytes}`);
  writeHeader(into, fields, 0, shardBytes, shardBytes);
}

function checkFields(fields: ShardRecordFields): void {
  if (fields.ownerId.length !== 16) throw new ShardRecordInvalid(`ownerId must be 16 bytes, got ${fields.ownerId.length}`);
  checkSafe("chunkIndex", fields.chunkIndex);
  checkSafe("stripeGeneration", fields.stripeGeneration);
  checkU8("dataShards", fields.dataShards, 255);
  checkU8("parityShards", fields.parityShards, 255);
  checkU8("shardIndex", fields.shardIndex, fields.dataShards + fields.parityShards - 1);
}

/** The 64-byte header at the start of `record`, CRC field zero; returns it. */
function writeHeader(record: Buffer, fields: ShardRecordFields, flags: number, storedBytes: number, rawBytes: number): Buffer {
  const header = record.subarray(0, SHARD_HEADER_BYTES);
  header.fill(0);
  header.writeUInt32LE(SHARD_MAGIC, 0);
  header.writeUInt16LE(SHARD_FORMAT_VERSION, 4);
  header.writeUInt16LE(flags, 6);
  fields.ownerId.copy(header, 8);
  header.writeBigUInt64LE(BigInt(fields.chunkIndex), 24);
  header.writeBigUInt64LE(BigInt(fields.stripeGeneration), 32);
  header.writeUInt8(fields.shardIndex, 40);
  header.writeUInt8(fields.dataShards, 41);
  header.writeUInt8(fields.parityShards, 42);
  header.writeUInt32LE(storedBytes, 44);
  header.writeUInt32LE(rawBytes, 48);
  return header;
}

/**
 * Parse and sanity-check a header without the payload (the CRC is not
 * verified here). Used by the segment scanner to learn a record's length.
 */
export function decodeShardHeader(bytes: Buffer): ShardHeader {
  if (bytes.length < SHARD_HEADER_BYTES) {
    throw new CorruptShard(`record is ${bytes.length} bytes, shorter than the ${SHARD_HEADER_BYTES}-byte header`);
  }
  const magic = bytes.readUInt32LE(0);
  if (magic !== SHARD_MAGIC) throw new CorruptShard(`bad magic 0x${magic.toString(16)}`);
  const version = bytes.readUInt16LE(4);
  if (version !== SHARD_FORMAT_VERSION) throw new CorruptShard(`unsupported format version ${version}`);
  const flags = bytes.readUInt16LE(6);
  if ((flags & ~FLAG_LZ4) !== 0) throw new CorruptShard(`unknown flags 0x${flags.toString(16)}`);
  const payloadLengthBytes = bytes.readUInt32LE(44);
  const uncompressedLengthBytes = bytes.readUInt32LE(48);
  if (payloadLengthBytes > MAX_SHARD_PAYLOAD_BYTES || uncompressedLengthBytes > MAX_SHARD_PAYLOAD_BYTES) {
    throw new CorruptShard(`implausible length ${payloadLengthBytes}/${uncompressedLengthBytes}`);
  }
  const dataShards = bytes.readUInt8(41);
  const parityShards = bytes.readUInt8(42);
  const shardIndex = bytes.readUInt8(40);
  if (shardIndex >= dataShards + parityShards) {
    throw new CorruptShard(`shard index ${shardIndex} out of range for ${dataShards}+${parityShards}`);
  }
  return {
    ownerId: Buffer.from(bytes.subarray(8, 24)),
    chunkIndex: Number(bytes.readBigUInt64LE(24)),
    stripeGeneration: Number(bytes.readBigUInt64LE(32)),
    shardIndex,
    dataShards,
    parityShards,
    compression: (flags & FLAG_LZ4) !== 0 ? "lz4" : "none",
    payloadLengthBytes,
    uncompressedLengthBytes,
    crc32c: bytes.readUInt32LE(CRC_OFFSET),
  };
}

/** Bytes a record with this header occupies on disk. */
export function recordLengthBytes(header: ShardHeader): number {
  return SHARD_HEADER_BYTES + header.payloadLengthBytes;
}

/**
 * Verify and decode one whole record (exactly its bytes). Throws CorruptShard
 * on bad magic, version, length, CRC or an undecompressable payload.
 */
export function decodeShardRecord(record: Buffer): DecodedShardRecord {
  const header = decodeShardHeader(record);
  const expectedBytes = recordLengthBytes(header);
  if (record.length !== expectedBytes) {
    throw new CorruptShard(`record is ${record.length} bytes, header says ${expectedBytes}`);
  }
  const payload = record.subarray(SHARD_HEADER_BYTES);
  const crc = recordCrc(record, payload);
  if (crc !== header.crc32c) {
    throw new CorruptShard(`CRC32C mismatch: stored 0x${header.crc32c.toString(16)}, computed 0x${crc.toString(16)}`);
  }
  if (header.compression === "none") {
    if (header.payloadLengthBytes !== header.uncompressedLengthBytes) {
      throw new CorruptShard(`uncompressed payload ${header.payloadLengthBytes} bytes, header says ${header.uncompressedLengthBytes}`);
    }
    return { header, shard: payload };
  }
  let shard: Buffer;
  try {
    shard = uncompressSync(payload);
  } catch (error) {
    throw new CorruptShard(`LZ4 payload does not decompress: ${(error as Error).message}`);
  }
  if (shard.length !== header.uncompressedLengthBytes) {
    throw new CorruptShard(`decompressed to ${shard.length} bytes, header says ${header.uncompressedLengthBytes}`);
  }
  return { header, shard };
}
