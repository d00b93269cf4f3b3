// A hot pool on a file system that cannot punch holes: ramfs, a real one in
// this kernel whose fallocate answers EOPNOTSUPP (vfat is not built in, and
// no loop device is needed). Mounted over the pool's volumes/ directory
// (statfs of the pool directory stays the disk's, so the pool has room). An
// aborted move to cold still ends as Aborted, reports and counts the refused
// punch, logs it once, frees nothing and changes no byte; a later move to
// cold completes (RELEASE truncates, which ramfs can) and every byte reads
// back from the stripes. And a kill before the abort's punch
// (helpers/punch-kill-child): the next start tries the punch, is refused,
// counts and logs it once (with what the operator can do), and starts; the
// data reads back unchanged. A later start does not try (or log) it again
// for the same file, and does not even open the volume; the same bytes in a
// new file (another inode: the file restored, the pool moved) are tried again.
// Needs root (mount); the mounts are removed after.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, migrationPunchCounters, MigrationAborted, type MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { readFileRange } from './helpers/hot-warm.js';
import { PUNCH_KILL_CHUNKS, runPunchKillChild } from './helpers/punch-kill-child.js';
import { ramfsHotPoolDir } from './helpers/ramfs-hot-pool.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';
import { stderrLines } from './helpers/stderr.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
const TRIMMED = 2;
const MOVED = 16;
const BLOCKS_PER_CHUNK = MiB / 512;
const NO_PUNCH_LOG = /the file system cannot punch holes/;
/** What the operator can do, in the same line. */
const NO_PUNCH_ADVICE = /couchestor volumes migrate v cold.*file system that punches holes/;

test('hot pool on ramfs (fallocate PUNCH_HOLE answers EOPNOTSUPP): an aborted move to cold ends Aborted, counts and logs the refused punch once, changes no byte; the next move to cold completes', async (t) => {
  let m: VolumeManager | null = null;
  const { dir, volumesDir } = ramfsHotPoolDir(t, 'couchestor-punch-unsupported-', () => m);

  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  const file = m.pools.get('hot-0')!.volumeFile(vol.rec.id);
  assert.equal(path.dirname(file), volumesDir, 'the volume file is not on the ramfs mount');
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.trim(TRIMMED * MiB, MiB, false);
  want.fill(0, TRIMMED * MiB, (TRIMMED + 1) * MiB);
  await vol.flush();
  const before = fs.statSync(file);
  assert.ok(before.blocks >= CHUNKS * BLOCKS_PER_CHUNK, `the file holds ${before.blocks} blocks before the move`);
  const fileBefore = fs.readFileSync(file);

  const ac = new AbortController();
  let last: MigrationProgress | null = null;
  const { lines } = await stderrLines(() =>
    assert.rejects(
      migrateVolume(m!, 'v', 'cold', {
        preserve: false,
        signal: ac.signal,
        concurrency: 1,
        onProgress: (p) => {
          last = p;
          if (p.chunksDone >= MOVED) ac.abort();
        },
      }),
      (err: Error) => err instanceof MigrationAborted,
    ),
  );
  const aborted = last as MigrationProgress | null;
  assert.equal(aborted?.phase, 'Aborted');
  assert.equal(aborted?.punchUnsupported, true, 'the refused punch is not reported');
  assert.equal(aborted?.bytesPunched, 0);
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 1 });
  assert.equal(lines.filter((l) => NO_PUNCH_LOG.test(l)).length, 1, `not logged exactly once:\n${lines.join('\n')}`);
  assert.equal(vol.rec.tier, 'hot');
  assert.equal(vol.stripes.size, MOVED, 'chunks destaged before the abort');
  assert.ok(vol.chunksOnFile().length > 0, 'chunks were left in the file (else RELEASE truncates, no punch)');

  // Nothing freed, no byte of the file changed (the dead ranges keep their old bytes), every byte reads back.
  const after = fs.statSync(file);
  assert.equal(after.size, before.size);
  assert.equal(after.blocks, before.blocks, 'blocks changed on a file system that cannot punch');
  assert.ok(readFileRange(file, 0, CHUNKS * MiB).equals(fileBefore), 'the file\'s bytes changed');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after the aborted move');

  // Writes after the revert (into a destaged chunk and the trimmed one) and a full move to cold.
  for (const c of [5, TRIMMED]) {
    const block = crypto.randomBytes(8192);
    block.copy(want, c * MiB + 4096);
    await writeVolume(vol, c * MiB + 4096, block);
  }
  await vol.flush();
  const done = await migrateVolume(m, 'v', 'cold', { preserve: false });
  assert.equal(done.phase, 'Done');
  assert.equal(done.punchUnsupported, undefined, 'a finished move truncates, it does not punch');
  assert.equal(vol.rec.tier, 'cold');
  assert.deepEqual(vol.chunksOnFile(), []);
  assert.equal(fs.statSync(file).size, 0, 'RELEASE did not truncate the file');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from cold');
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 1 });
  t.diagnostic(`ramfs: punch refused once, ${after.blocks} blocks kept after the abort; the finished move truncated the file`);

  // The remembered refusals stay bounded: v's entry goes once v is deleted and another file is refused.
  const refused = () => [...m!.meta.openDB<unknown, string>('punch-refused').getKeys()].sort();
  assert.deepEqual(refused(), [`${vol.rec.id}/hot-0`]);
  await m.deleteVolume('v');
  await m.createVolume({ name: 'w', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const w = m.openVolume('w');
  await writeVolume(w, 0, crypto.randomBytes(CHUNKS * MiB));
  await w.flush();
  const acW = new AbortController();
  await assert.rejects(
    migrateVolume(m, 'w', 'cold', { preserve: false, signal: acW.signal, concurrency: 1, onProgress: (p) => p.chunksDone >= MOVED && acW.abort() }),
    (err: Error) => err instanceof MigrationAborted,
  );
  assert.deepEqual(refused(), [`${w.rec.id}/hot-0`], 'a deleted volume\'s refusal was kept');
});

