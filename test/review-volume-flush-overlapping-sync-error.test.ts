// Review of 9c1c962 (pre-existing, found there): two fdatasyncs of one volume
// file that overlap (a FLUSH's and a chunk copy's, or two chunk copies' into
// one move target) share the file's writeback error. The kernel reports it to
// one of them only (errseq, once per open file); the other returns 0 though the
// pages it waited for were dropped. The one that got 0 must not report its
// writes durable until the overlapping one has returned: a FLUSH resolved, and
// a copy SWITCHed its chunk to bytes that were never written.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeFailed } from '../src/dataplane/errors.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { openColdTierManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

/**
 * A hot volume of 4 chunks moving to warm-0, chunk 0 already copied there and
 * flushed; returns it and the warm file's path.
 */
async function movingVolume(t: TestContext): Promise<{ m: VolumeManager; vol: Volume; warmFile: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rvfl-err-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, crypto.randomBytes(4 * MiB));
  await vol.flush();
  const warm = m.pools.get('warm-0')!;
  await vol.setTier('warm', warm);
  await vol.ensurePromoted(0, true);
  await vol.flush();
  return { m, vol, warmFile: fs.realpathSync(warm.volumeFile(vol.rec.id)) };
}

/**
 * From now on, the first fdatasync of `file` gets EIO, returned only after
 * the next fdatasync of it (which succeeds) has returned and its caller has
 * run to its next macrotask: the kernel gave the shared error to the first.
 */
function firstSyncTakesTheError(t: TestContext, file: string): { held: Promise<void> } {
  const real = fs.fdatasync;
  t.after(() => {
    fs.fdatasync = real;
  });
  let heldCb: ((err: NodeJS.ErrnoException | null) => void) | null = null;
  let heldIssued!: () => void;
  const held = new Promise<void>((r) => (heldIssued = r));
  let state: 'first' | 'second' | 'done' = 'first';
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    let name: string;
    try {
      name = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      name = '';
    }
    if (name !== file || state === 'done') return real(fd, cb);
    if (state === 'first') {
      state = 'second';
      heldCb = cb;
      heldIssued();
      return;
    }
    state = 'done';
    real(fd, (err) => {
      cb(err);
      const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 });
      setImmediate(() => heldCb!(eio));
    });
  }) as typeof fs.fdatasync;
  return { held };
}

test('a FLUSH whose fdatasync returned 0 while a chunk copy\'s fdatasync of the same file took the EIO fails, not resolves', async (t) => {
  const { vol, warmFile } = await movingVolume(t);
  // A write into the warm file (chunk 0): the FLUSH below must make it durable.
  await writeVolume(vol, 4096, crypto.randomBytes(4096));
  const { held } = firstSyncTakesTheError(t, warmFile);
  const copy = vol.ensurePromoted(1, true).then(
    () => 'switched',
    (err: Error) => err,
  );
  await held; // the copy's fdatasync of the warm file is running
  const flushed = await vol.flush().then(
    () => 'resolved',
    (err: Error) => err,
  );
  assert.ok(flushed instanceof VolumeFailed, `the FLUSH must fail: the writeback error of its write went to the copy's fdatasync (got ${String(flushed)})`);
  assert.ok((await copy) instanceof VolumeFailed, 'the copy fails');
  await assert.rejects(vol.flush(), VolumeFailed);
});

test('two chunk copies into one target: the one whose fdatasync returned 0 while the other took the EIO does not SWITCH', async (t) => {
  const { vol, warmFile } = await movingVolume(t);
  const { held } = firstSyncTakesTheError(t, warmFile);
  const copies = [1, 2].map((c) =>
    vol.ensurePromoted(c, true).then(
      () => 'switched',
      (err: Error) => err,
    ),
  );
  await held;
  const outcomes = await Promise.all(copies);
  for (const [i, o] of outcomes.entries()) assert.ok(o instanceof VolumeFailed, `copy of chunk ${i + 1}: must fail (got ${String(o)})`);
  for (const c of [1, 2]) assert.equal(vol.chunkPool(c).name, 'hot-0', `chunk ${c} stays in its source file: its copy may not be on disk`);
});
