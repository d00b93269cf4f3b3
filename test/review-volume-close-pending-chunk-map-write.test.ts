// A volume nothing holds is closed at its last giveBack only when quiet
// (Volume.quiet): a later open reads its chunk map from the index, so every
// chunk-map write must be in the index by then. lmdb-js applies a put at its
// commit, not at the call: a TRIM's Discarded entry is invisible to reads
// until then. quiet() looked at metaDirty, which a FLUSH clears when it
// starts, before that commit: a volume given back while a FLUSH ran after a
// TRIM (an NBD client killed mid-FLUSH, its connection's loan given back)
// closed with the entry uncommitted, and the next open read the trimmed chunk
// as Allocated: its old bytes, not the zeros the acknowledged TRIM promised.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a volume given back with a chunk-map write not yet committed stays open: the trimmed chunk reads zeros through the next open', async (t) => {
  const { m } = await tempManager(t, 'couchestor-close-pending-', async (dir) => {
    const opened = VolumeManager.open(path.join(dir, 'meta'));
    await opened.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
    return opened;
  });
  await m.createVolume({ name: 'v', sizeBytes: 2 * MiB });
  const vol = m.borrowVolume('v');
  await writeVolume(vol, 0, Buffer.alloc(MiB, 7));
  await vol.flush();
  // Metadata only: chunk 0 Discarded (its entry's put queued), no file touched.
  await vol.trim(0, MiB, false);
  const flushing = vol.flush();
  m.giveBack(vol);
  const next = m.openVolume('v');
  const got = await readVolume(next, 0, 4096);
  await flushing;
  assert.ok(got.equals(Buffer.alloc(4096)), `the trimmed chunk reads zeros, not its old bytes (first byte ${got[0]})`);
  assert.ok((await readVolume(m.openVolume('v'), 0, 4096)).equals(Buffer.alloc(4096)), 'and after the FLUSH');
});
