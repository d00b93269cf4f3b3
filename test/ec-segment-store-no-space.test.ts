// A segment store whose write found the disk full (ENOSPC): it refuses
// writes while there is no room (PoolOffline naming the ENOSPC, no new
// segment file per attempt), and the first append once there is room seals
// the partial head and starts a new one in place, as open() after a restart
// does: acknowledged records read back, a later open scans them all and the
// failed write's part only as a torn tail. Before, the store stayed failed
// until reopened (the daemon restarted). A 4 MiB tmpfs (helpers/small-pool;
// root), unmounted after the test in every outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PoolOffline, SegmentStore } from '../src/dataplane/ec/segment-store.js';
import { shardRecord } from './helpers/shard-record.js';
import { smallDisk } from './helpers/small-pool.js';

const KiB = 1024;
const record = (chunkIndex: number) => shardRecord(chunkIndex, 64 * KiB);

test('ENOSPC on an append: refused while the disk is full, a new head at the first append once there is room, no reopen', async (t) => {
  const disk = await smallDisk(t, 'segstore-nospace-', 4 * 1024 * KiB);
  const dir = path.join(disk.poolDir, 'segments');
  fs.mkdirSync(dir);
  const store = await SegmentStore.open(dir);
  t.after(() => store.close());
  const first = record(0);
  const [at0] = await store.append([first.bytes]);

  disk.leaveFree(32 * KiB); // half a record: the writev lands in part
  await assert.rejects(store.append([record(1).bytes]), (err: Error) => err instanceof PoolOffline && /ENOSPC.*retried on the next write once the disk has room/.test(err.message));
  assert.equal(store.writeFailure?.clearsWithRoom, true);
  assert.match(store.writeFailure.error.message, /ENOSPC/);
  const files = fs.readdirSync(dir).sort();
  // Still no room: refused again, and no segment made for it.
  await assert.rejects(store.append([record(2).bytes]), (err: Error) => err instanceof PoolOffline && /an earlier write failed \(ENOSPC/.test(err.message));
  await assert.rejects(store.sync(), PoolOffline);
  assert.deepEqual(fs.readdirSync(dir).sort(), files);
  assert.equal(store.stats().reopensAfterNoSpace, 0);

  disk.freeFiller();
  const third = record(3);
  const [at3] = await store.append([third.bytes]);
  assert.equal(store.writeFailure, undefined);
  assert.equal(store.stats().reopensAfterNoSpace, 1);
  assert.equal(at3!.segment, at0!.segment + 1, 'a new head');
  assert.equal(at3!.offsetBytes, 0);
  assert.ok((await store.read(at0!)).shard.equals(first.shard), 'the acknowledged record before the failure');
  assert.ok((await store.read(at3!)).shard.equals(third.shard));
  await store.close();

  // What a restart sees: both records, the failed write's part a torn tail of the sealed segment.
  const again = await SegmentStore.open(dir, { readOnly: true });
  const kinds: string[] = [];
  for await (const e of again.scan()) kinds.push(e.kind === 'record' ? `record ${e.location.segment}:${e.location.offsetBytes} chunk ${e.header.chunkIndex}` : e.kind === 'torn-tail' ? `torn-tail ${e.segment}` : `corrupt ${e.location.segment}`);
  assert.deepEqual(kinds, [`record ${at0!.segment}:0 chunk 0`, `torn-tail ${at0!.segment}`, `record ${at3!.segment}:0 chunk 3`]);
  await again.close();
});
