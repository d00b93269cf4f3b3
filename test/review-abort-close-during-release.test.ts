// A cold volume's RELEASE of its file (releaseFile: `volumes release`, or the
// end of a move to cold) waits for file reads in flight, and so does close()
// (a delete): both must wake when the reads drain. With one waiter slot the
// later caller overwrote the earlier one's, which then waited for good: a
// delete that never returned, or a migration that never ended.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { openColdTierManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
/**
 * Bound on how long a settled wait may take here: past it, the wait is stuck
 * (a wrong build waits for good, so only it waits the bound out). Far above
 * the real waits (an index commit and a file delete: up to 0.12 s at load
 * 14), which a busy machine's I/O could stretch past a bound of a few seconds.
 */
const STUCK_AFTER_MS = 30_000;

function settles(p: Promise<unknown>): Promise<'settled' | 'stuck'> {
  let timer!: NodeJS.Timeout;
  const stuck = new Promise<'stuck'>((r) => (timer = setTimeout(() => r('stuck'), STUCK_AFTER_MS)));
  return Promise.race([p.then(() => 'settled' as const, () => 'settled' as const), stuck]).finally(() => clearTimeout(timer));
}

/** A cold volume whose only chunk destaged as zeros: no stripe, no journal, so a read takes the one-file path (a file read in flight). */
async function coldVolumeOnFilePath(m: VolumeManager, name: string): Promise<Volume> {
  await m.createVolume({ name, sizeBytes: 4 * MiB });
  const vol = m.openVolume(name);
  await writeVolume(vol, 0, Buffer.alloc(4096));
  await vol.flush();
  await migrateVolume(m, name, 'cold', { preserve: false });
  assert.equal(vol.rec.tier, 'cold');
  assert.equal(vol.chunksOnFile().length, 0);
  assert.equal(vol.stripes.size, 0);
  return vol;
}

for (const order of ['release, then delete', 'delete, then release'] as const) {
  test(`a file read in flight, then ${order}: both finish once the read lands`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-close-release-'));
    const m = await openColdTierManager(dir);
    t.after(async () => {
      await m.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const vol = await coldVolumeOnFilePath(m, 'v');
    // Issued now, its callback runs no earlier than the next event-loop turn:
    // the two calls below both find it in flight.
    const dst = Buffer.alloc(4096, 0xff);
    const read = new Promise<void>((resolve, reject) => vol.read(0, 4096, dst, 0, (err) => (err ? reject(err) : resolve())));
    // Watched from the start: releaseFile may reject (the volume was closed), which is fine; waiting for good is not.
    let release: Promise<'settled' | 'stuck'>;
    let del: Promise<'settled' | 'stuck'>;
    const deleted = { done: false };
    const deleting = () => m.deleteVolume('v').then(() => void (deleted.done = true));
    if (order === 'release, then delete') {
      release = settles(vol.releaseFile());
      del = settles(deleting());
    } else {
      del = settles(deleting());
      // close() registers its wait a few microtask turns in.
      await Promise.resolve();
      await Promise.resolve();
      release = settles(vol.releaseFile());
    }
    await read;
    assert.ok(dst.equals(Buffer.alloc(4096)), 'the read returned the zeros the chunk holds');
    assert.equal(await del, 'settled', 'deleteVolume');
    assert.ok(deleted.done, 'deleteVolume failed');
    assert.equal(await release, 'settled', 'releaseFile');
    assert.equal(m.getVolumeRecord('v'), undefined);
  });
}
