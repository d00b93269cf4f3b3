// Review (of 321ecb0, Journal.release removeAfter). Failed before the fix
// that landed with it (a journal file is removed only once no release of its
// records still waits for its superseding entry: removeHolds). A journal file
// holding records of two chunks: chunk 0 is discarded (TRIM after a
// cold -> hot switch, its release deferred until the Discarded entry is
// durable), while chunk 1's promote, whose durable() was issued before that
// Discarded put, releases its records right after. That second release
// takes the file's live bytes to zero and deletes it at once, before the
// Discarded entry of chunk 0 is durable: a power cut in between keeps chunk
// 0's old entry (Unallocated, superseded by nothing) without its records, so
// the FLUSHed write to chunk 0 reads back as zeros although only the
// unflushed trim may be lost. Checked as an event order like
// review-discard-journal-order: the rm of the journal file must follow a
// meta durable() issued after the Discarded put and resolved. The promote's
// durable() is bound to the commit it was issued after (realDurable called
// at once); once that commit is durable, its continuation is held until the
// Discarded put is issued (an event loop busy with the TRIM request): a
// legal timing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { ChunkState, type ChunkEntry } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { durableBetweenPutAndRm, oldJournalFile, openColdTierManager, readVolume, restartManager, tempDirClosing, watchRm, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

const realRm = fs.rm;

test('a journal file shared by a discarded chunk and a promoted one is deleted only after the Discarded entry is durable', async (t) => {
  const dir = tempDirClosing(t, 'couchestor-review-discard-shared-', () => m, () => (fs.rm = realRm));
  let m: VolumeManager = await openColdTierManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
  let vol = m.openVolume('v');
  // Flushed writes to chunks 0 and 1, both only in the journal.
  await writeVolume(vol, 0, Buffer.alloc(BLOCK_BYTES, 0x5a));
  await writeVolume(vol, MiB, Buffer.alloc(BLOCK_BYTES, 0x6b));
  await vol.flush();
  // Restart: the journal starts a fresh head file, so the old one holds only these two records.
  ({ m, vol } = await restartManager(m, dir, 'v'));
  const oldFile = oldJournalFile(m);
  assert.notEqual(m.cold!.journal.extents(vol.rec.id, 0), undefined);
  assert.notEqual(m.cold!.journal.extents(vol.rec.id, 1), undefined);
  await vol.setTier('hot');

  const events: string[] = [];
  const meta = m.meta;
  let openGate!: () => void;
  const gate = new Promise<void>((r) => (openGate = r));
  const realPut = meta.chunks.put.bind(meta.chunks);
  meta.chunks.put = ((key: [number, number], value: ChunkEntry) => {
    const p = realPut(key, value);
    if (key[0] === vol.rec.id && key[1] === 0 && value.state === ChunkState.Discarded) {
      events.push('put-discarded');
      openGate();
    }
    return p;
  }) as typeof meta.chunks.put;
  const realDurable = meta.durable.bind(meta);
  let promoteDurableIssued!: () => void;
  const promoteWaiting = new Promise<void>((r) => (promoteDurableIssued = r));
  let first = true;
  meta.durable = async () => {
    const i = events.length;
    events.push(`durable-start#${i}`);
    const p = realDurable();
    if (first) {
      // The promote's SWITCH durable(): bound to the commits issued so far; resolution held.
      first = false;
      await p;
      promoteDurableIssued();
      await gate;
    } else await p;
    events.push(`durable-done#${i}`);
  };
  const oldFileRemoved = watchRm(oldFile, events);

  const promote = vol.ensurePromoted(1);
  await promoteWaiting;
  await vol.trim(0, MiB, true);
  await promote;
  await oldFileRemoved;
  assert.equal(vol.chunkState[0], ChunkState.Discarded);
  assert.equal(vol.chunkState[1], ChunkState.Allocated);
  assert.ok((await readVolume(vol, 0, MiB)).equals(Buffer.alloc(MiB)), 'the discarded chunk reads as zeros');
  const want1 = Buffer.alloc(MiB);
  want1.fill(0x6b, 0, BLOCK_BYTES);
  assert.ok((await readVolume(vol, MiB, MiB)).equals(want1), 'the promoted chunk reads its journaled write');

  const { put, rm, durableBetween } = durableBetweenPutAndRm(events);
  assert.ok(put >= 0 && rm >= 0, `events: ${events.join(' ')}`);
  assert.ok(durableBetween, `the journal file was deleted before the Discarded entry of chunk 0 was durable (a power cut then loses chunk 0's FLUSHed write): ${events.join(' ')}`);
});
