// An aborted move to cold punches and counts only the dead chunk ranges that
// still hold data (Volume.punchDeadRanges -> dataRuns, lseek SEEK_DATA).
// Before, every Cold/Discarded range was punched and counted each time, so
// two aborts in a row reported the first one's ranges twice (32 MiB punched
// for 16 MiB freed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, MigrationAborted, migrationPunchCounters, type MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { firstDataOffset } from '../src/dataplane/volumes/seek-data.js';
import { flushedRandomVolume, openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 48;
/** Progress is reported every 16 chunks: with one copy at a time, an abort there stops after exactly 16. */
const MOVED = 16;

/** Chunks of [0, CHUNKS) whose range in `file` holds a data extent. */
async function chunksWithData(file: string): Promise<number[]> {
  const fd = fs.openSync(file, 'r');
  try {
    const out: number[] = [];
    for (let c = 0; c < CHUNKS; c++) {
      const dataAt = await firstDataOffset(fd, c * MiB);
      if (dataAt !== -1 && dataAt < (c + 1) * MiB) out.push(c);
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

test('aborted moves to cold in a row count only the dead ranges that still held data: a second abort with nothing new destaged reports 0 bytes punched', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-punch-count-', () => m!);
  m = await openColdTierManager(dir);
  const mgr = m;
  const { vol, want } = await flushedRandomVolume(mgr, 'v', CHUNKS * MiB);
  const file = mgr.pools.get('hot-0')!.volumeFile(vol.rec.id);
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

  /** A move to cold aborted once `stopAt` says so; resolves with its last progress report. */
  const abortedMove = async (stopAt: (p: MigrationProgress) => boolean): Promise<MigrationProgress> => {
    const ac = new AbortController();
    let last: MigrationProgress | null = null;
    await assert.rejects(
      migrateVolume(mgr, 'v', 'cold', {
        preserve: false,
        signal: ac.signal,
        concurrency: 1,
        onProgress: (p) => {
          last = p;
          if (stopAt(p)) ac.abort();
        },
      }),
      (err: Error) => err instanceof MigrationAborted,
    );
    assert.equal(vol.rec.tier, 'hot', 'the abort reverts the tier');
    return last!;
  };

  // 1: 16 chunks destaged, their ranges punched.
  const first = await abortedMove((p) => p.chunksDone >= MOVED);
  assert.equal(first.bytesPunched, MOVED * MiB);
  assert.deepEqual(await chunksWithData(file), range(MOVED, CHUNKS));
  const blocksAfterFirst = fs.statSync(file).blocks;

  // 2: aborted at the copy's first report, after the switch to cold, before any chunk: the same
  // dead ranges, already holes, are punched by nothing and counted as nothing.
  const second = await abortedMove((p) => p.phase === 'Copy');
  assert.equal(second.chunksDone, 0, 'the second move destaged a chunk');
  assert.equal(second.bytesPunched, 0, `the second abort reported ${second.bytesPunched} bytes punched; it freed none`);
  assert.equal(fs.statSync(file).blocks, blocksAfterFirst);

  // 3: 16 more destaged: only their ranges count (the first 16 are holes already).
  const third = await abortedMove((p) => p.chunksDone >= MOVED);
  assert.equal(third.bytesPunched, MOVED * MiB, `the third abort reported ${third.bytesPunched} bytes punched for ${MOVED} chunks freed`);
  assert.deepEqual(await chunksWithData(file), range(2 * MOVED, CHUNKS));
  assert.ok(blocksAfterFirst - fs.statSync(file).blocks >= (MOVED * MiB) / 512, 'the third abort freed less than its chunks');
  assert.deepEqual(migrationPunchCounters(mgr), { rangesPunched: 2, bytesPunched: 2 * MOVED * MiB, punchesUnsupported: 0 });

  assert.deepEqual(vol.chunksOnFile(), range(2 * MOVED, CHUNKS));
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back');
});
