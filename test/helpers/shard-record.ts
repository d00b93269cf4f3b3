// A random shard wrapped in its self-describing record (shard-record.ts), as the segment
// store tests append them: one owner, stripe generation 1, a 4+2 stripe.
import { randomBytes } from 'node:crypto';
import { encodeShardRecord } from '../../src/dataplane/ec/shard-record.js';

const OWNER = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

/** The record of `shardBytes` random bytes for chunk `chunkIndex`, shard `shardIndex`; its bytes and the shard. */
export function shardRecord(chunkIndex: number, shardBytes: number, shardIndex = 0): { bytes: Buffer; shard: Buffer } {
  const shard = randomBytes(shardBytes);
  const bytes = encodeShardRecord({ ownerId: OWNER, chunkIndex, stripeGeneration: 1, shardIndex, dataShards: 4, parityShards: 2 }, shard);
  return { bytes, shard };
}
