// Reviewer's reproducers for the hot <-> warm online migration: races of the
// volume record, the pool files and a move with resize, `volumes release` and
// delete, against the real VolumeManager/Volume (no mocks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MigrationInProgress } from '../src/dataplane/errors.js';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

async function openManager(dir: string, create: boolean): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  if (create) {
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
    await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  }
  return m;
}

/** Creates volume `v` of `chunks` MiB on `m`, writes random bytes over all of it and flushes. */
async function writtenVolume(m: VolumeManager, chunks: number): Promise<{ vol: Volume; want: Buffer }> {
  await m.createVolume({ name: 'v', sizeBytes: chunks * MiB });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(chunks * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  return { vol, want };
}

test('a resize while a move starts is not undone by the move: flushed writes past the old size survive a restart', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-resize-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let m = await openManager(dir, true);
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB });
  let vol = m.openVolume('v');
  const head = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 0, head);
  await vol.flush();
  // Same turn: the resize's record write and the move's setTier overlap.
  const resized = m.resizeVolume('v', 16 * MiB);
  const moved = migrateVolume(m, 'v', 'warm', { preserve: false });
  await resized;
  await moved;
  assert.equal(vol.sizeBytes, 16 * MiB);
  const tail = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 8 * MiB, tail);
  await vol.flush();
  assert.equal(m.getVolumeRecord('v')!.sizeBytes, 16 * MiB, 'the persisted size lost the resize');
  await m.close();
  m = await openManager(dir, false);
  vol = m.openVolume('v');
  assert.equal(vol.sizeBytes, 16 * MiB);
  assert.ok((await readVolume(vol, 8 * MiB, 8 * MiB)).equals(tail), 'flushed writes past the old size are lost after a restart');
  await m.close();
});

test('a move back to the old pool asked for while RELEASE deletes its file: refused while the first runs, run right after it, the new file survives, and so do the bytes after a restart', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-unlink-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let m = await openManager(dir, true);
  const CHUNKS = 8;
  const written = await writtenVolume(m, CHUNKS);
  let vol = written.vol;
  const want = written.want;
  // An operator's `volumes migrate v hot` lands while the control loop's move to warm releases hot-0's file.
  let started = false;
  let startBack!: (move: Promise<unknown>) => void;
  const back = new Promise<unknown>((r) => (startBack = r));
  const backOutcome = back.then(() => undefined, (err: unknown) => err);
  const toWarm = migrateVolume(m, 'v', 'warm', {
    preserve: false,
    onProgress: (p) => {
      // Next turn: the first move's RELEASE has taken hot-0's file out of the volume and is syncing before it unlinks it.
      if (p.phase === 'Release' && !started) {
        started = true;
        setImmediate(() => startBack(migrateVolume(m, 'v', 'hot', { preserve: false })));
      }
    },
  });
  await toWarm;
  // One migration of a volume at a time: the second is refused while the first runs ...
  assert.ok((await backOutcome) instanceof MigrationInProgress, 'a second move of the volume ran beside the first');
  assert.ok(started, 'the second move did not start');
  assert.equal(vol.rec.tier, 'warm');
  // ... and asked again the moment the first returns, it runs (openFile waits for a delete of hot-0's file still pending).
  await migrateVolume(m, 'v', 'hot', { preserve: false });
  assert.equal(vol.rec.tier, 'hot');
  for (const p of vol.poolsInUse()) assert.ok(fs.existsSync(p.volumeFile(vol.rec.id)), `chunks are in ${p.name}'s file, which is not on disk`);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want));
  await m.close();
  m = await openManager(dir, false);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes lost after a restart');
  await m.close();
});

