// Reviewer's reproducers for the hot <-> warm online migration: races of the
// volume record, the pool files and a move with resize, `volumes release` and
// delete, against the real VolumeManager/Volume (no mocks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

async function openManager(dir: string, create: boolean): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  if (create) {
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
    await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  }
  return m;
}

test('a resize while a move starts is not undone by the move: flushed writes past the old size survive a restart', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-resize-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let m = await openManager(dir, true);
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB });
  let vol = m.openVolume('v');
  const head = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 0, head);
  await vol.flush();
  // Same turn: the resize's record write and the move's setTier overlap.
  const resized = m.resizeVolume('v', 16 * MiB);
  const moved = migrateVolume(m, 'v', 'warm', { preserve: false });
  await resized;
  await moved;
  assert.equal(vol.sizeBytes, 16 * MiB);
  const tail = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 8 * MiB, tail);
  await vol.flush();
  assert.equal(m.getVolumeRecord('v')!.sizeBytes, 16 * MiB, 'the persisted size lost the resize');
  await m.close();
  m = await openManager(dir, false);
  vol = m.openVolume('v');
  assert.equal(vol.sizeBytes, 16 * MiB);
  assert.ok((await readVolume(vol, 8 * MiB, 8 * MiB)).equals(tail), 'flushed writes past the old size are lost after a restart');
  await m.close();
});
