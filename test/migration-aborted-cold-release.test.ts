// A move to cold aborted after every chunk of the file went to stripes (only
// journaled chunks were left) releases the placement pool's file before the
// tier reverts, as a finished move does: truncated, still the open placement
// file; in preservation mode kept whole. Client writes racing the abort land
// (journal, then file); every byte reads back, also after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { openVolumeFiles } from './helpers/hot-warm.js';
import { openColdTierManager, raceBlockWrites, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
/** Written before the move: chunks 0..15 in hot-0's file; 16..23 never written. */
const ON_FILE = 16;
/** Written while the move runs (the tier is cold: it goes to the journal). */
const JOURNALED_CHUNK = 20;

for (const preserve of [false, true]) {
  test(`a move to cold aborted once only journaled chunks were left${preserve ? ' (preservation mode) keeps the placement file whole' : ' truncates the placement file, which stays open'}; byte-exact, writes land in the file, also after a restart`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-abort-cold-release-'));
    let m: VolumeManager | null = await openColdTierManager(dir);
    t.after(async () => {
      await m?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
    let vol = m.openVolume('v');
    const id = vol.rec.id;
    const file = m.pools.get('hot-0')!.volumeFile(id);
    const want = Buffer.alloc(CHUNKS * MiB);
    crypto.randomBytes(ON_FILE * MiB).copy(want);
    await writeVolume(vol, 0, want.subarray(0, ON_FILE * MiB));
    await vol.flush();
    assert.equal(fs.statSync(file).size, ON_FILE * MiB);

    const late = crypto.randomBytes(64 * 1024);
    late.copy(want, JOURNALED_CHUNK * MiB);
    let lateWrite: Promise<void> | null = null;
    // From the abort until the move has settled (the release, then the
    // revert), a client keeps writing 4 KiB blocks all over the volume: each
    // lands in the journal or, once reverted, in the file, never in a range
    // the truncate cuts.
    let settled = false;
    let racing: Promise<number> | null = null;
    const raceWrites = () => raceBlockWrites(vol, want, () => crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, () => settled);
    const ac = new AbortController();
    const moved = migrateVolume(m, 'v', 'cold', {
        preserve,
        signal: ac.signal,
        concurrency: 1,
        onProgress: (p) => {
          // Round 1's list is made (the file's 16 chunks) and the tier is
          // cold: this write is in the journal before the call returns, so
          // round 2 lists its chunk; that round's report (16 done) aborts.
          if (p.phase === 'Copy' && p.chunksDone === 0 && lateWrite === null) lateWrite = writeVolume(vol, JOURNALED_CHUNK * MiB, late);
          if (p.chunksDone >= ON_FILE && !ac.signal.aborted) {
            ac.abort();
            racing = raceWrites();
          }
        },
      }).finally(() => (settled = true));
    await assert.rejects(moved, (err: Error) => err instanceof MigrationAborted);
    assert.ok(lateWrite, 'the write during the move was issued');
    await lateWrite;
    assert.ok(racing, 'writes raced the abort');
    const raced = await racing;
    assert.ok(raced >= 8, `${raced} writes raced the abort`);
    assert.equal(vol.rec.tier, 'hot', 'the tier reverted');
    // Each file chunk went to a stripe (a racing write after the revert may have promoted it back).
    for (let c = 0; c < ON_FILE; c++) assert.ok(vol.stripes.has(c) || vol.chunkState[c] === ChunkState.Allocated, `chunk ${c}`);
    assert.deepEqual(openVolumeFiles(dir, id), ['hot-0'], 'the placement file stays open');
    if (preserve) assert.ok(fs.statSync(file).size >= ON_FILE * MiB, 'preservation mode keeps the file');
    else {
      // Released: the old bytes of every chunk not written into the file
      // again since the revert are gone (past the end, or a hole).
      const allocated = new Set(vol.chunksOnFile());
      assert.ok(allocated.size < ON_FILE, `chunks in the file: ${[...allocated]}`);
      const fd = fs.openSync(file, 'r');
      try {
        const buf = Buffer.alloc(MiB);
        for (let c = 0; c < ON_FILE; c++) {
          if (allocated.has(c)) continue;
          buf.fill(0);
          fs.readSync(fd, buf, 0, MiB, c * MiB);
          assert.ok(buf.every((x) => x === 0), `chunk ${c}: its old bytes are still in the file`);
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after the aborted move');

    // Back on hot: a write to a stripe chunk promotes it into the file, a
    // write to a never-written chunk is allocated there.
    const a = crypto.randomBytes(4096);
    const b = crypto.randomBytes(4096);
    a.copy(want, 3 * MiB + 8192);
    b.copy(want, 22 * MiB);
    await writeVolume(vol, 3 * MiB + 8192, a);
    await writeVolume(vol, 22 * MiB, b);
    await vol.flush();
    assert.equal(vol.chunkState[3], ChunkState.Allocated);
    assert.equal(vol.chunkState[22], ChunkState.Allocated);
    assert.ok(fs.statSync(file).size > 22 * MiB, 'chunk 22 landed in the placement file');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after writes on hot');

    await m.close();
    m = await openColdTierManager(dir, false);
    vol = m.openVolume('v');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after a restart');
    await migrateVolume(m, 'v', 'cold', { preserve: false });
    assert.equal(fs.statSync(file).size, 0, 'a finished move to cold releases the file');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after the move to cold');
  });
}
