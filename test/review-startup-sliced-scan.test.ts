// Review of the daemon's sliced start-up scan (daemon.ts highestDestagedSeqSliced,
// e6d9b71) against VolumeManager.startColdTier's own loop (eb81a87): the figure the
// journal numbers new writes above. Real LMDB index, journal, destager, stripe store.
// Coverage, not a fix: all pass on e6d9b71. Checked to fail with the scan stopping after one
// slice per volume (the flushed write is then lost after a restart), with the scan's error
// swallowed, and with openManager not closing the index on a failed start.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { loadConfig, type DaemonConfig } from '../src/config.js';
import { highestDestagedSeqSliced, openManager, START_SCAN_SLICE_ENTRIES } from '../src/daemon.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

/** What startColdTier's loop computes (eb81a87 keeps it for callers passing no figure): every listed volume's entries, in one go. */
function loopFigure(m: VolumeManager): number {
  let highest = 0;
  for (const v of m.meta.listVolumes()) for (const { entry } of m.meta.volumeChunks(v.id)) highest = Math.max(highest, entry.destagedSeq ?? 0);
  return highest;
}

function tempDir(t: TestContext, prefix: string, opened: VolumeManager[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(async () => {
    for (const m of opened) await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Entry counts around the slice sizes tried: empty, one, a slice less/exactly/more, two slices exactly. */
const COUNTS = [0, 1, 2, 6, 7, 8, 14, 1023, 1024, 1025, 2048];

test('the sliced scan equals the loop over every layout: volumes of 0..2048 entries (slice multiples, one off), adjacent ids, deleted volumes, any slice size', async (t) => {
  const opened: VolumeManager[] = [];
  const dir = tempDir(t, 'couchestor-review-startup-scan-', opened);
  const m = await openManager(loadConfig(dir), { coldTier: false });
  opened.push(m);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          entries: fc.oneof(fc.constantFrom(...COUNTS), fc.integer({ min: 0, max: 2100 })),
          /** Where this volume's highest seq sits: first entry, last, a slice boundary of 7/1024, anywhere. */
          highestAt: fc.oneof(fc.constantFrom('first', 'last', 'b7', 'b1024'), fc.nat()),
          highest: fc.integer({ min: 1, max: 2 ** 40 }),
          deleted: fc.boolean(),
        }),
        { minLength: 0, maxLength: 5 },
      ),
      fc.oneof(fc.constantFrom(1, 2, 3, 7, 1024, START_SCAN_SLICE_ENTRIES), fc.integer({ min: 1, max: 2200 })),
      async (vols, sliceEntries) => {
        run++;
        const recs = [];
        for (const [i, v] of vols.entries()) {
          const rec = await m.createVolume({ name: `r${run}-${i}`, sizeBytes: 4 * MiB, pool: 'hot-0' });
          recs.push(rec);
          const at =
            v.entries === 0 ? -1
            : v.highestAt === 'first' ? 0
            : v.highestAt === 'last' ? v.entries - 1
            : v.highestAt === 'b7' ? Math.min(7, v.entries - 1)
            : v.highestAt === 'b1024' ? Math.min(1024, v.entries - 1)
            : v.highestAt % v.entries;
          await m.meta.transaction(() => {
            for (let c = 0; c < v.entries; c++) {
              // Below the volume's highest elsewhere; some entries without a destagedSeq (never destaged).
              const destagedSeq = c === at ? v.highest : c % 5 === 0 ? undefined : Math.floor(v.highest / 2) + (c % 97);
              void m.meta.chunks.put([rec.id, c], { state: ChunkState.Discarded, pool: '', ...(destagedSeq !== undefined ? { destagedSeq } : {}) });
            }
          });
        }
        for (const [i, v] of vols.entries()) if (v.deleted) await m.deleteVolume(recs[i]!.name);
        const want = loopFigure(m);
        assert.equal(await highestDestagedSeqSliced(m, sliceEntries), want, `slices of ${sliceEntries} over ${JSON.stringify(vols.map((v) => [v.entries, v.deleted]))}`);
        for (const [i, v] of vols.entries()) if (!v.deleted) await m.deleteVolume(recs[i]!.name);
      },
    ),
    { numRuns: 40, seed: 20261127 },
  );
  assert.equal([...m.meta.chunks.getRange()].length, 0, 'every run cleaned up after itself');
});

/** The daemon's configuration for `dir` with no timer destaging behind the test's back. */
function quietConfig(dir: string): DaemonConfig {
  const cfg = loadConfig(dir);
  cfg.coldTier.destageIntervalMs = 3_600_000;
  cfg.coldTier.compaction.intervalMs = 0;
  return cfg;
}

