// A move back into a pool whose file a preserving move kept (Volume.openFile)
// empties that file. It did so with O_TRUNC in fs.openSync: the file
// system frees the file's extents inside that call, on the event loop, so
// every client of the daemon waited (~0.12-0.18 s per 512 MiB of kept file
// on this VM's ext4, as RELEASE's delete did before it moved to the
// threadpool). Now the file is opened without O_TRUNC and emptied with
// fs.ftruncate (threadpool). Checked by what reaches the file system on the
// event loop during the switch: no synchronous call may truncate the kept
// file; the file is empty afterwards and the volume reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a move back into a kept pool file empties it off the event loop (no O_TRUNC in a synchronous open), and the volume reads back', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-openfile-trunc-'));
  const m = VolumeManager.open(path.join(dir, 'data'));
  t.after(async () => {
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (const tier of ['hot', 'warm'] as const) await m.putPool({ name: `${tier}-0`, path: path.join(dir, `${tier}-0`), tier, capacityBytes: 256 * MiB, labels: { tier } });
  const hot = m.pools.get('hot-0')!;
  const warm = m.pools.get('warm-0')!;
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  // A preserving move to warm: every chunk copied, hot-0's file kept with its bytes.
  await vol.setTier('warm', warm);
  for (const c of vol.chunksOffFile()) await vol.ensurePromoted(c, true);
  assert.deepEqual((await vol.releaseOtherFiles(true)).map((p) => p.name), ['hot-0']);
  const kept = hot.volumeFile(vol.rec.id);
  assert.equal(fs.statSync(kept).size, 8 * MiB, 'the kept file holds its bytes');

  // Synchronous calls that would truncate the kept file on the event loop.
  const syncTruncates: string[] = [];
  const realOpenSync = fs.openSync;
  const realFtruncateSync = fs.ftruncateSync;
  const realTruncateSync = fs.truncateSync;
  const keptIno = fs.statSync(kept).ino;
  const isKept = (p: fs.PathLike) => path.resolve(String(p)) === kept;
  fs.openSync = ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
    const truncates = typeof flags === 'number' ? (flags & fs.constants.O_TRUNC) !== 0 : typeof flags === 'string' && flags.startsWith('w');
    if (truncates && isKept(p) && (fs.statSync(p, { throwIfNoEntry: false })?.size ?? 0) > 0) syncTruncates.push(`openSync(${String(flags)})`);
    return realOpenSync(p, flags ?? "r", mode);
  }) as typeof fs.openSync;
  fs.ftruncateSync = ((fd: number, len?: number) => {
    if (fs.fstatSync(fd).ino === keptIno && fs.fstatSync(fd).size > 0) syncTruncates.push('ftruncateSync');
    return realFtruncateSync(fd, len);
  }) as typeof fs.ftruncateSync;
  fs.truncateSync = ((p: fs.PathLike, len?: number) => {
    if (isKept(p)) syncTruncates.push('truncateSync');
    return realTruncateSync(p, len);
  }) as typeof fs.truncateSync;
  try {
    await vol.setTier('hot', hot);
  } finally {
    fs.openSync = realOpenSync;
    fs.ftruncateSync = realFtruncateSync;
    fs.truncateSync = realTruncateSync;
  }
  assert.deepEqual(syncTruncates, [], 'the kept file was emptied by a synchronous call (on the event loop)');
  assert.equal(fs.statSync(kept).size, 0, 'the kept file was emptied');
  // Chunks stay on warm until copied back; a new write lands in the emptied hot file.
  const block = crypto.randomBytes(4096);
  await writeVolume(vol, 3 * MiB + 4096, block);
  block.copy(want, 3 * MiB + 4096);
  for (const c of vol.chunksOffFile()) await vol.ensurePromoted(c, true);
  await vol.flush();
  assert.ok((await readVolume(vol, 0, 8 * MiB)).equals(want), 'the volume reads back');
});
