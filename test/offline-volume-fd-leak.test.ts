// A volume whose file fails fstat (EIO from a failing disk) cannot be
// opened; each attempt (the destager retries every tick) must close the
// descriptors it opened, or a daemon left running leaks one per tick.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

/** Descriptors of this process open on `file` (from /proc/self/fd). */
function fdsOn(file: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === file) n++;
    } catch {
      // The readdir's own descriptor is gone by now.
    }
  }
  return n;
}

test('a volume whose file fails fstat with EIO is refused without leaking a descriptor per attempt', async (t) => {
  let m: VolumeManager | null = null;
  const realFstatSync = fs.fstatSync;
  const dir = tempDirClosing(t, 'couchestor-offline-fd-', () => m!, () => (fs.fstatSync = realFstatSync));
  m = await openColdTierManager(dir);
  await m.createVolume({ name: 'a', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  await writeVolume(m.openVolume('a'), 0, Buffer.alloc(4096, 1));
  const file = m.pools.get('hot-0')!.volumeFile(m.meta.volumes.get('a')!.id);
  // A restart: a is not open, its record is in the journal, the destager will try to open it.
  await m.close();
  m = await openColdTierManager(dir, false);
  assert.equal(fdsOn(file), 0, 'premise: nothing holds the file after the restart');
  // The disk under a's file fails: fstat of a descriptor on it answers EIO (the VM has no
  // device-mapper to make a real one; the fs module object is the seam the daemon calls through).
  fs.fstatSync = ((fd: number, ...rest: unknown[]) => {
    if (typeof fd === 'number' && fs.readlinkSync(`/proc/self/fd/${fd}`) === file) {
      throw Object.assign(new Error(`EIO: i/o error, fstat`), { code: 'EIO', errno: -5, syscall: 'fstat' });
    }
    return (realFstatSync as (...a: unknown[]) => fs.Stats)(fd, ...rest);
  }) as typeof fs.fstatSync;
  for (let i = 0; i < 5; i++) assert.throws(() => m!.openVolume('a'), { code: 'EIO' });
  // The destager's ticks retry it too.
  for (let i = 0; i < 3; i++) await m.cold!.destager.kick();
  assert.equal(fdsOn(file), 0, 'every failed open closed what it opened');
  assert.deepEqual(m.cold!.journal.dirtyChunks(m.meta.volumes.get('a')!.id), [0], "a's record stays in the journal");
  // The disk is back: the volume opens and its record is destaged.
  fs.fstatSync = realFstatSync;
  await m.cold!.destager.drain();
  assert.deepEqual(m.cold!.journal.dirtyChunks(m.meta.volumes.get('a')!.id), [], "a opened: its record is destaged");
  // Lent to the destager, given back with its last record destaged: closed (its descriptor's close completes after).
  const deadline = Date.now() + 5_000;
  while (fdsOn(file) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(fdsOn(file), 0, 'nothing holds the volume once its record is destaged: its descriptor is closed');
  m.openVolume('a');
  assert.equal(fdsOn(file), 1, 'opened again, it holds one descriptor');
});