test("a write after the daemon's start to the chunk holding the highest destagedSeq (the last entry of a full slice, an empty slice after it) is numbered above it, and a restart replays it", async (t) => {
  const opened: VolumeManager[] = [];
  const dir = tempDir(t, 'couchestor-review-startup-replay-', opened);
  const HIGHEST = 3_000_000;
  const CHUNKS = 2 * START_SCAN_SLICE_ENTRIES;
  const LAST = CHUNKS - 1;
  // Start 1: cold volume v of exactly two slices of chunks; chunks 0-1 written and destaged (journal files then all
  // removed: only the index remembers how far the numbering went).
  let m = await openManager(quietConfig(dir));
  opened.push(m);
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, tier: 'cold', pool: 'hot-0' });
  let vol = m.openVolume('v');
  const head = crypto.randomBytes(2 * MiB);
  await writeVolume(vol, 0, head);
  await vol.flush();
  await m.cold!.destager.drain();
  // Chunks 2..LAST trimmed after destages (Discarded: they read as zeros and keep their destagedSeq), the highest on LAST.
  const vId = vol.rec.id;
  await m.meta.transaction(() => {
    for (let c = 2; c < CHUNKS; c++) void m.meta.chunks.put([vId, c], { state: ChunkState.Discarded, pool: '', destagedSeq: c === LAST ? HIGHEST : 100 + c });
  });
  await m.meta.durable();
  await m.close();
  opened.length = 0;

  // Start 2 (the daemon's sliced scan): a write into chunk LAST, flushed, not destaged; the process goes down with it in the journal only.
  m = await openManager(quietConfig(dir));
  opened.push(m);
  assert.equal(await highestDestagedSeqSliced(m), HIGHEST, "the scan finds the last entry of the volume's second slice");
  vol = m.openVolume('v');
  const block = crypto.randomBytes(8192);
  await writeVolume(vol, LAST * MiB + 4096, block);
  await vol.flush();
  await m.close(); // stops the destager without draining: the record stays in the journal only
  opened.length = 0;

  // Start 3: the replay takes that record only if it was numbered above chunk LAST's destagedSeq (HIGHEST); otherwise the flushed write is lost.
  m = await openManager(quietConfig(dir));
  opened.push(m);
  vol = m.openVolume('v');
  const want = Buffer.alloc(MiB);
  block.copy(want, 4096);
  assert.ok((await readVolume(vol, LAST * MiB, MiB)).equals(want), 'the flushed write survives the restart (replayed from the journal)');
  assert.ok((await readVolume(vol, 0, 2 * MiB)).equals(head), 'the destaged chunks read back');
  await m.cold!.destager.drain();
  assert.equal(m.meta.chunks.get([vId, LAST])!.destagedSeq, HIGHEST + 1, 'the write was numbered just above the highest destagedSeq in the index');
  assert.ok((await readVolume(vol, LAST * MiB, MiB)).equals(want), 'and reads back once destaged');
});

test('an index read failing mid-scan: the start fails with that error, before the journal is opened (no replay, no numbering from a partial figure), its index closed; the next start numbers from the full figure', async (t) => {
  const opened: VolumeManager[] = [];
  const dir = tempDir(t, 'couchestor-review-startup-fail-', opened);
  let m = await openManager(quietConfig(dir));
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold', pool: 'hot-0' });
  const pad = await m.createVolume({ name: 'pad', sizeBytes: 3 * START_SCAN_SLICE_ENTRIES * MiB, pool: 'hot-0' });
  await m.meta.transaction(() => {
    for (let c = 0; c < 3 * START_SCAN_SLICE_ENTRIES; c++) void m.meta.chunks.put([pad.id, c], { state: ChunkState.Discarded, pool: '', destagedSeq: 100 + c });
  });
  await m.close();
  const journalDir = path.join(dir, 'pools', 'hot-0', 'journal');
  const journalBefore = fs.readdirSync(journalDir).sort();

  // The scan's third slice fails (an index read error: injected, LMDB gives none on demand). Only the scan reads with a limit.
  const realOpen = MetaStore.open;
  const failure = new Error('injected: index read failed');
  let sliceReads = 0;
  let failed: MetaStore | null = null;
  MetaStore.open = (d: string) => {
    const store = realOpen(d);
    failed = store;
    const chunks = store.chunks;
    const getRange = chunks.getRange.bind(chunks);
    chunks.getRange = ((opts?: { limit?: number }) => {
      if (opts?.limit !== undefined && ++sliceReads === 3) throw failure;
      return getRange(opts as never);
    }) as typeof chunks.getRange;
    return store;
  };
  try {
    await assert.rejects(openManager(quietConfig(dir)), (err) => err === failure, 'the start fails with the read error');
  } finally {
    MetaStore.open = realOpen;
  }
  assert.equal(sliceReads, 3, 'it failed in the scan, after two slices');
  assert.deepEqual(fs.readdirSync(journalDir).sort(), journalBefore, 'the journal was not opened: no head file started, nothing replayed');

  assert.throws(() => failed!.listVolumes(), 'the failed start closed its index (a read on it throws)');
  // The next start opens it and serves.
  m = await openManager(quietConfig(dir));
  opened.push(m);
  assert.equal(await highestDestagedSeqSliced(m), 100 + 3 * START_SCAN_SLICE_ENTRIES - 1);
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, Buffer.alloc(4096, 7));
  await vol.flush();
  await m.cold!.destager.drain();
  assert.equal(m.meta.chunks.get([vol.rec.id, 0])!.destagedSeq, 100 + 3 * START_SCAN_SLICE_ENTRIES, 'numbered above the full figure');
});
