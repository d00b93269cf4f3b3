// Review (WRITE_ZEROES across a cold -> hot switch): a cold volume's chunk
// that was only ever written through the journal stays Unallocated (or
// Discarded) in the chunk map until it is destaged or promoted. After the
// switch to hot, and before the migration (or the destager) promotes it,
// its bytes are the journal overlay. A WRITE_ZEROES there must not be taken
// for a no-op "already reads as zeros": the next read would return the
// journaled bytes the acknowledged zero replaced, and so would a replay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { openColdTierManager, readVolume, restartManager, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

const cases = [
  { name: 'a partial zero (a block) of an Unallocated journaled chunk', discardFirst: false, whole: false, noHole: false },
  { name: 'a whole-chunk zero (may punch) of an Unallocated journaled chunk', discardFirst: false, whole: true, noHole: false },
  { name: 'a whole-chunk NO_HOLE zero of an Unallocated journaled chunk', discardFirst: false, whole: true, noHole: true },
  { name: 'a partial zero of a Discarded chunk written again through the journal', discardFirst: true, whole: false, noHole: false },
  { name: 'a whole-chunk zero of a Discarded chunk written again through the journal', discardFirst: true, whole: true, noHole: false },
];

for (const c of cases) {
  test(`after a cold -> hot switch, ${c.name} reads as zeros, also after a restart`, async (t) => {
    const dir = tempDirClosing(t, 'couchestor-review-zero-journaled-', () => m);
    let m = await openColdTierManager(dir);
    await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
    let vol = m.openVolume('v');
    if (c.discardFirst) {
      // Chunk 1 on a stripe, then trimmed: Discarded.
      await writeVolume(vol, MiB, Buffer.alloc(MiB, 0x11));
      await m.cold!.destager.drain();
      assert.equal(vol.chunkState[1], ChunkState.Cold);
      await vol.setTier('hot');
      await vol.trim(MiB, MiB, true);
      assert.equal(vol.chunkState[1], ChunkState.Discarded);
      await vol.setTier('cold');
    }
    // Chunk 1 only in the journal (no destage), flushed.
    await writeVolume(vol, MiB, Buffer.alloc(MiB, 0x5a));
    await vol.flush();
    assert.notEqual(m.cold!.journal.extents(vol.rec.id, 1), undefined, 'chunk 1 is journaled');
    assert.ok(vol.chunkState[1] === ChunkState.Unallocated || vol.chunkState[1] === ChunkState.Discarded);
    // The migration's SWITCH of the tier; its COPY of chunk 1 has not run yet.
    await vol.setTier('hot');
    const zeroAt = c.whole ? MiB : MiB + BLOCK_BYTES;
    const zeroBytes = c.whole ? MiB : BLOCK_BYTES;
    await vol.writeZeroes(zeroAt, zeroBytes, { noHole: c.noHole, fua: true, fastZero: false });

    const expected = Buffer.alloc(MiB, 0x5a);
    expected.fill(0, zeroAt - MiB, zeroAt - MiB + zeroBytes);
    assert.ok((await readVolume(vol, MiB, MiB)).equals(expected), 'the acknowledged zero reads back');

    // Restart: the journal is replayed; the zero must still win.
    ({ m, vol } = await restartManager(m, dir, 'v'));
    assert.ok((await readVolume(vol, MiB, MiB)).equals(expected), 'the flushed zero reads back after a restart');
  });
}
