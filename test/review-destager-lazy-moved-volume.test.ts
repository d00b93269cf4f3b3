// Review of 57e4bfc (lazy timer pass): journal records of a volume that is no
// longer cold (a cold -> hot move switched its tier; the copy, a crash or an
// abort left them) are merged into the file by the next lazy tick, however
// few, while writes keep coming: they are not deferred as unripe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

test('a lazy tick takes the few journal records of a volume switched to hot, and still defers a cold one', async (t) => {
  const { m } = await tempManager(t, 'couchestor-rv-destager-moved-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'moved', sizeBytes: 2 * MiB, tier: 'cold' });
  await m.createVolume({ name: 'cold', sizeBytes: 2 * MiB, tier: 'cold' });
  const moved = m.openVolume('moved');
  const cold = m.openVolume('cold');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const wantMoved = Buffer.alloc(2 * MiB);
  const wantCold = Buffer.alloc(2 * MiB);
  const put = async (vol: typeof moved, want: Buffer, at: number) => {
    const block = crypto.randomBytes(BLOCK_BYTES);
    block.copy(want, at);
    await writeVolume(vol, at, block);
  };
  // One block in each chunk of both volumes: nothing is ripe.
  for (const c of [0, 1]) {
    await put(moved, wantMoved, c * MiB + 3 * BLOCK_BYTES);
    await put(cold, wantCold, c * MiB + 5 * BLOCK_BYTES);
  }
  // The tier switch of a move to hot, without its copy: the records stay journaled.
  await moved.setTier('hot');
  assert.deepEqual(journal.dirtyChunks(moved.rec.id).sort(), [0, 1]);
  // New records since the last tick (none): a lazy tick, not an idle or full one.
  await d.tick();
  assert.equal(d.ticksDeferred, 0, 'the moved volume\'s chunks are work: the tick is not deferred');
  assert.deepEqual(journal.dirtyChunks(moved.rec.id), [], 'records of a hot volume merged into its file');
  assert.deepEqual(journal.dirtyChunks(cold.rec.id).sort(), [0, 1], 'the cold volume\'s unripe chunks wait');
  assert.deepEqual(await readVolume(moved, 0, 2 * MiB), wantMoved);
  assert.deepEqual(await readVolume(cold, 0, 2 * MiB), wantCold);
  // Idle now: the next tick takes the rest.
  await d.tick();
  assert.equal(journal.bytesLive, 0);
  assert.deepEqual(await readVolume(cold, 0, 2 * MiB), wantCold);
});
