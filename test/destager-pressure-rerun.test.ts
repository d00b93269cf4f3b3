// The journal's threshold asks for a full destage pass at every append past
// it; asked while a pass runs, the next pass starts only if the journal is
// still past the threshold when the running one ends (destager.ts
// pressureAgain). Before, it always started: a full pass rewriting a 1 MiB
// stripe for each chunk written during the last one, a few KiB each (~40% of
// the stripes of a sustained qd32 run, docs/cold-writes.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const RECORD_BYTES = 64 * 1024;

test('an append past the threshold during a pass starts no second full pass once the first one brought the journal below it', async (t) => {
  // 8 MiB journal, threshold 50%: the pass starts once 4 MiB of records are live.
  const { m } = await tempManager(t, 'couchestor-destager-pressure-', (dir) => openColdTierManager(dir, true, { journalCapacityBytes: 8 * MiB, thresholdPercent: 50 }));
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const want = Buffer.alloc(8 * MiB);
  const put = async (at: number, data: Buffer) => {
    data.copy(want, at);
    await writeVolume(vol, at, data);
  };
  // The first chunk the pass destages: the pass has taken its list, nothing is
  // released yet, so a write now (to chunk 7, in no list) is an append past the threshold.
  const late = crypto.randomBytes(4096);
  let lateWrite: Promise<void> | null = null;
  const drainChunk = vol.drainJournalChunk.bind(vol);
  vol.drainJournalChunk = (c: number) => {
    if (lateWrite === null) {
      lateWrite = put(7 * MiB, late);
      assert.ok(journal.bytesLive >= 4 * MiB, `the late write is past the threshold (${journal.bytesLive} bytes live)`);
    }
    return drainChunk(c);
  };
  // 64 records of 64 KiB (and 40-byte headers) over chunks 0-5: the last crosses 4 MiB and starts the pass.
  for (let i = 0; i < 64; i++) await put((i % 6) * MiB + Math.floor(i / 6) * RECORD_BYTES, crypto.randomBytes(RECORD_BYTES));
  assert.ok(lateWrite !== null, 'the threshold started a pass');
  await lateWrite;
  await d.settled();
  // The pass destaged chunks 0-5 (those it listed); chunk 7's 4 KiB waits in the journal for a later pass.
  assert.deepEqual(journal.dirtyChunks(vol.rec.id), [7]);
  assert.equal(journal.bytesLive, 4096 + 40);
  assert.equal(d.stripesDestaged, 6);
  assert.deepEqual(await readVolume(vol, 0, 8 * MiB), want);
  // Nothing is lost to the wait: a drain takes it.
  await d.drain();
  assert.deepEqual(journal.dirtyChunks(vol.rec.id), []);
  assert.deepEqual(await readVolume(vol, 0, 8 * MiB), want);
});
