// The destager's interval pass is lazy (destager.ts tick()): while writes
// keep coming it destages only chunks with at least a chunk's worth of
// journaled bytes, everything once the journal has been idle for a tick or
// every FULL_PASS_EVERY_INTERVALS ticks, and an explicit kick (the journal's
// threshold, drain) still destages everything. Data reads back throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { FULL_PASS_EVERY_INTERVALS } from '../src/dataplane/journal/destager.js';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

test('timer passes defer partly written chunks while writes come, take ripe ones, and drain an idle journal', async (t) => {
  const { m } = await tempManager(t, 'couchestor-destager-lazy-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const id = vol.rec.id;
  const want = Buffer.alloc(4 * MiB);
  const put = async (at: number, data: Buffer) => {
    data.copy(want, at);
    await writeVolume(vol, at, data);
  };
  const dirty = () => journal.dirtyChunks(id).sort((a, b) => a - b);

  // Small writes to chunks 0 and 1: the first tick sees new records and nothing ripe.
  await put(0, crypto.randomBytes(BLOCK_BYTES));
  await put(MiB + 8 * BLOCK_BYTES, crypto.randomBytes(BLOCK_BYTES));
  await d.tick();
  assert.equal(d.stripesDestaged, 0);
  assert.equal(d.ticksDeferred, 1);
  assert.deepEqual(dirty(), [0, 1]);

  // Chunk 2 written whole (ripe) while chunk 0 keeps getting small writes: only chunk 2 goes.
  await put(2 * MiB, crypto.randomBytes(MiB));
  await put(4 * BLOCK_BYTES, crypto.randomBytes(BLOCK_BYTES));
  await d.tick();
  assert.equal(d.stripesDestaged, 1);
  assert.deepEqual(dirty(), [0, 1]);
  assert.deepEqual(await readVolume(vol, 0, 4 * MiB), want);

  // No record since the last tick: the journal is idle, everything is destaged.
  await d.tick();
  assert.equal(d.stripesDestaged, 3);
  assert.deepEqual(dirty(), []);
  assert.equal(journal.bytesLive, 0);
  assert.deepEqual(await readVolume(vol, 0, 4 * MiB), want);
});

test('a steady trickle of small writes is destaged within FULL_PASS_EVERY_INTERVALS ticks; an explicit kick takes everything', async (t) => {
  const { m } = await tempManager(t, 'couchestor-destager-bound-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'v', sizeBytes: 2 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const want = Buffer.alloc(2 * MiB);
  let ticks = 0;
  // A write before every tick: never idle, never ripe (a few blocks in chunk 0).
  while (d.stripesDestaged === 0) {
    const block = crypto.randomBytes(BLOCK_BYTES);
    const at = (ticks % 8) * BLOCK_BYTES;
    block.copy(want, at);
    await writeVolume(vol, at, block);
    await d.tick();
    ticks++;
    assert.ok(ticks <= FULL_PASS_EVERY_INTERVALS, `still not destaged after ${ticks} ticks`);
  }
  assert.equal(ticks, FULL_PASS_EVERY_INTERVALS);
  assert.equal(journal.bytesLive, 0);
  assert.deepEqual(await readVolume(vol, 0, 2 * MiB), want);

  // What the journal's threshold calls (and drain): every dirty chunk, ripe or not.
  const block = crypto.randomBytes(BLOCK_BYTES);
  block.copy(want, MiB);
  await writeVolume(vol, MiB, block);
  await d.kick();
  assert.equal(journal.bytesLive, 0);
  assert.equal(d.stripesDestaged, 2);
  assert.deepEqual(await readVolume(vol, 0, 2 * MiB), want);
});
