// Writers waiting for journal room are always followed by a destage pass
// (review of 6c5526d). The threshold alone asked for passes: a journal full
// while under it (1 MiB records in a 4 MiB journal at 90%: 3 records are
// 3 MiB + 120 bytes, under the 3.6 MiB threshold, and a 4th does not fit)
// got none, and its writer waited for the interval timer (an hour here) or
// failed with ENOSPC after JOURNAL_FULL_TIMEOUT_MS (30 s). And several
// writers filling a small journal while passes run (the pressure path of
// 6c5526d, judged at each pass's end) all complete and read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';

const MiB = 1024 * 1024;
/** A write not done by then waits for a pass nothing will start (the journal's own bound is 30 s). */
const HANG_MS = 8_000;

async function noHang<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done in ${HANG_MS} ms (a writer waits for journal room and no pass runs)`)), HANG_MS);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

test('a write waiting for room in a journal full under its threshold gets a pass', async (t) => {
  const { m } = await tempManager(t, 'couchestor-wait-room-', (dir) => openColdTierManager(dir, true, { journalCapacityBytes: 4 * MiB, thresholdPercent: 90 }));
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const journal = m.cold!.journal;
  const want = crypto.randomBytes(8 * MiB);
  // Three writers, 1 MiB (a whole chunk) at a time: the 4th record waits for room.
  let peakWaiting = 0;
  const writer = async (first: number) => {
    for (let c = first; c < 8; c += 3) {
      const w = writeVolume(vol, c * MiB, want.subarray(c * MiB, (c + 1) * MiB));
      peakWaiting = Math.max(peakWaiting, journal.writersWaitingForRoom);
      await w;
    }
  };
  await noHang('1 MiB writes into a 4 MiB journal', Promise.all([writer(0), writer(1), writer(2)]));
  assert.ok(peakWaiting > 0 || m.cold!.destager.stripesDestaged > 0, 'some write waited for room');
  await m.cold!.destager.settled();
  assert.equal(journal.writersWaitingForRoom, 0);
  assert.ok(m.cold!.destager.stripesDestaged >= 4, `passes destaged ${m.cold!.destager.stripesDestaged} stripes`);
  assert.deepEqual(await readVolume(vol, 0, 8 * MiB), want);
});

test('several writers filling a small journal while passes run all complete and read back', async (t) => {
  // 4 MiB journal, threshold 50%: passes start at 2 MiB live, and writers keep appending (and waiting) while they run.
  const { m } = await tempManager(t, 'couchestor-wait-room-many-', (dir) => openColdTierManager(dir, true, { journalCapacityBytes: 4 * MiB, thresholdPercent: 50 }));
  const SIZE = 8 * MiB;
  await m.createVolume({ name: 'v', sizeBytes: SIZE, tier: 'cold' });
  const vol: Volume = m.openVolume('v');
  const journal = m.cold!.journal;
  const want = Buffer.alloc(SIZE);
  let peakWaiting = 0;
  let bytes = 0;
  // 4 writers, each its own 2 MiB; records of 4 KiB to 256 KiB (4 KiB aligned), 24 MiB in all.
  const writer = async (w: number) => {
    const base = w * 2 * MiB;
    for (let n = 0; bytes < 24 * MiB; n++) {
      const len = 4096 * (1 + crypto.randomInt(64));
      const at = base + 4096 * crypto.randomInt((2 * MiB - len) / 4096 + 1);
      const data = crypto.randomBytes(len);
      data.copy(want, at);
      bytes += len;
      const p = writeVolume(vol, at, data);
      peakWaiting = Math.max(peakWaiting, journal.writersWaitingForRoom);
      await p;
    }
  };
  await noHang('4 writers, 24 MiB through a 4 MiB journal', Promise.all([0, 1, 2, 3].map(writer)));
  await m.cold!.destager.settled();
  assert.equal(journal.writersWaitingForRoom, 0);
  assert.ok(m.cold!.destager.stripesDestaged > 0);
  assert.deepEqual(await readVolume(vol, 0, SIZE), want);
  await m.cold!.destager.drain();
  assert.deepEqual(journal.dirtyVolumes(), []);
  assert.deepEqual(await readVolume(vol, 0, SIZE), want);
  t.diagnostic(`peak writers waiting for room ${peakWaiting}, stripes destaged ${m.cold!.destager.stripesDestaged}`);
});
