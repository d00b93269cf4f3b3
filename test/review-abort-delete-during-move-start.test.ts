// A volume deleted while a hot <-> warm move is starting stays deleted: the
// move's setTier, which opens the target pool's file (a directory fsync on
// the threadpool) and then writes the volume record, must not write the
// record back after the delete, nor keep a descriptor open on the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { hotWarmManager, openDescriptorTargets } from './helpers/hot-warm.js';
import { writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
/** Trials: half start the delete some microtask turns after the move, half some event-loop turns after. */
const TRIALS = 40;

/** This process's descriptors open on a data file of volume `id` under `dir`. */
function openDescriptors(dir: string, id: number): string[] {
  return openDescriptorTargets().filter((target) => target.startsWith(dir) && new RegExp(`/volumes/${id}\\.dat( \\(deleted\\))?$`).test(target));
}

test(`a volume deleted while a move to another pool starts stays deleted, with no descriptor left open (${TRIALS} trials)`, async (t) => {
  const { dir, m } = await hotWarmManager(t, { prefix: 'couchestor-delete-move-start-' });
  const resurrected: string[] = [];
  const leaked: string[] = [];
  const leftOnDisk: string[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const name = `v${i}`;
    const rec = await m.createVolume({ name, sizeBytes: 4 * MiB, pool: 'hot-0' });
    const vol = m.openVolume(name);
    await writeVolume(vol, 0, Buffer.alloc(4096, 7));
    await vol.flush();
    // The move fails or finishes; either way the delete decides what is left.
    const move = migrateVolume(m, name, 'warm', { preserve: false }).catch(() => undefined);
    const turns = i % (TRIALS / 2);
    let at: Promise<void>;
    if (i < TRIALS / 2) {
      at = Promise.resolve();
      for (let k = 0; k < turns; k++) at = at.then(() => undefined);
    } else at = new Promise((r) => setTimeout(r, turns / 4));
    await Promise.all([move, at.then(() => m.deleteVolume(name))]);
    if (m.meta.volumes.get(name) !== undefined) resurrected.push(name);
    const fds = openDescriptors(dir, rec.id);
    if (fds.length > 0) leaked.push(`${name}: ${fds.join(', ')}`);
    for (const pool of m.pools.values()) if (fs.existsSync(pool.volumeFile(rec.id))) leftOnDisk.push(`${name} on ${pool.name}`);
  }
  assert.deepEqual(resurrected, [], 'deleted volumes whose record a starting move wrote back');
  assert.deepEqual(leaked, [], 'descriptors left open on deleted volumes\' files');
  assert.deepEqual(leftOnDisk, [], 'data files left on disk by deleted volumes');
  assert.deepEqual(m.listVolumes(), []);
});
