// Review of 27b7ed5 (fsck sorts hot/warm volume files no chunk is in): the
// files of live volumes in the states a crash can leave them in are neither
// kept copies nor orphans: a volume split over hot-0 and warm-0 (a hot ->
// warm move interrupted), a cold volume with chunks still in its file (a move
// to cold interrupted), a cold volume with chunks promoted into a new pool's
// file (a move to hot aborted after some SWITCHes), a hot volume whose chunks
// are still all in stripes (a move to hot interrupted at once). Counted as
// a leftover: a cold volume's destaged-but-not-truncated file (RELEASE cut
// short; its record does not list it as kept); as kept: the old pool's file
// of a preserving warm -> hot move. fsck changes no
// file (name, size, inode, mtime) and no index entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fsck } from '../src/dataplane/fsck.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 4;

async function written(m: VolumeManager, name: string): Promise<{ vol: Volume; want: Buffer }> {
  await m.createVolume({ name, sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume(name);
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  return { vol, want };
}

/** name, size, inode and mtime of every file under each pool's volumes/. */
function volumeDirs(dir: string): string[] {
  const out: string[] = [];
  for (const pool of fs.readdirSync(dir).sort()) {
    const vdir = path.join(dir, pool, 'volumes');
    if (!fs.existsSync(vdir)) continue;
    for (const n of fs.readdirSync(vdir).sort()) {
      const st = fs.statSync(path.join(vdir, n));
      out.push(`${pool}/${n}:${st.size}:${st.ino}:${st.mtimeMs}`);
    }
  }
  return out;
}

test('fsck: files of live volumes mid-move (split hot/warm, cold with chunks in its file, cold with promoted chunks in a new pool, hot still in stripes) are neither kept nor orphans; kept copies counted; read-only', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-fsck-live-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  const hot = m.pools.get('hot-0')!;
  const warm = m.pools.get('warm-0')!;
  const models = new Map<string, Buffer>();

  // split: hot -> warm interrupted after chunks 0 and 1 were switched.
  {
    const { vol, want } = await written(m, 'split');
    models.set('split', want);
    await vol.setTier('warm', warm);
    await vol.ensurePromoted(0, true);
    await vol.ensurePromoted(1, true);
    assert.deepEqual(vol.poolsInUse().map((p) => p.name).sort(), ['hot-0', 'warm-0']);
  }
  // coldmid: hot -> cold interrupted after chunk 0 was destaged.
  {
    const { vol, want } = await written(m, 'coldmid');
    models.set('coldmid', want);
    await vol.setTier('cold');
    await vol.destageChunk(0, true);
    assert.equal(vol.chunkState[0], ChunkState.Cold);
    assert.equal(vol.chunkState[1], ChunkState.Allocated);
  }
  // coldpromoted: cold (file released), then cold -> warm aborted after two
  // chunks were switched into warm-0's file: the tier is back to cold with
  // hot-0 as its placement, chunks 0 and 1 Allocated in warm-0.
  {
    const { vol, want } = await written(m, 'coldpromoted');
    models.set('coldpromoted', want);
    await migrateVolume(m, 'coldpromoted', 'cold', { preserve: false });
    assert.equal(fs.statSync(hot.volumeFile(vol.rec.id)).size, 0);
    await vol.setTier('warm', warm);
    await vol.ensurePromoted(0, true);
    await vol.ensurePromoted(1, true);
    await vol.setTier('cold', hot);
    assert.equal(vol.rec.poolName, 'hot-0');
    assert.deepEqual(vol.chunksOnFile(), [0, 1]);
  }
  // hotstripes: cold -> hot switched, no chunk promoted yet.
  {
    const { vol, want } = await written(m, 'hotstripes');
    models.set('hotstripes', want);
    await migrateVolume(m, 'hotstripes', 'cold', { preserve: false });
    await vol.setTier('hot', hot);
    assert.equal(vol.chunksOnFile().length, 0);
  }
  // Left over: a cold volume whose chunks all went to stripes, RELEASE not
  // run, and no preserving move recorded the file as kept (keptFilePools).
  {
    const { vol, want } = await written(m, 'coldkept');
    models.set('coldkept', want);
    await vol.setTier('cold');
    for (let c = 0; c < CHUNKS; c++) await vol.destageChunk(c, true);
    assert.equal(vol.chunksOnFile().length, 0);
  }
  // Kept: warm -> hot in preservation mode keeps warm-0's file.
  {
    const { want } = await written(m, 'preswarm');
    models.set('preswarm', want);
    await migrateVolume(m, 'preswarm', 'warm', { preserve: false });
    await migrateVolume(m, 'preswarm', 'hot', { preserve: true });
    assert.ok(fs.existsSync(warm.volumeFile(m.openVolume('preswarm').rec.id)));
  }
  const filesBefore = volumeDirs(dir);
  const indexBefore = JSON.stringify(m.listVolumes().map((v) => [v, [...m.meta.volumeChunks(v.id)]]));
  const lines: string[] = [];
  const r = await fsck(m, (l) => lines.push(l));
  assert.equal(r.badChunkCount, 0, lines.join('\n'));
  assert.deepEqual(r.badVolumes, []);
  assert.equal(r.orphanVolumeFileCount, 0, lines.join('\n'));
  const kept = lines.filter((l) => /kept copy/.test(l)).sort();
  assert.equal(kept.length, 1, kept.join('\n'));
  assert.match(kept[0]!, /^volume preswarm: pool warm-0 file \(4194304 bytes\)/);
  assert.equal(r.preservedVolumeFiles, 1);
  assert.equal(r.preservedVolumeFileBytes, CHUNKS * MiB);
  const leftovers = lines.filter((l) => /left by a RELEASE cut short/.test(l));
  assert.equal(leftovers.length, 1, lines.join('\n'));
  assert.match(leftovers[0]!, /^volume coldkept: pool hot-0 file \(4194304 bytes\) holds no chunk and is not kept/);
  assert.equal(r.leftoverVolumeFiles, 1);
  assert.equal(r.leftoverVolumeFileBytes, CHUNKS * MiB);
  assert.deepEqual(volumeDirs(dir), filesBefore, 'fsck changed a volume file');
  assert.equal(JSON.stringify(m.listVolumes().map((v) => [v, [...m.meta.volumeChunks(v.id)]])), indexBefore, 'fsck changed the index');
  for (const [name, want] of models) assert.ok((await readVolume(m.openVolume(name), 0, CHUNKS * MiB)).equals(want), `${name} reads back`);
});
