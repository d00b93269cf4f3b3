// `volumes release` (Volume.releaseFile's ftruncate of a cold volume's kept
// hot file) started together with a cold -> hot move into that same file, in
// both orders and at several event-loop distances: the truncate must never
// land after a chunk copy went into the file, or the copy's bytes (already
// switched in the index) would read as zeros. Each trial: a preserving move
// to cold (keeps the file), then the release and the move back to hot
// raced (the release first, the move first, or the release the moment the
// move has switched the tier and listed its chunks), a client read in flight; every byte reads back, also after a
// restart. Coverage: no reproducer at the head before releaseFile decided at
// the quiesce gate; it fails if releasePreserved's tier check is dropped
// from that head (the release then truncates under the move's copies).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MigrationInProgress } from '../src/dataplane/errors.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 8;
const ORDERS = ['release first', 'move first', 'at copy start'] as const;
const TRIALS = 36;

/** Lets `n` event-loop turns pass (0: only the microtasks queued so far). */
async function turns(n: number): Promise<void> {
  await Promise.resolve();
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

test(`${TRIALS} trials of volumes release raced with a cold -> hot move (release first, move first, at copy start): byte-exact, also after a restart`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-release-vs-hot-'));
  let m: VolumeManager | null = await openColdTierManager(dir);
  t.after(async () => {
    await m?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  let vol = m.openVolume('v');
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  let truncated = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    // A fresh block each trial, so every copy carries bytes the file did not hold before.
    const at = (trial % CHUNKS) * MiB + 4096 * (trial % 7);
    const block = crypto.randomBytes(4096);
    block.copy(want, at);
    await writeVolume(vol, at, block);
    await vol.flush();
    await migrateVolume(m, 'v', 'cold', { preserve: true });
    assert.equal(vol.chunksOnFile().length, 0);
    const file = m.pools.get('hot-0')!.volumeFile(vol.rec.id);
    assert.equal(fs.statSync(file).size, CHUNKS * MiB, 'the preserving move kept the file');
    const reading = readVolume(vol, 0, CHUNKS * MiB);
    const order = ORDERS[trial % ORDERS.length]!;
    const gap = Math.floor(trial / ORDERS.length) % 4;
    const mm: VolumeManager = m;
    const release = (): Promise<unknown> => mm.releasePreserved('v');
    let released: Promise<unknown> | null = null;
    // 'at copy start': the move has switched the tier and listed its chunks; no copy has begun yet.
    const move = () =>
      migrateVolume(mm, 'v', 'hot', {
        preserve: false,
        onProgress: (p) => {
          if (order === 'at copy start' && released === null && p.phase === 'Copy' && p.chunksTotal > 0) released = turns(gap).then(release);
        },
      });
    let moved: Promise<unknown>;
    if (order === 'release first') {
      released = release();
      await turns(gap);
      moved = move();
    } else {
      moved = move();
      if (order === 'move first') {
        await turns(gap);
        released = release();
      }
    }
    const [mv] = await Promise.allSettled([moved]);
    assert.ok(released !== null, `trial ${trial}: the release started`);
    const [r] = await Promise.allSettled([released as Promise<unknown>]);
    assert.equal(mv.status, 'fulfilled', `trial ${trial}: move to hot: ${mv.status === 'rejected' ? String(mv.reason) : ''}`);
    // The release may be refused while the move runs; nothing else.
    if (r.status === 'rejected') assert.ok(r.reason instanceof MigrationInProgress, `trial ${trial}: release: ${String(r.reason)}`);
    else if ((r.value as { fileReleased: boolean }).fileReleased) truncated++;
    assert.equal(vol.rec.tier, 'hot');
    assert.equal(vol.chunksOnFile().length, CHUNKS, `trial ${trial}: every chunk is back in the file`);
    assert.ok((await reading).equals(want), `trial ${trial}: the read in flight`);
    const got = await readVolume(vol, 0, CHUNKS * MiB);
    assert.ok(got.equals(want), `trial ${trial} (${order}, ${gap} turns apart): bytes lost`);
  }
  t.diagnostic(`releases that truncated the file: ${truncated} of ${TRIALS}`);
  await m.close();
  m = null;
  m = await openColdTierManager(dir, false);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes lost after a restart');
});
