// Review of 3ee77d8 (a refused hole punch is remembered and later starts skip
// that file): the dead ranges a skipped punch leaves (destaged chunks' old
// bytes, a trimmed chunk's stale bytes) are never read as data, whichever way
// the volume goes next: back to hot in place (the promote rewrites whole
// chunks; the trimmed chunk reads zeros, around a new write too) and then to
// cold again (RELEASE truncates). Hot pool on ramfs (fallocate PUNCH_HOLE
// answers EOPNOTSUPP); needs root (mount).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, migrationPunchCounters } from '../src/dataplane/volumes/migration.js';
import { PUNCH_KILL_CHUNKS as CHUNKS, PUNCH_KILL_TRIMMED as TRIMMED, runPunchKillChild } from './helpers/punch-kill-child.js';
import { ramfsHotPoolDir } from './helpers/ramfs-hot-pool.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('ramfs hot pool, the start-up punch refused then skipped: the unpunched dead ranges never read as data, back to hot and to cold again', async (t) => {
  let m: VolumeManager | null = null;
  const { dir } = ramfsHotPoolDir(t, 'couchestor-review-punch-reads-', () => m);

  const { file, want } = await runPunchKillChild(dir);
  const stale = fs.readFileSync(file);
  assert.ok(stale.subarray(TRIMMED * MiB, (TRIMMED + 1) * MiB).some((b) => b !== 0), 'the trimmed chunk\'s range holds its stale bytes');

  // Start 1 is refused (and remembers it), start 2 skips the file.
  for (const tried of [1, 0]) {
    await m?.close();
    m = await openColdTierManager(dir, false);
    await m.finishInterruptedReleases();
    assert.equal(migrationPunchCounters(m).punchesUnsupported, tried);
  }
  const mgr = m!;
  let vol = mgr.openVolume('v');
  assert.equal(vol.rec.tier, 'cold');
  assert.ok(fs.readFileSync(file).equals(stale), 'the file changed');

  // Back to hot, in place over the unpunched ranges.
  const up = await migrateVolume(mgr, 'v', 'hot', { preserve: false });
  assert.equal(up.phase, 'Done');
  assert.equal(vol.rec.tier, 'hot');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the move back to hot');
  // A write into the trimmed chunk: the rest of the chunk still reads zeros, not the stale bytes.
  const block = crypto.randomBytes(8192);
  block.copy(want, TRIMMED * MiB + 4096);
  await writeVolume(vol, TRIMMED * MiB + 4096, block);
  await vol.flush();
  assert.ok((await readVolume(vol, TRIMMED * MiB, MiB)).equals(want.subarray(TRIMMED * MiB, (TRIMMED + 1) * MiB)), 'the trimmed chunk shows stale bytes around a new write');

  // A restart, then to cold again, whole: RELEASE truncates; every byte reads back from the stripes.
  await mgr.close();
  m = await openColdTierManager(dir, false);
  await m.finishInterruptedReleases();
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the restart');
  const down = await migrateVolume(m, 'v', 'cold', { preserve: false });
  assert.equal(down.phase, 'Done');
  assert.equal(fs.statSync(file).size, 0, 'RELEASE did not truncate the file');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the move to cold');
});
