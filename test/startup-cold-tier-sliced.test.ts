// The daemon's cold-tier start (daemon.ts openManager) reads the highest
// destagedSeq of the index in slices (highestDestagedSeqSliced) instead of
// VolumeManager.startColdTier's loop over every chunk entry in one go: the
// same figure, so the journal numbers new writes the same way and the same
// chunks end up in the same state; and the event loop turns while it reads.
// In process: real LMDB index, journal, destager, stripe store.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { highestDestagedSeqSliced, openManager, startConfiguredColdTier } from '../src/daemon.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { ChunkState, type ChunkEntry } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
/** The highest destagedSeq of the index: a padding entry's, at a slice boundary of the small slices below. */
const HIGHEST_SEQ = 1_000_007;
/** Chunk entries of a deleted volume (its record gone, its entries left): higher still, ignored by both scans. */
const DELETED_VOLUME_ID = 999_999;
const DELETED_VOLUME_SEQ = 5_000_000;

/** Data dir with cold volume `v` (3 chunks written and destaged) and volume `pad` of `padEntries` cold chunk entries carrying destagedSeqs. */
async function seededDataDir(padEntries: number): Promise<{ dir: string; want: Buffer }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-startup-sliced-'));
  const m = await openManager(loadConfig(dir));
  try {
    await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, tier: 'cold', pool: 'hot-0' });
    const vol = m.openVolume('v');
    const want = Buffer.alloc(4 * MiB);
    crypto.randomBytes(3 * MiB).copy(want);
    await writeVolume(vol, 0, want.subarray(0, 3 * MiB));
    await vol.flush();
    await m.cold!.destager.drain();
    const pad = await m.createVolume({ name: 'pad', sizeBytes: padEntries * MiB, tier: 'cold', pool: 'hot-0' });
    await m.meta.transaction(() => {
      for (let c = 0; c < padEntries; c++) {
        const destagedSeq = c === Math.min(2 * 7, padEntries - 1) ? HIGHEST_SEQ : 1000 + ((c * 7919) % 900_000);
        // A cold entry as a destage leaves it (a 4+2 stripe reference: what makes the loop cost ~0.85 s per 100,000),
        // its places in segments no store has (nothing here reads them).
        const shards = Array.from({ length: 6 }, (_, i) => ({ pool: `cold-${i}`, segment: 1_000_000 + Math.floor(c / 1000), offsetBytes: (c % 1000) * 262_208, lengthBytes: 262_208 }));
        const stripe: StripeRef = { ownerId: '00'.repeat(16), chunkIndex: c, generation: 1, dataShards: 4, parityShards: 2, stripeSizeBytes: MiB, dataLengthBytes: MiB, shards };
        void m.meta.chunks.put([pad.id, c], { state: ChunkState.Cold, pool: '', destagedSeq, stripe });
      }
      for (let c = 0; c < 5; c++) void m.meta.chunks.put([DELETED_VOLUME_ID, c], { state: ChunkState.Discarded, pool: '', destagedSeq: DELETED_VOLUME_SEQ });
    });
    await m.meta.durable();
    return { dir, want };
  } finally {
    await m.close();
  }
}

/** What the start decided, seen through a write after it: chunk 0 rewritten, flushed, destaged; every chunk entry of `v` and its bytes. */
async function writeAndDestage(m: VolumeManager, want: Buffer): Promise<{ entries: ChunkEntry[]; bytes: Buffer }> {
  const vol = m.openVolume('v');
  const block = Buffer.alloc(4096, 0xab);
  await writeVolume(vol, 8192, block);
  await vol.flush();
  await m.cold!.destager.drain();
  const copy = Buffer.from(want);
  block.copy(copy, 8192);
  const bytes = await readVolume(vol, 0, 4 * MiB);
  assert.ok(bytes.equals(copy), 'the volume reads back what was written');
  const entries = [...m.meta.volumeChunks(vol.rec.id)].map(({ entry }) => entry);
  return { entries, bytes };
}

function copyDir(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true });
}