test('volumes release after an aborted move does not delete a pool file the volume still has open; a later move to that pool survives a restart', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-release-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let m = await openManager(dir, true);
  const CHUNKS = 20;
  const written = await writtenVolume(m, CHUNKS);
  let vol = written.vol;
  const want = written.want;
  // Aborted once 16 chunks are on warm-0 (progress is reported every 16), so
  // the abort keeps warm-0's file open; trimmed, they leave it open and empty.
  // (An abort before any chunk moved closes and deletes the target's file.)
  const ac = new AbortController();
  await assert.rejects(
    migrateVolume(m, 'v', 'warm', { preserve: false, signal: ac.signal, concurrency: 1, onProgress: (p) => p.chunksDone >= 16 && ac.abort() }),
    (err: Error) => err instanceof MigrationAborted,
  );
  assert.equal(vol.rec.tier, 'hot');
  assert.equal(vol.chunkPool(15).name, 'warm-0');
  await vol.trim(0, 16 * MiB, false);
  want.fill(0, 0, 16 * MiB);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['hot-0']);
  // An operator cleans up what the move left.
  await m.releasePreserved('v');
  const done = await migrateVolume(m, 'v', 'warm', { preserve: false });
  assert.equal(done.phase, 'Done');
  assert.equal(done.chunksDone, CHUNKS - 16);
  assert.equal(vol.chunkPool(CHUNKS - 1).name, 'warm-0');
  assert.ok(fs.existsSync(m.pools.get('warm-0')!.volumeFile(vol.rec.id)), 'the warm-0 file holding every chunk is not on disk');
  await m.close();
  m = await openManager(dir, false);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the moved bytes are gone after a restart');
  await m.close();
});

test('the warm pool removed mid-move: the move fails, RELEASE does not delete the hot file, chunks not yet switched keep their bytes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-gone-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await openManager(dir, true);
  t.after(() => m.close());
  const CHUNKS = 16;
  const { vol, want } = await writtenVolume(m, CHUNKS);
  const moving = migrateVolume(m, 'v', 'warm', {
    preserve: false,
    concurrency: 1,
    onProgress: (p) => {
      // Like migration-target-pool-removed does to a cold pool.
      if (p.chunksDone >= 2 && fs.existsSync(path.join(dir, 'warm-0'))) fs.rmSync(path.join(dir, 'warm-0'), { recursive: true });
    },
  });
  const outcome = await moving.then((p) => p.phase, (err: Error) => `failed: ${err.message}`);
  assert.match(outcome, /^failed: .*warm-0/, 'the move finished into a pool that is gone');
  assert.ok(fs.existsSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id)), 'the hot file was deleted');
  for (let c = 0; c < CHUNKS; c++) {
    if (vol.chunkPool(c).name !== 'hot-0') continue;
    assert.ok((await readVolume(vol, c * MiB, MiB)).equals(want.subarray(c * MiB, (c + 1) * MiB)), `chunk ${c} differs`);
  }
});

test('a client write that waited for a chunk move which then failed (target full) lands on the old copy instead of failing', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-fullmove-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = VolumeManager.open(path.join(dir, 'meta'));
  t.after(() => m.close());
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  // Room for the 4 chunks to move, but new chunks written once the move starts fill it.
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 4 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: 8 * MiB });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(8 * MiB);
  await writeVolume(vol, 0, want.subarray(0, 4 * MiB));
  await vol.flush();
  const writes: Promise<string>[] = [];
  const outcome = (w: Promise<void>) => w.then(() => 'ok', (err: Error) => `${err.name}: ${err.message}`);
  const moving = migrateVolume(m, 'v', 'warm', {
    preserve: false,
    concurrency: 1,
    onProgress: (p) => {
      // Once chunk 0's move is registered (same turn as this report), write into it.
      if (p.phase === 'Copy' && p.chunksTotal > 0 && writes.length === 4) {
        queueMicrotask(() => {
          const data = crypto.randomBytes(4096);
          data.copy(want, 8192);
          writes.push(outcome(writeVolume(vol, 8192, data)));
        });
      }
    },
  });
  // Queued at the setTier gate: allocated in warm-0 once it opens, filling it.
  for (let c = 4; c < 8; c++) writes.push(outcome(writeVolume(vol, c * MiB, want.subarray(c * MiB, (c + 1) * MiB))));
  await assert.rejects(moving, /full/);
  assert.equal(writes.length, 5, 'the write into the moving chunk was not issued');
  assert.deepEqual(await Promise.all(writes), ['ok', 'ok', 'ok', 'ok', 'ok'], 'a client write failed because the move of its chunk failed');
  await vol.flush();
  assert.ok((await readVolume(vol, 0, 8 * MiB)).equals(want));
});

