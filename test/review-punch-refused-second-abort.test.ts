// Review of 3ee77d8: a refused hole punch is logged once per file. The
// author's test covers the start-up punch; this one the other path, a second
// aborted move to cold of the same volume (same file, same file system): it
// still reports and counts the refusal, and logs nothing new. A new file (the
// same bytes copied in) is logged again. Hot pool on ramfs (fallocate
// PUNCH_HOLE answers EOPNOTSUPP); needs root (mount).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, migrationPunchCounters, MigrationAborted, type MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { stderrLines } from './helpers/stderr.js';
import { ramfsHotPoolDir } from './helpers/ramfs-hot-pool.js';
import { flushedRandomVolume, openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
const MOVED = 16;
const NO_PUNCH_LOG = /the file system cannot punch holes/;

test('ramfs hot pool: a second aborted move to cold of the same file reports and counts the refused punch but does not log it again', async (t) => {
  let m: VolumeManager | null = null;
  const { dir } = ramfsHotPoolDir(t, 'couchestor-review-punch-abort2-', () => m);

  m = await openColdTierManager(dir);
  const mgr = m;
  const { vol, want } = await flushedRandomVolume(mgr, 'v', CHUNKS * MiB);
  const file = mgr.pools.get('hot-0')!.volumeFile(vol.rec.id);

  // Aborted at the first progress report with `atChunks` copied (0: before any: the chunks a
  // first move destaged are still Cold, so the punch has dead ranges either way).
  const abortedMove = async (m: VolumeManager, atChunks: number): Promise<{ p: MigrationProgress; logged: number }> => {
    const ac = new AbortController();
    let last: MigrationProgress | null = null;
    const { lines } = await stderrLines(() =>
      assert.rejects(
        migrateVolume(m, 'v', 'cold', { preserve: false, signal: ac.signal, concurrency: 1, onProgress: (p) => ((last = p), p.phase === 'Copy' && p.chunksDone >= atChunks && ac.abort()) }),
        (err: Error) => err instanceof MigrationAborted,
      ),
    );
    return { p: last!, logged: lines.filter((l) => NO_PUNCH_LOG.test(l)).length };
  };

  const first = await abortedMove(mgr, MOVED);
  assert.equal(first.p.punchUnsupported, true);
  assert.equal(first.logged, 1, 'the first refusal is not logged');
  // Writes after the revert (new data for some destaged chunks), and the same move aborted again.
  const block = crypto.randomBytes(MiB);
  block.copy(want, 3 * MiB);
  await writeVolume(vol, 3 * MiB, block);
  await vol.flush();
  const second = await abortedMove(mgr, 0);
  assert.equal(second.p.phase, 'Aborted');
  assert.equal(second.p.punchUnsupported, true, 'the second refusal is not reported');
  assert.equal(migrationPunchCounters(mgr).punchesUnsupported, 2, 'the second refusal is not counted');
  assert.equal(second.logged, 0, 'the same file\'s refusal was logged again');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after two aborted moves');

  // Another file (the same bytes copied in while the daemon is down): logged again.
  await mgr.close();
  m = null;
  fs.copyFileSync(file, `${file}.copy`);
  fs.renameSync(`${file}.copy`, file);
  m = await openColdTierManager(dir, false);
  const again = m;
  await again.finishInterruptedReleases();
  const v2 = again.openVolume('v');
  assert.equal(v2.rec.tier, 'hot');
  const third = await abortedMove(again, 0);
  assert.equal(third.p.punchUnsupported, true);
  assert.equal(third.logged, 1, 'a new file\'s refusal is not logged');
  assert.ok((await readVolume(v2, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the third aborted move');
});
