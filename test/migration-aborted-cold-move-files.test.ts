// An aborted move to cold of a volume split over two pools' files (an
// earlier hot -> warm move aborted midway) closes the file whose chunks all
// went to stripes before the abort: deleted, or in preservation mode kept on
// disk until `volumes release`. The placement pool's file stays open (new
// writes go there again). Every byte reads back, also after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { openVolumeFiles } from './helpers/hot-warm.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 20;
/** Progress is reported every 16 chunks: with one copy at a time, an abort there stops after exactly 16. */
const MOVED = 16;

async function abortedMove(m: VolumeManager, to: 'warm' | 'cold', preserve: boolean): Promise<void> {
  const ac = new AbortController();
  await assert.rejects(
    migrateVolume(m, 'v', to, { preserve, signal: ac.signal, concurrency: 1, onProgress: (p) => p.chunksDone >= MOVED && ac.abort() }),
    (err: Error) => err instanceof MigrationAborted,
  );
}

for (const preserve of [false, true]) {
  test(`an aborted move to cold${preserve ? ' (preservation mode)' : ''} closes the other pool's file its chunks all left${preserve ? ', kept on disk until volumes release' : ' and deletes it'}; byte-exact, also after a restart`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-abort-cold-files-'));
    let m: VolumeManager | null = await openColdTierManager(dir);
    t.after(async () => {
      await m?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
    await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
    let vol = m.openVolume('v');
    const id = vol.rec.id;
    const want = crypto.randomBytes(CHUNKS * MiB);
    await writeVolume(vol, 0, want);
    await vol.flush();
    // Split: chunks 0-15 in warm-0's file, 16-19 in hot-0's (the placement again).
    await abortedMove(m, 'warm', false);
    assert.equal(vol.rec.poolName, 'hot-0');
    assert.deepEqual(vol.poolsInUse().map((p) => p.name).sort(), ['hot-0', 'warm-0']);
    const warmFile = m.pools.get('warm-0')!.volumeFile(id);
    // The move to cold destages chunks in order: warm-0's 16 first, then the abort.
    await abortedMove(m, 'cold', preserve);
    assert.equal(vol.rec.tier, 'hot');
    assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['hot-0'], 'only hot-0 holds chunks');
    assert.equal(vol.stripes.size, MOVED);
    assert.deepEqual(openVolumeFiles(dir, id), ['hot-0'], 'open data files after the aborted move to cold');
    assert.equal(fs.existsSync(warmFile), preserve, `warm-0's file on disk`);
    if (preserve) {
      await m.releasePreserved('v');
      assert.equal(fs.existsSync(warmFile), false, 'volumes release deleted the kept file');
    }
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after the aborted moves');
    // The volume still moves, and new writes land in the placement file.
    const block = crypto.randomBytes(4096);
    block.copy(want, 3 * MiB);
    await writeVolume(vol, 3 * MiB, block);
    await vol.flush();
    await m.close();
    m = await openColdTierManager(dir, false);
    vol = m.openVolume('v');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after a restart');
    await migrateVolume(m, 'v', 'cold', { preserve: false });
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after the move to cold');
  });
}