/** When `t` ends: the managers opened (`opened`) closed, then `dirs` removed (in that order: a journal closing in a removed directory logs errors). */
function cleanup(t: TestContext, opened: VolumeManager[], dirs: string[]): void {
  t.after(async () => {
    for (const m of opened) await m.close().catch(() => undefined);
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
}

test('the sliced scan finds the highest destagedSeq startColdTier loops for (deleted volumes left out), and both starts leave the same chunks in the same state', async (t) => {
  const { dir, want } = await seededDataDir(3000);
  const loopDir = `${dir}-loop`;
  const slicedDir = `${dir}-sliced`;
  const opened: VolumeManager[] = [];
  cleanup(t, opened, [dir, loopDir, slicedDir]);
  copyDir(dir, loopDir);
  copyDir(dir, slicedDir);

  // The old start: manager.startColdTier's own loop over every entry.
  const loopCfg = loadConfig(loopDir);
  const loop = await openManager(loopCfg, { coldTier: false });
  opened.push(loop);
  for (const slice of [1, 7, 1024]) assert.equal(await highestDestagedSeqSliced(loop, slice), HIGHEST_SEQ, `slices of ${slice}: the pad volume's highest, not the deleted volume's`);
  loop.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, 6), { intervalMs: 3_600_000, thresholdPercent: loopCfg.coldTier.destageThresholdPercent, concurrency: 2, journalCapacityBytes: loopCfg.coldTier.journalCapacityBytes });
  // The daemon's start: the sliced scan.
  const sliced = await openManager(loadConfig(slicedDir));
  opened.push(sliced);

  const a = await writeAndDestage(loop, want);
  const b = await writeAndDestage(sliced, want);
  // The journal numbered the write above the highest destagedSeq in the index, the same in both.
  assert.equal(a.entries[0]!.destagedSeq, HIGHEST_SEQ + 1, 'the old start numbers the next write above the highest destagedSeq');
  assert.equal(b.entries[0]!.destagedSeq, HIGHEST_SEQ + 1, 'the sliced start numbers it the same');
  assert.deepEqual(b.entries.map(({ state, destagedSeq, stripe }) => ({ state, destagedSeq, generation: stripe?.generation })), a.entries.map(({ state, destagedSeq, stripe }) => ({ state, destagedSeq, generation: stripe?.generation })), 'same chunk states, seqs and stripe generations');
  assert.ok(a.bytes.equals(b.bytes));
});

test("the daemon's cold-tier start lets the event loop turn while it reads the index: its longest gap is a fraction of startColdTier's loop over the same index", async (t) => {
  const { dir } = await seededDataDir(30_000);
  const loopDir = `${dir}-loop`;
  const opened: VolumeManager[] = [];
  cleanup(t, opened, [dir, loopDir]);
  copyDir(dir, loopDir);

  // startColdTier's loop in one block: the same scan with one slice over everything (it never yields), on a copy of the index.
  const loop = await openManager(loadConfig(loopDir), { coldTier: false });
  opened.push(loop);
  const t0 = process.hrtime.bigint();
  assert.equal(await highestDestagedSeqSliced(loop, Number.MAX_SAFE_INTEGER), HIGHEST_SEQ);
  const loopBlockMs = Number(process.hrtime.bigint() - t0) / 1e6;

  // The daemon's cold-tier start (openManager's last step, after the pools are registered) with a
  // setImmediate ticker: the longest gap between two turns, from the call on.
  const m = await openManager(loadConfig(dir), { coldTier: false });
  opened.push(m);
  let last = 0n;
  let longestGapMs = 0;
  let turns = 0;
  let ticking = true;
  const tick = () => {
    const now = process.hrtime.bigint();
    longestGapMs = Math.max(longestGapMs, Number(now - last) / 1e6);
    last = now;
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  last = process.hrtime.bigint();
  await startConfiguredColdTier(loadConfig(dir), m);
  ticking = false;
  longestGapMs = Math.max(longestGapMs, Number(process.hrtime.bigint() - last) / 1e6); // the run since the last turn
  assert.ok(m.cold !== null, 'the cold tier started');
  t.diagnostic(`30,000 entries: the loop in one block took ${loopBlockMs.toFixed(1)} ms; the daemon's start: longest gap ${longestGapMs.toFixed(1)} ms over ${turns} turns`);
  assert.ok(turns >= Math.floor(30_000 / 1024) - 1, `the event loop turned between slices (${turns} turns)`);
  // Against the same scan in one block on this machine now (the load moves both); the turns above are the exact check.
  assert.ok(longestGapMs < loopBlockMs / 2, `longest gap ${longestGapMs.toFixed(1)} ms, not under half the loop in one block (${loopBlockMs.toFixed(1)} ms)`);
});
