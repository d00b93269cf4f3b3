// Review (TRIM / WRITE_ZEROES of a journaled chunk on a hot volume, crash
// ordering): discarding a chunk whose bytes are partly journal records (a
// cold -> hot switch before the chunk's promote) releases those records. A
// journal file whose records are all released is deleted. The delete must
// come after the index entry that supersedes the records (Discarded, with
// destagedSeq) is durable: before, a power cut in between left the old
// entry (the chunk's old stripe) and no journal records, so a FLUSHed write
// read back as the stripe's older bytes although only the unflushed trim
// was allowed to be lost. Checked as an event order: the rm of the journal
// file must follow a meta durable() issued after the Discarded put.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { ChunkState, type ChunkEntry } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { durableBetweenPutAndRm, oldJournalFile, openColdTierManager, readVolume, restartManager, tempDirClosing, watchRm, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

const realRm = fs.rm;

for (const op of ['trim', 'zero'] as const) {
  for (const chunkOnStripe of [true, false]) {
    test(`a ${op === 'trim' ? 'TRIM' : 'WRITE_ZEROES'} of a journaled ${chunkOnStripe ? 'Cold' : 'Unallocated'} chunk after a switch to hot deletes the journal file only after the Discarded entry is durable`, async (t) => {
      const dir = tempDirClosing(t, 'couchestor-review-discard-order-', () => m, () => (fs.rm = realRm));
      let m: VolumeManager = await openColdTierManager(dir);
      await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
      let vol = m.openVolume('v');
      if (chunkOnStripe) {
        await writeVolume(vol, 0, Buffer.alloc(MiB, 0x4f));
        await m.cold!.destager.drain();
        assert.equal(vol.chunkState[0], ChunkState.Cold);
      }
      // A flushed write, journaled on top.
      await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x5a));
      await vol.flush();
      // Restart: the journal starts a fresh head file, so the old one holds only this record.
      ({ m, vol } = await restartManager(m, dir, 'v'));
      const oldFile = oldJournalFile(m);
      assert.notEqual(m.cold!.journal.extents(vol.rec.id, 0), undefined);
      await vol.setTier('hot');

      const events: string[] = [];
      const meta = m.meta;
      const realPut = meta.chunks.put.bind(meta.chunks);
      meta.chunks.put = ((key: [number, number], value: ChunkEntry) => {
        if (key[0] === vol.rec.id && key[1] === 0 && value.state === ChunkState.Discarded) events.push('put-discarded');
        return realPut(key, value);
      }) as typeof meta.chunks.put;
      const realDurable = meta.durable.bind(meta);
      meta.durable = async () => {
        const i = events.length;
        events.push(`durable-start#${i}`);
        await realDurable();
        events.push(`durable-done#${i}`);
      };
      const oldFileRemoved = watchRm(oldFile, events);

      if (op === 'trim') await vol.trim(0, MiB, true);
      else await vol.writeZeroes(0, MiB, { noHole: false, fua: true, fastZero: false });
      await oldFileRemoved;
      assert.equal(vol.chunkState[0], ChunkState.Discarded);
      assert.ok((await readVolume(vol, 0, MiB)).equals(Buffer.alloc(MiB)), 'the discarded chunk reads as zeros');

      const { put, rm, durableBetween } = durableBetweenPutAndRm(events);
      assert.ok(put >= 0 && rm >= 0, `events: ${events.join(' ')}`);
      assert.ok(durableBetween, `the journal file was deleted before the Discarded entry was durable: ${events.join(' ')}`);
    });
  }
}