test('deleting a volume while it moves: the move stops, the record stays deleted', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-delete-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await openManager(dir, true);
  t.after(() => m.close());
  const CHUNKS = 64;
  const { vol } = await writtenVolume(m, CHUNKS);
  let deleting: Promise<void> | null = null;
  const moving = migrateVolume(m, 'v', 'warm', {
    preserve: false,
    concurrency: 4,
    onProgress: (p) => {
      if (p.chunksDone >= 16 && !deleting) deleting = m.deleteVolume('v');
    },
  });
  await moving.catch(() => undefined);
  assert.ok(deleting, 'the delete did not start');
  await deleting;
  assert.equal(m.getVolumeRecord('v'), undefined, 'the deleted volume is back in the index');
  assert.deepEqual(m.listVolumes().map((r) => r.name), []);
  // Name free again.
  await m.createVolume({ name: 'v', sizeBytes: MiB });
});

test('a chunk copy asked for after the volume closed (a move still running while the volume is deleted) does no I/O on the closed descriptors', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-closed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await openManager(dir, true);
  t.after(() => m.close());
  const CHUNKS = 32;
  const { vol } = await writtenVolume(m, CHUNKS);
  // Split: abort once 16 chunks are on warm-0 (progress is reported every 16; the volume goes back to hot-0).
  const ac = new AbortController();
  await assert.rejects(
    migrateVolume(m, 'v', 'warm', { preserve: false, signal: ac.signal, concurrency: 1, onProgress: (p) => { if (p.chunksDone >= 16) ac.abort(); } }),
    (err: Error) => err instanceof MigrationAborted,
  );
  const c = Array.from({ length: CHUNKS }, (_, i) => i).find((i) => vol.offPlacement(i));
  assert.ok(c !== undefined, 'no chunk left on warm-0');
  await m.deleteVolume('v');
  // Whatever opens files next gets the descriptor numbers the volume just closed.
  // A different byte in each, so a copy from one into another shows.
  const scratch = Array.from({ length: 8 }, (_, i) => {
    const file = path.join(dir, `other-${i}`);
    const pattern = Buffer.alloc(CHUNKS * MiB, 0x50 + i);
    fs.writeFileSync(file, pattern);
    return { file, pattern, fd: fs.openSync(file, 'r+') };
  });
  try {
    await assert.rejects(vol.ensurePromoted(c, true), (err: Error) => err.name === "VolumeFailed");
  } finally {
    for (const s of scratch) fs.closeSync(s.fd);
  }
  for (const s of scratch) assert.ok(fs.readFileSync(s.file).equals(s.pattern), `${s.file} was written by the closed volume's chunk copy`);
});

test('a preserving move whose target file cannot be created fails cleanly: no later SWITCH keeps old copies', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rv-settier-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await openManager(dir, true);
  t.after(() => m.close());
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB });
  const vol = m.openVolume('v');
  // warm-0 is online (its directory is writable) but its volumes/ cannot be made.
  fs.writeFileSync(path.join(dir, 'warm-0', 'volumes'), 'not a directory');
  const phases: string[] = [];
  await assert.rejects(migrateVolume(m, 'v', 'warm', { preserve: true, onProgress: (p) => phases.push(p.phase) }));
  assert.equal(vol.preserveOnSwitch, false, 'preservation mode stays on after the failed move');
  assert.equal(vol.rec.tier, 'hot');
  assert.equal(phases.at(-1), 'Failed');
});
