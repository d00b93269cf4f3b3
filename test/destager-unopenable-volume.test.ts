// A cold volume the destager cannot open (its hot pool's directory gone, as
// when a disk drops out) must cost only that volume's destaging: its records
// stay in the journal, the other volumes' chunks still reach their stripes,
// and neither an explicit pass nor the interval's tick throws (from the
// timer, a throw ended the daemon). Once the pool is back, a pass takes the
// rest and every byte reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { coldVolumeOnHot1, openColdTierManager, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a volume that cannot be opened is skipped by destaging, logged, and taken once it opens again', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-destager-unopenable-', () => m!);
  m = await openColdTierManager(dir);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await m.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const want = { a: crypto.randomBytes(2 * MiB), b: crypto.randomBytes(2 * MiB) };
  for (const name of ['a', 'b'] as const) {
    const vol = m.openVolume(name);
    await writeVolume(vol, 0, want[name].subarray(0, 4096));
    await writeVolume(vol, MiB, want[name].subarray(MiB));
    // The rest of the first chunk as zeros, as written: only the first block and chunk 1 were.
    want[name].fill(0, 4096, MiB);
  }
  const ids = { a: m.meta.volumes.get('a')!.id, b: m.meta.volumes.get('b')!.id };
  // A restart: the journal replays both volumes' records; neither is open until something opens it.
  await m.close();
  m = await openColdTierManager(dir, false);
  const journal = m.cold!.journal;
  assert.deepEqual(journal.dirtyChunks(ids.a).sort(), [0, 1]);
  assert.deepEqual(journal.dirtyChunks(ids.b).sort(), [0, 1]);

  // hot-1 drops out.
  fs.renameSync(hot1, `${hot1}.gone`);
  const d = m.cold!.destager;
  // The interval's tick (chunk 1 of each volume is ripe, chunk 0 is not): no throw.
  await d.tick();
  assert.deepEqual(journal.dirtyChunks(ids.b), [0], "b's ripe chunk is destaged");
  // An explicit pass (the threshold's, drain's): no throw; b is drained, a waits.
  await d.kick();
  assert.deepEqual(journal.dirtyChunks(ids.b), [], 'b is destaged although a cannot be opened');
  assert.deepEqual(journal.dirtyChunks(ids.a).sort(), [0, 1], "a's records stay in the journal");
  assert.ok(d.errors >= 2, `each pass counted the volume it skipped (${d.errors})`);
  assert.match(journal.stalledReason ?? '', /cannot be opened.*hot-1/, 'the reason names the pool');

  // hot-1 is back: the next pass takes a's chunks.
  fs.renameSync(`${hot1}.gone`, hot1);
  await d.kick();
  assert.deepEqual(journal.dirtyChunks(ids.a), []);
  assert.equal(journal.bytesLive, 0);
  for (const name of ['a', 'b'] as const) {
    assert.ok((await readVolume(m.openVolume(name), 0, 2 * MiB)).equals(want[name]), `${name} reads back`);
  }
});
