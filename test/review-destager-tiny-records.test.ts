// Review of 57e4bfc (lazy timer pass): a chunk's journal extents are all
// overlaid on every read of it (applyExtents) and each is held in memory, so
// a chunk deferred as "not ripe" must not collect an unbounded list: tiny
// writes (NBD allows 1 byte) count their whole journal record, header too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { JOURNAL_HEADER_BYTES } from '../src/dataplane/journal/journal.js';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
/** Writes in flight at once (a client at queue depth 64). */
const DEPTH = 64;

test('one-byte writes: a timer tick leaves no chunk with more extents than a chunk of journal records holds', async (t) => {
  const { m } = await tempManager(t, 'couchestor-rv-destager-tiny-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'v', sizeBytes: 2 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const id = vol.rec.id;
  const chunkBytes = vol.rec.chunkSizeBytes;
  const want = Buffer.alloc(2 * MiB);
  // A chunk's worth of journal records, and some: each record is a header and 1 byte.
  const bound = Math.floor(chunkBytes / JOURNAL_HEADER_BYTES);
  const writes = bound + 4096;
  const bytes = crypto.randomBytes(writes);
  for (let i = 0; i < writes; i += DEPTH) {
    const batch: Promise<void>[] = [];
    for (let j = i; j < Math.min(writes, i + DEPTH); j++) {
      // Spread over the chunk (distinct bytes, most written once).
      const at = (j * 4099) % chunkBytes;
      want[at] = bytes[j]!;
      batch.push(writeVolume(vol, at, bytes.subarray(j, j + 1)));
    }
    await Promise.all(batch);
  }
  // Chunk 1 stays unjournaled: the peer a read of chunk 0 is compared with.
  assert.equal(journal.extents(id, 0)?.length, writes);
  const timeRead = async (at: number) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 20; i++) await readVolume(vol, at, 4096);
    return Number(process.hrtime.bigint() - t0) / 20 / 1e6;
  };
  const before = { chunk0Ms: await timeRead(0), chunk1Ms: await timeRead(MiB) };
  // Writes came since the last tick (none before): a lazy, not an idle, tick.
  await d.tick();
  const left = journal.extents(id, 0)?.length ?? 0;
  t.diagnostic(`4 KiB read with ${writes} extents: ${before.chunk0Ms.toFixed(3)} ms (unjournaled chunk ${before.chunk1Ms.toFixed(3)} ms); extents left after the tick: ${left}`);
  assert.ok(left <= bound, `chunk 0 keeps ${left} journal extents after a timer tick (${journal.bytesLive} live journal bytes), more than the ${bound} a chunk of records holds`);
  assert.deepEqual(await readVolume(vol, 0, 2 * MiB), want);
  await d.drain();
  assert.equal(journal.bytesLive, 0);
  assert.deepEqual(await readVolume(vol, 0, 2 * MiB), want);
});
