// The destager and the rebuild queue take a volume by id
// (VolumeManager.borrowById). A closed one was opened with its whole chunk
// map read in one go: the destage of a 1M-entry cold volume after a restart
// (every volume with journal records is closed then), or a queued stripe of
// a big closed volume, held the event loop ~0.9 s, every NBD and S3 client
// of the node waiting. Now it is opened a slice at a time (borrowVolumeAsync,
// as NBD's open): the event loop turns while the map is read, an NBD open of
// the same volume meanwhile shares that open, and a delete meanwhile is a
// deleted volume to the destager, not one that "cannot be opened".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { readVolume } from './helpers/volume.js';
import { closedBigColdVolume } from './helpers/big-chunk-map.js';
import { damageShardInPlace } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
/** Chunk entries of the cold volume: ~100 slices of 1,024; one go ~0.1 s. */
const CHUNKS = 100_000;

/** Counts the chunk-map reads of `m`'s index (first: those from chunk 0, one per open) and the event-loop turns until stop(). */
function watchOpen(m: VolumeManager): { reads: () => number; firstReads: () => number; turns: () => number; stop: () => void } {
  const volumeChunks = m.meta.volumeChunks.bind(m.meta);
  let reads = 0;
  let firstReads = 0;
  m.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    reads++;
    if (fromChunk === 0) firstReads++;
    return volumeChunks(volumeId, fromChunk, limit);
  };
  let turns = 0;
  let ticking = true;
  const tick = () => {
    if (!ticking) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    reads: () => reads,
    firstReads: () => firstReads,
    turns: () => turns,
    stop: () => {
      ticking = false;
      m.meta.volumeChunks = volumeChunks;
    },
  };
}

test(`the destager opens a closed volume of ${CHUNKS} chunk entries a slice at a time, sharing the open with an NBD client's`, async (t) => {
  const { m, id, chunk0, chunk1 } = await closedBigColdVolume(t, true, CHUNKS);
  const w = watchOpen(m);
  const drained = m.cold!.destager.drain();
  // What an NBD client's option does for the same volume (NbdServer.prepare): the open in progress, shared.
  const client = m.prepareOpen('big');
  assert.ok(client !== null, 'the volume is not open yet when the destage has started: the open yields');
  await drained;
  const vol = await client;
  w.stop();
  assert.ok(vol !== null);
  assert.ok(w.reads() > 2, `the map was read in slices (${w.reads()} reads)`);
  assert.ok(w.turns() > 2, `the event loop turned while the map was read (${w.turns()} turns)`);
  assert.equal(w.firstReads(), 1, 'one open, shared by the destager and the client');
  assert.equal(m.cold!.destager.stripesDestaged, 1);
  assert.equal(m.cold!.destager.volumesSkipped, 0);
  assert.ok(!m.cold!.journal.hasVolume(id), 'chunk 1 destaged');
  assert.equal(vol.chunkState[1], ChunkState.Cold);
  assert.equal(vol.chunkState[CHUNKS - 1], ChunkState.Discarded, 'the whole map read');
  assert.ok((await readVolume(vol, 0, MiB)).equals(chunk0));
  assert.ok((await readVolume(vol, MiB, MiB)).equals(chunk1));
  m.giveBack(vol);
  assert.ok(!m.isOpen('big'), 'closed once the client gave it back');
});

test('a volume deleted while the destager opens it a slice at a time is a deleted volume, not one that cannot be opened', async (t) => {
  const { m, id } = await closedBigColdVolume(t, true, CHUNKS);
  const w = watchOpen(m);
  // The delete starts at the open's second slice (its first read already).
  const volumeChunks = m.meta.volumeChunks;
  let deleting: Promise<void> | null = null;
  m.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    if (fromChunk > 0 && deleting === null) deleting = m.deleteVolume('big');
    return volumeChunks(volumeId, fromChunk, limit);
  };
  // One pass (drain() would call the pass that found the volume gone while its delete commits "no progress").
  await m.cold!.destager.kick();
  assert.ok(deleting !== null, 'the delete ran while the map was read');
  await deleting;
  w.stop();
  assert.ok(w.turns() > 2, `the event loop turned while the map was read (${w.turns()} turns)`);
  assert.equal(m.cold!.destager.volumesSkipped, 0, 'not counted as a volume that cannot be opened');
  assert.equal(m.cold!.destager.errors, 0);
  assert.equal(m.cold!.journal.stalledReason, null);
  assert.ok(!m.cold!.journal.hasVolume(id), 'its records dropped with it');
  assert.ok(!m.isOpen('big'));
  assert.equal(m.getVolumeRecord('big'), undefined);
});

test(`the rebuild queue opens a closed volume of ${CHUNKS} chunk entries a slice at a time to rebuild its stripe, and closes it after`, async (t) => {
  const { m, id, chunk0 } = await closedBigColdVolume(t, false, CHUNKS);
  const before = m.meta.chunks.get([id, 0])!.stripe!;
  // Chunk 0's shard on cold-2 damaged in place: the rebuild writes it again elsewhere.
  const bad = before.shards.find((s) => s.pool === 'cold-2')!;
  const pools = new Map(m.meta.listPools().map((p) => [p.name, p.path]));
  damageShardInPlace(pools.get('cold-2')!, bad);
  const w = watchOpen(m);
  const rc = m.cold!.reconstructor;
  rc.enqueue({ volumeId: id, chunkIndex: 0 }, 'test: damaged shard on cold-2');
  await rc.process();
  w.stop();
  assert.ok(w.reads() > 2, `the map was read in slices (${w.reads()} reads)`);
  assert.ok(w.turns() > 2, `the event loop turned while the map was read (${w.turns()} turns)`);
  assert.equal(rc.rebuiltStripes, 1);
  assert.deepEqual(rc.unhealthy(), []);
  assert.ok(!m.isOpen('big'), 'given back and closed once its stripe was rebuilt');
  const after = m.meta.chunks.get([id, 0])!.stripe!;
  const moved = after.shards.find((s) => s.pool === 'cold-2')!;
  assert.notDeepEqual([moved.segment, moved.offsetBytes], [bad.segment, bad.offsetBytes], 'the flip went through the opened volume to the index');
  const vol = await m.borrowVolumeAsync('big');
  assert.deepEqual(vol.stripes.get(0), after);
  assert.ok((await readVolume(vol, 0, MiB)).equals(chunk0));
  m.giveBack(vol);
});
