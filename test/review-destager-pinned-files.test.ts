// Review of 57e4bfc (lazy timer pass): journal files are removed only once
// every record in them is destaged, and the threshold counts live record
// bytes. Whole-chunk writes (ripe, destaged every tick) keep live bytes low
// while a few small writes (unripe, deferred) keep every file they landed in
// on disk: the timer pass must bound the files so pinned, not only live bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { FULL_PASS_EVERY_INTERVALS } from '../src/dataplane/journal/destager.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const COLD_POOLS = 6;
const JOURNAL_CAPACITY_BYTES = 64 * MiB;
/** Whole chunks written between two ticks: below the 50% threshold, so only the timer destages. */
const RIPE_CHUNKS_PER_TICK = 24;

test('ripe chunks streaming beside a few small writes: the journal files kept on disk stay within capacity + one file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-destager-pinned-'));
  const m = VolumeManager.open(path.join(dir, 'meta'));
  t.after(async () => {
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 2048 * MiB, labels: { tier: 'hot' } });
  for (let i = 0; i < COLD_POOLS; i++) {
    await m.putPool({ name: `cold-${i}`, path: path.join(dir, `cold-${i}`), tier: 'cold', capacityBytes: 2048 * MiB, labels: { tier: 'cold' } });
  }
  // The timer never fires by itself: the test steps it with tick().
  m.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, COLD_POOLS), { intervalMs: 3_600_000, thresholdPercent: 50, concurrency: 2, journalCapacityBytes: JOURNAL_CAPACITY_BYTES });
  await m.createVolume({ name: 'v', sizeBytes: (RIPE_CHUNKS_PER_TICK + 1) * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const d = m.cold!.destager;
  const journal = m.cold!.journal;
  const id = vol.rec.id;
  const want = Buffer.alloc((RIPE_CHUNKS_PER_TICK + 1) * MiB);
  const put = async (at: number, data: Buffer) => {
    data.copy(want, at);
    await writeVolume(vol, at, data);
  };
  /** Journal files holding a live record: none of them can be removed. */
  const pinnedFiles = () => {
    const nos = new Set<number>();
    for (const c of journal.dirtyChunks(id)) for (const e of journal.extents(id, c) ?? []) nos.add(e.fileNo);
    return nos.size;
  };
  const boundBytes = JOURNAL_CAPACITY_BYTES + journal.fileBytes;
  let mostPinned = 0;
  let newestFileNo = 0;
  for (let i = 1; i < FULL_PASS_EVERY_INTERVALS; i++) {
    // A small write to chunk 0 (a file system's metadata), then whole chunks 1..N (its data).
    await put(((i * 7) % 256) * BLOCK_BYTES, crypto.randomBytes(BLOCK_BYTES));
    for (let c = 1; c <= RIPE_CHUNKS_PER_TICK; c++) await put(c * MiB, crypto.randomBytes(MiB));
    assert.ok(journal.bytesLive < (JOURNAL_CAPACITY_BYTES * 50) / 100, 'premise: the threshold is not passed');
    const last = journal.extents(id, RIPE_CHUNKS_PER_TICK)!;
    newestFileNo = last[last.length - 1]!.fileNo;
    await d.tick();
    mostPinned = Math.max(mostPinned, pinnedFiles());
    assert.ok(
      pinnedFiles() * journal.fileBytes <= boundBytes,
      `after tick ${i}: ${pinnedFiles()} journal files of ${journal.fileBytes / MiB} MiB kept on disk for ${journal.bytesLive} live bytes (capacity ${JOURNAL_CAPACITY_BYTES / MiB} MiB)`,
    );
  }
  // Premise: the files did rotate (the test wrote several files' worth), and the ripe chunks went every tick.
  assert.ok(newestFileNo >= 4, `journal files rotated up to no ${newestFileNo}`);
  assert.ok(d.stripesDestaged >= RIPE_CHUNKS_PER_TICK * (FULL_PASS_EVERY_INTERVALS - 1));
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
  await d.drain();
  assert.equal(journal.bytesLive, 0);
  assert.deepEqual(await readVolume(vol, 0, want.length), want);
  t.diagnostic(`most journal files pinned after a tick: ${mostPinned}`);
});
