// Review of 594401b (the destager opens a closed volume a slice at a time):
// a stop while a destage pass waits for such an open. The manager gives the
// open up at its next slice ("the daemon is stopping"); the destager took
// that for a volume that cannot be opened: a WARN "destage skipped volumes
// that cannot be opened" at the stop, the failure counted in its errors and
// volumesSkipped and left as the journal's
// stalled reason. A stop is none of that: the records stay in the journal
// and the next start destages them. (errors and volumesSkipped are the
// destager's in-process counters; the WARN line was what a user saw.) And a
// delete meanwhile: the open read on through the rest of the map (the one
// the delete was removing) before it noticed; now it ends at its next slice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { log } from '../src/log.js';
import { openColdTierManager, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';
import { bigChunkMap } from './helpers/big-chunk-map.js';
import { patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;
/** Chunk entries: ~20 ranges of 1,024, so the open yields a few times. */
const CHUNKS = 20_000;
/** The deleted volume's map: ~49 ranges of 1,024. */
const DELETED_CHUNKS = 50_000;

test('a stop while the destager opens a closed volume a slice at a time is not a volume that cannot be opened; the records destage at the next start', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rsopen-stop-', () => m!);
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'big', sizeBytes: 2 * MiB, tier: 'cold' });
  const data = patternBytes(MiB, 7);
  const vol = m.borrowVolume('big');
  const id = vol.rec.id;
  await writeVolume(vol, MiB, data);
  await vol.flush();
  m.giveBack(vol);
  await m.close();
  await bigChunkMap(path.join(dir, 'meta'), 'big', { chunks: CHUNKS, chunkBytes: MiB, state: ChunkState.Discarded });
  m = await openColdTierManager(dir, false);
  const stopping = m;
  assert.ok(!stopping.isOpen('big') && stopping.cold!.journal.hasVolume(id), 'premise: closed, its record in the journal');

  const warned: string[] = [];
  const warn = log.warn;
  log.warn = (msg, fields) => {
    warned.push(msg);
    warn(msg, fields);
  };
  t.after(() => (log.warn = warn));
  // The stop lands at the open's second read of the map (the first one done).
  const volumeChunks = stopping.meta.volumeChunks.bind(stopping.meta);
  let closed: Promise<void> | null = null;
  stopping.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    if (fromChunk > 0 && closed === null) closed = stopping.close();
    return volumeChunks(volumeId, fromChunk, limit);
  };
  await stopping.cold!.destager.kick();
  assert.ok(closed !== null, 'the stop came while the map was read');
  await closed;
  const d = stopping.cold!.destager;
  assert.deepEqual({ errors: d.errors, volumesSkipped: d.volumesSkipped, stalledReason: stopping.cold!.journal.stalledReason }, { errors: 0, volumesSkipped: 0, stalledReason: null });
  assert.deepEqual(warned.filter((w) => w.startsWith('destage')), [], 'no destage warning at the stop');

  m = await openColdTierManager(dir, false);
  assert.ok(m.cold!.journal.hasVolume(id), 'the record stayed in the journal');
  await m.cold!.destager.drain();
  assert.ok(!m.cold!.journal.hasVolume(id));
  const back = await m.borrowVolumeAsync('big');
  assert.equal(back.chunkState[1], ChunkState.Cold);
  assert.ok((await readVolume(back, MiB, MiB)).equals(data));
  m.giveBack(back);
});

test('a closed volume deleted while the destager opens it a slice at a time: the open gives up at its next slice, not after the whole map', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rsopen-del-', () => m!);
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'big', sizeBytes: 2 * MiB, tier: 'cold' });
  const vol = m.borrowVolume('big');
  const id = vol.rec.id;
  await writeVolume(vol, MiB, patternBytes(MiB, 3));
  await vol.flush();
  m.giveBack(vol);
  await m.close();
  await bigChunkMap(path.join(dir, 'meta'), 'big', { chunks: DELETED_CHUNKS, chunkBytes: MiB, state: ChunkState.Discarded });
  m = await openColdTierManager(dir, false);
  const mm = m;
  const volumeChunks = mm.meta.volumeChunks.bind(mm.meta);
  // Reads of its map by the open, and those made once the delete had dropped the name.
  let reads = 0;
  let readsAfterDelete = 0;
  let deleting: Promise<void> | null = null;
  mm.meta.volumeChunks = (volumeId: number, fromChunk = 0, limit?: number) => {
    if (volumeId === id) {
      reads++;
      if (mm.meta.volumes.get('big') === undefined) readsAfterDelete++;
      if (fromChunk > 0 && deleting === null) deleting = mm.deleteVolume('big');
      // ~1 ms a range: the map's ~49 take longer than the delete's name drop (one small commit).
      else if (deleting !== null) for (const until = performance.now() + 1; performance.now() < until; );
    }
    return volumeChunks(volumeId, fromChunk, limit);
  };
  await mm.cold!.destager.kick();
  assert.ok(deleting !== null, 'the delete came while the map was read');
  await deleting;
  // Without the per-slice look the whole map was read, most of it after the name was gone (30-45 reads).
  assert.equal(readsAfterDelete, 0, `the open read the map on after the delete (${readsAfterDelete} of ${reads} reads)`);
  assert.equal(mm.cold!.destager.errors, 0);
  assert.equal(mm.cold!.destager.volumesSkipped, 0);
  assert.ok(!mm.cold!.journal.hasVolume(id));
  assert.equal(mm.getVolumeRecord('big'), undefined);
});

test('a drain during a delete waits for no destage of the deleted volume: not "destage made no progress"', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rsopen-drain-', () => m!);
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'gone', sizeBytes: 2 * MiB, tier: 'cold' });
  const vol = m.borrowVolume('gone');
  const id = vol.rec.id;
  await writeVolume(vol, 0, patternBytes(MiB, 4));
  await vol.flush();
  m.giveBack(vol);
  // The delete held after its name-dropping transaction, at the wait for it to be durable:
  // no volume has the id, and its records are still in the journal (dropped after the wait).
  const mm = m;
  const durable = mm.meta.durable.bind(mm.meta);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let atDurable!: () => void;
  const reached = new Promise<void>((resolve) => (atDurable = resolve));
  let first = true;
  mm.meta.durable = async () => {
    if (first) {
      first = false;
      atDurable();
      await held;
    }
    return durable();
  };
  const deleting = mm.deleteVolume('gone');
  await reached;
  assert.equal(mm.getVolumeRecord('gone'), undefined, 'premise: the name is gone');
  assert.ok(mm.cold!.journal.hasVolume(id), 'premise: its records still journaled');
  const drained = await mm.cold!.destager.drain().then(
    () => 'ok',
    (err: Error) => err.message,
  );
  release();
  await deleting;
  assert.equal(drained, 'ok');
  assert.ok(!mm.cold!.journal.hasVolume(id), 'its records dropped by the delete');
  assert.equal(mm.cold!.destager.errors, 0);
});
