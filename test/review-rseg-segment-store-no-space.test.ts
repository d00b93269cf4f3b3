// Review of 6e1e2f7 (a segment store failed by a full disk starts a new head
// once there is room): what the in-place reopen owes to records appended
// before the failure. A 4 MiB tmpfs (helpers/small-pool; root), unmounted
// after the test in every outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PoolOffline, SegmentStore } from '../src/dataplane/ec/segment-store.js';
import { shardRecord } from './helpers/shard-record.js';
import { smallDisk } from './helpers/small-pool.js';

const KiB = 1024;
const record = (chunkIndex: number) => shardRecord(chunkIndex, 64 * KiB);

// A pool rebuild appends unsynced (durable: false) and references the records
// only after a later sync() resolves. Here its unsynced append rolled to a new
// segment (whose name only the next commit makes durable), then a destage's
// write found the disk full in that segment. The rebuild's sync() once there is
// room reopens in place: it must make the sealed segment's NAME durable too, not
// only its data, or a crash after the rebuild flipped its index loses the file
// its records are in. Before, the reopen fdatasynced the old head only and the
// sync() on the empty new head returned without any directory sync.
test('a sync() that reopens after ENOSPC makes the unsynced records durable, the sealed segment name included', async (t) => {
  const disk = await smallDisk(t, 'rseg-nospace-', 4 * 1024 * KiB);
  const dir = path.join(disk.poolDir, 'segments');
  fs.mkdirSync(dir);
  const r0 = record(0);
  const store = await SegmentStore.open(dir, { segmentSizeBytes: 2 * r0.bytes.length });
  t.after(() => store.close());
  const [at0] = await store.append([r0.bytes]); // durable: the fresh store's names are synced here
  const r1 = record(1);
  const r2 = record(2);
  await store.append([r1.bytes], { durable: false });
  const [at2] = await store.append([r2.bytes], { durable: false }); // rolls: a new segment, its name not yet durable
  assert.equal(at2!.segment, at0!.segment + 1);

  disk.leaveFree(32 * KiB);
  await assert.rejects(store.append([record(3).bytes]), (err: Error) => err instanceof PoolOffline && /ENOSPC/.test(err.message));
  disk.freeFiller();

  const synced: string[] = [];
  const statics = SegmentStore as unknown as { syncDir(dir: string): Promise<void> };
  const syncDir = statics.syncDir;
  statics.syncDir = async (d: string) => {
    await syncDir.call(SegmentStore, d);
    synced.push(d);
  };
  t.after(() => {
    statics.syncDir = syncDir;
  });
  await store.sync(); // the rebuild's: after it, r1 and r2 may be referenced
  assert.equal(store.stats().reopensAfterNoSpace, 1);
  assert.ok(synced.includes(dir), `the directory holding segment ${at2!.segment}'s new name is synced before sync() resolves (synced: ${JSON.stringify(synced)})`);
  assert.ok((await store.read(at2!)).shard.equals(r2.shard));
});

// A full cold pool gets room back by compaction: it copies out a sealed
// segment's live records (none, when the volumes were deleted to make room)
// and removes the segment. Before, removeSegment refused while the store was
// failed by the full disk ("an earlier write failed (ENOSPC...)"), so the
// space never came back and the store, waiting for room, stayed failed until
// a restart: the operator's deletes freed nothing. Removing a sealed segment
// the index no longer names writes nothing to the failed head.
test('after ENOSPC, compaction can still remove a dead sealed segment, and that room lets the store recover', async (t) => {
  const disk = await smallDisk(t, 'rseg-nospace-rm-', 4 * 1024 * KiB);
  const dir = path.join(disk.poolDir, 'segments');
  fs.mkdirSync(dir);
  const r0 = record(0);
  const store = await SegmentStore.open(dir, { segmentSizeBytes: 2 * r0.bytes.length });
  t.after(() => store.close());
  const [at0] = await store.append([r0.bytes, record(1).bytes]); // segment S, sealed by the next append's roll
  const r2 = record(2);
  const [at2] = await store.append([r2.bytes]);
  assert.equal(at2!.segment, at0!.segment + 1);

  disk.leaveFree(32 * KiB); // the filler stays: only the dead segment's removal makes room
  await assert.rejects(store.append([record(3).bytes]), (err: Error) => err instanceof PoolOffline && /ENOSPC/.test(err.message));
  assert.equal(store.writeFailure?.clearsWithRoom, true);

  await store.removeSegment(at0!.segment); // compaction: S's records are all dead
  assert.ok(!fs.existsSync(path.join(dir, `seg-${String(at0!.segment).padStart(12, '0')}.cseg`)));
  const r4 = record(4);
  const [at4] = await store.append([r4.bytes]);
  assert.equal(store.writeFailure, undefined);
  assert.equal(store.stats().reopensAfterNoSpace, 1);
  assert.ok((await store.read(at2!)).shard.equals(r2.shard), 'the acknowledged record before the failure');
  assert.ok((await store.read(at4!)).shard.equals(r4.shard));
});

// Compaction copying a segment's live records out is a write like any other:
// once there is room it reopens the store as an append does. Before, its first
// check refused ("an earlier write failed (ENOSPC...)") even with the disk
// freed, so a pool whose only writer was compaction (nothing left to destage)
// stayed failed, and /readyz 503, until a restart.
test('after ENOSPC and room again, compactSegment reopens the store and copies out', async (t) => {
  const disk = await smallDisk(t, 'rseg-nospace-compact-', 4 * 1024 * KiB);
  const dir = path.join(disk.poolDir, 'segments');
  fs.mkdirSync(dir);
  const r0 = record(0);
  const store = await SegmentStore.open(dir, { segmentSizeBytes: 2 * r0.bytes.length });
  t.after(() => store.close());
  const [at0] = await store.append([r0.bytes, record(1).bytes]);
  await store.append([record(2).bytes]); // rolls: segment at0 is sealed

  disk.leaveFree(32 * KiB);
  await assert.rejects(store.append([record(3).bytes]), (err: Error) => err instanceof PoolOffline && /ENOSPC/.test(err.message));
  disk.freeFiller();

  const result = await store.compactSegment(at0!.segment, [at0!]);
  assert.equal(store.writeFailure, undefined);
  assert.equal(store.stats().reopensAfterNoSpace, 1);
  assert.equal(result.relocations.length, 1);
  assert.ok((await store.read(result.relocations[0]!.to)).shard.equals(r0.shard));
});
