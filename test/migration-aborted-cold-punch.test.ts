// A move to cold aborted with chunks still in the hot file frees the disk
// blocks of the ranges no chunk is in any more (destaged chunks, a trimmed
// one) by punching holes, before the tier reverts: st_blocks drops by those
// chunks and no more, the file keeps its size, the live chunks' bytes stay on
// disk. Client writes racing the abort (journal while cold, then the file,
// into punched ranges too) land; every byte reads back, also after a
// restart. In preservation mode nothing is punched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { readFileRange } from './helpers/hot-warm.js';
import { firstDataOffset } from '../src/dataplane/volumes/seek-data.js';
import { openColdTierManager, raceBlockWrites, readVolume, restartManager, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
/** Trimmed (Discarded) before the move: the move leaves it, its stale bytes stay in the file. */
const TRIMMED = 2;
/** Progress is reported every 16 chunks: with one copy at a time, an abort there stops after exactly 16. */
const MOVED = 16;
/** Chunks the move destages before the abort: the first MOVED with data, in order (the trimmed one has none). */
const DESTAGED = Array.from({ length: CHUNKS }, (_, c) => c).filter((c) => c !== TRIMMED).slice(0, MOVED);
/** Dead in the file once the move stopped: the destaged chunks and the trimmed one. */
const DEAD = [...DESTAGED, TRIMMED].sort((a, b) => a - b);
/**
 * Where racing writes land: two dead chunks (journal while cold, then a
 * whole-chunk promote or zero-fill into a punched range) and the chunks left
 * in the file. The other dead chunks stay holes, which the test checks.
 */
const RACED_CHUNKS = [5, TRIMMED, ...Array.from({ length: CHUNKS - MOVED - 1 }, (_, i) => MOVED + 1 + i)];
/** st_blocks counts 512-byte units. */
const BLOCKS_PER_CHUNK = MiB / 512;

for (const preserve of [false, true]) {
  test(`a move to cold aborted with chunks left in the file ${preserve ? '(preservation mode) punches nothing' : 'punches the destaged and trimmed chunks: st_blocks drops by them only'}; racing writes land, every byte reads back, also after a restart`, async (t) => {
    let m: VolumeManager | null = null;
    const dir = tempDirClosing(t, 'couchestor-abort-cold-punch-', () => m!);
    m = await openColdTierManager(dir);
    await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
    let vol = m.openVolume('v');
    const file = m.pools.get('hot-0')!.volumeFile(vol.rec.id);
    const want = crypto.randomBytes(CHUNKS * MiB);
    await writeVolume(vol, 0, want);
    await vol.trim(TRIMMED * MiB, MiB, false);
    want.fill(0, TRIMMED * MiB, (TRIMMED + 1) * MiB);
    await vol.flush();
    const before = fs.statSync(file);
    assert.equal(before.size, CHUNKS * MiB);
    assert.ok(before.blocks >= CHUNKS * BLOCKS_PER_CHUNK, `the file holds ${before.blocks} blocks before the move`);

    // From the abort until the move has settled, a client writes 4 KiB
    // blocks all over the volume: to the journal while it is still cold, to
    // the file (punched ranges included) once it is hot again.
    let settled = false;
    let racing: Promise<number> | null = null;
    const raceWrites = () =>
      raceBlockWrites(
        vol,
        want,
        () => RACED_CHUNKS[crypto.randomInt(0, RACED_CHUNKS.length)]! * MiB + crypto.randomInt(0, MiB / 4096) * 4096,
        () => settled,
      );
    const ac = new AbortController();
    await assert.rejects(
      migrateVolume(m, 'v', 'cold', {
        preserve,
        signal: ac.signal,
        concurrency: 1,
        onProgress: (p) => {
          if (p.chunksDone < MOVED || ac.signal.aborted) return;
          ac.abort();
          racing = raceWrites();
        },
      }),
      (err: Error) => err instanceof MigrationAborted,
    );
    settled = true;
    assert.ok(racing !== null, 'the abort never fired');
    const raced = await racing!;
    assert.equal(vol.rec.tier, 'hot');
    const moved = [...vol.stripes.keys()];
    assert.ok(vol.chunksOnFile().length > 0, 'chunks were left in the file (else releaseFile truncates it, no punch)');

    await vol.flush();
    const after = fs.statSync(file);
    assert.equal(after.size, before.size, 'the punch changed the file size');
    assert.deepEqual(moved.filter((c) => !DESTAGED.includes(c)), [], 'chunks other than the expected ones went to stripes');
    // Dead chunks a racing write took back into the file since (at most the two RACED_CHUNKS among them).
    const refilled = DEAD.filter((c) => vol.chunkState[c] === ChunkState.Allocated);
    const holes = DEAD.filter((c) => !refilled.includes(c));
    const fd = fs.openSync(file, 'r');
    try {
      for (const c of holes) {
        const dataAt = await firstDataOffset(fd, c * MiB);
        if (preserve) assert.equal(dataAt, c * MiB, `preservation mode: chunk ${c}'s range lost its data`);
        else assert.ok(dataAt === -1 || dataAt >= (c + 1) * MiB, `chunk ${c}'s range is not a hole (data at ${dataAt})`);
      }
    } finally {
      fs.closeSync(fd);
    }
    if (preserve) {
      assert.ok(after.blocks >= before.blocks, `preservation mode: blocks ${before.blocks} -> ${after.blocks}`);
    } else {
      const freed = before.blocks - after.blocks;
      assert.ok(freed >= holes.length * BLOCKS_PER_CHUNK, `only ${freed} blocks freed for ${holes.length} punched chunks`);
      // The chunks left in the file kept their blocks, and their bytes on
      // disk (those with no journaled write on top, which reads overlay).
      const live = vol.chunksOnFile();
      assert.ok(after.blocks >= live.length * BLOCKS_PER_CHUNK, `${after.blocks} blocks for ${live.length} live chunks`);
      let checked = 0;
      for (const c of live) {
        if (m.cold!.journal.extents(vol.rec.id, c) !== undefined) continue;
        assert.ok(readFileRange(file, c * MiB, MiB).equals(want.subarray(c * MiB, (c + 1) * MiB)), `live chunk ${c}'s bytes on disk`);
        checked++;
      }
      t.diagnostic(`freed ${freed} blocks (${holes.length} chunks punched, ${refilled.length} refilled by ${raced} racing writes); ${checked} live chunks byte-checked on disk`);
    }
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after the aborted move');

    // Writes into punched ranges after the revert: a Cold chunk (promoted
    // whole into the file) and the trimmed one (zero-filled first).
    const coldChunk = moved.find((c) => vol.chunkState[c] === ChunkState.Cold)!;
    assert.notEqual(coldChunk, undefined);
    for (const c of [coldChunk, TRIMMED]) {
      const block = crypto.randomBytes(8192);
      block.copy(want, c * MiB + 4096);
      await writeVolume(vol, c * MiB + 4096, block);
      assert.equal(vol.chunkState[c], ChunkState.Allocated);
    }
    await vol.flush();
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after writes into punched ranges');

    ({ m, vol } = await restartManager(m, dir, 'v'));
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back after a restart');
    // And a finished move to hot then cold again still carries every byte.
    await migrateVolume(m, 'v', 'cold', { preserve: false });
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from cold');
  });
}