test('hot pool on ramfs, killed between an aborted move to cold\'s destages and its punch: the next start is refused the punch, counts and logs it once, starts; later starts do not retry the same file; the data reads back', async (t) => {
  let m: VolumeManager | null = null;
  const { dir } = ramfsHotPoolDir(t, 'couchestor-punch-unsupported-kill-', () => m);
  const { file, want } = await runPunchKillChild(dir);
  const before = fs.statSync(file);
  const fileBefore = fs.readFileSync(file);

  m = await openColdTierManager(dir, false);
  const { value: r, lines } = await stderrLines(() => m!.finishInterruptedReleases());
  assert.deepEqual(r, { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 1 });
  assert.equal(lines.filter((l) => NO_PUNCH_LOG.test(l)).length, 1, `not logged exactly once:\n${lines.join('\n')}`);
  assert.ok(lines.some((l) => NO_PUNCH_LOG.test(l) && NO_PUNCH_ADVICE.test(l)), `the log line does not say what the operator can do:\n${lines.join('\n')}`);
  let vol = m.openVolume('v');
  assert.equal(vol.rec.tier, 'cold');
  assert.ok(vol.chunksOnFile().length > 0);
  assert.equal(fs.statSync(file).blocks, before.blocks);
  assert.ok(fs.readFileSync(file).equals(fileBefore), 'the file\'s bytes changed');
  assert.ok((await readVolume(vol, 0, PUNCH_KILL_CHUNKS * MiB)).equals(want), 'the volume reads back after the refused start-up punch');

  // Later starts, same file on the same file system: not tried, not logged, the volume not even opened.
  for (let start = 2; start <= 3; start++) {
    await m.close();
    m = await openColdTierManager(dir, false);
    const { value: again, lines: againLines } = await stderrLines(() => m!.finishInterruptedReleases());
    assert.deepEqual(again, { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
    assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 0 }, `start ${start} tried the refused punch again`);
    assert.deepEqual(againLines.filter((l) => NO_PUNCH_LOG.test(l)), [], `start ${start} logged the refused punch again`);
    assert.deepEqual(m.openVolumes().map((v) => v.name), [], `start ${start} opened the volume`);
  }

  // Something changed: the same bytes in a new file (a restore, the pool moved): tried again, refused, logged once.
  await m.close();
  m = null;
  fs.copyFileSync(file, `${file}.copy`);
  fs.renameSync(`${file}.copy`, file);
  m = await openColdTierManager(dir, false);
  const { lines: newFileLines } = await stderrLines(() => m!.finishInterruptedReleases());
  assert.deepEqual(migrationPunchCounters(m), { rangesPunched: 0, bytesPunched: 0, punchesUnsupported: 1 }, 'a new file was not tried');
  assert.equal(newFileLines.filter((l) => NO_PUNCH_LOG.test(l)).length, 1, `not logged exactly once:\n${newFileLines.join('\n')}`);
  vol = m.openVolume('v');
  assert.ok(fs.readFileSync(file).equals(fileBefore), 'the file\'s bytes changed');
  assert.ok((await readVolume(vol, 0, PUNCH_KILL_CHUNKS * MiB)).equals(want), 'the volume reads back after the restarts');
});
