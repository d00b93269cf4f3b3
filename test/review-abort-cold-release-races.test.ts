// Review of 4f10ed4 (an aborted move to cold truncates the placement file
// before the tier reverts). Pins, with the truncate held in flight (fs.ftruncate
// wrapped): client writes and reads are served meanwhile (the volume is still
// cold: journal and stripes), the tier does not revert before the truncate has
// landed, a destage pass meanwhile goes to stripes only, writes after the
// revert are allocated into the truncated file, a resize or a delete during
// the truncate neither loses bytes nor leaks the descriptor; and a kill -9
// just before or just after the truncate lands loses no flushed byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MigrationInProgress } from '../src/dataplane/errors.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { migrateVolume, MigrationAborted, type MigrationProgress } from '../src/dataplane/volumes/migration.js';
import { openVolumeFiles } from './helpers/hot-warm.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 8;
/** Chunks 0..3 written before the move (in hot-0's file); 4..7 never written. */
const ON_FILE = 4;
/** Written during the move (journal): the chunk left when the move aborts. */
const JOURNALED_CHUNK = 6;
/**
 * Bound on a wait that must not depend on the held truncate: past it, the
 * client is stuck behind it (a wrong build waits for good, so only it waits
 * the bound out; a right one never does). Not a few seconds: these waits are
 * real work (an aborted move reaching its truncate, a destage pass), up to
 * 0.8 s here at load 13-14, which a slower or busier machine can stretch
 * past a 3 s bound with nothing stuck.
 */
const STUCK_AFTER_MS = 30_000;

type FtruncateCb = (err: NodeJS.ErrnoException | null) => void;
const realFtruncate = fs.ftruncate;

/**
 * Holds every fs.ftruncate(fd, 0) until release(); `reached` resolves when the
 * first one is issued, `landed` with the real call's error once it completed.
 */
function holdTruncate(): { reached: Promise<void>; landed: Promise<NodeJS.ErrnoException | null>; release(): void; restore(): void } {
  let reachedR!: () => void;
  let landedR!: (err: NodeJS.ErrnoException | null) => void;
  let releaseR!: () => void;
  const reached = new Promise<void>((r) => (reachedR = r));
  const landed = new Promise<NodeJS.ErrnoException | null>((r) => (landedR = r));
  const gate = new Promise<void>((r) => (releaseR = r));
  fs.ftruncate = ((fd: number, len: number, cb: FtruncateCb) => {
    if (len !== 0) return realFtruncate(fd, len, cb);
    reachedR();
    void gate.then(() =>
      realFtruncate(fd, 0, (err) => {
        landedR(err);
        cb(err);
      }),
    );
  }) as typeof fs.ftruncate;
  return { reached, landed, release: releaseR, restore: () => void (fs.ftruncate = realFtruncate) };
}

function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer!: NodeJS.Timeout;
  const stuck = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${STUCK_AFTER_MS} ms`)), STUCK_AFTER_MS)));
  return Promise.race([p, stuck]).finally(() => clearTimeout(timer));
}

/** Volume v: chunks 0..3 written and flushed in hot-0's file. Returns the model. */
async function writtenVolume(m: VolumeManager): Promise<{ vol: Volume; want: Buffer; file: string }> {
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  const want = Buffer.alloc(CHUNKS * MiB);
  crypto.randomBytes(ON_FILE * MiB).copy(want);
  await writeVolume(vol, 0, want.subarray(0, ON_FILE * MiB));
  await vol.flush();
  return { vol, want, file: m.pools.get('hot-0')!.volumeFile(vol.rec.id) };
}

/**
 * Starts a move of v to cold that aborts once chunks 0..3 went to stripes
 * with chunk 6 left in the journal (written during the move): the case
 * 4f10ed4 truncates the file in.
 */
function abortedMoveToCold(m: VolumeManager, vol: Volume, want: Buffer): { moved: Promise<MigrationProgress>; lateWrite: () => Promise<void> | null } {
  const late = crypto.randomBytes(64 * 1024);
  late.copy(want, JOURNALED_CHUNK * MiB);
  let lateWrite: Promise<void> | null = null;
  const ac = new AbortController();
  const moved = migrateVolume(m, 'v', 'cold', {
    preserve: false,
    signal: ac.signal,
    concurrency: 1,
    onProgress: (p) => {
      if (p.phase === 'Copy' && p.chunksDone === 0 && lateWrite === null) lateWrite = writeVolume(vol, JOURNALED_CHUNK * MiB, late);
      if (p.chunksDone >= ON_FILE && !ac.signal.aborted) ac.abort();
    },
  });
  return { moved, lateWrite: () => lateWrite };
}

async function put(vol: Volume, want: Buffer, offsetBytes: number, lengthBytes: number): Promise<void> {
  const b = crypto.randomBytes(lengthBytes);
  b.copy(want, offsetBytes);
  await writeVolume(vol, offsetBytes, b);
}

async function crashChild(dir: string, point: 'before' | 'after'): Promise<void> {
  const m = await openColdTierManager(dir);
  const { vol, want } = await writtenVolume(m);
  // Crash point: the truncate issued (not landed), or landed with the tier
  // still cold in the index (the revert not yet begun).
  const die = async () => {
    await put(vol, want, 1 * MiB + 4096, 8192);
    await put(vol, want, 7 * MiB, 4096);
    await vol.flush();
    fs.writeFileSync(path.join(dir, 'want.bin'), want);
    const fd = fs.openSync(path.join(dir, 'want.bin'), 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    process.kill(process.pid, 'SIGKILL');
  };
  // The truncate's callback (or the truncate itself) waits for the crash:
  // the tier cannot revert first.
  fs.ftruncate = ((fd: number, len: number, cb: FtruncateCb) => {
    if (len !== 0) return realFtruncate(fd, len, cb);
    if (point === 'before') void die();
    else realFtruncate(fd, 0, () => void die());
  }) as typeof fs.ftruncate;
  const { moved } = abortedMoveToCold(m, vol, want);
  await moved.catch(() => undefined);
  // The move settles only if no truncate was issued (one issued never calls back: the kill comes first).
  throw new Error('the truncate was never issued');
}

if (process.argv[2] === 'crash-child') {
  await crashChild(process.argv[3]!, process.argv[4] as 'before' | 'after');
} else {
  test('aborted move to cold, truncate held in flight: clients are served from journal/stripes meanwhile, the tier reverts only after it lands, later writes land in the file, a second move is refused meanwhile and runs after; byte-exact, also after a restart', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-abort-trunc-'));
    let m: VolumeManager | null = await openColdTierManager(dir);
    const hold = holdTruncate();
    t.after(async () => {
      hold.restore();
      await m?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const { vol, want, file } = await writtenVolume(m);
    const { moved, lateWrite } = abortedMoveToCold(m, vol, want);
    let settled = false;
    void moved.catch(() => undefined).finally(() => (settled = true));
    await within(hold.reached, 'the truncate');
    await lateWrite();
    assert.equal(vol.rec.tier, 'cold', 'the truncate runs while the volume is still cold');
    for (let c = 0; c < ON_FILE; c++) assert.equal(vol.chunkState[c], ChunkState.Cold, `chunk ${c} in a stripe`);
    // Served with the truncate in flight: writes to a stripe chunk, to the
    // journaled one and to never-written ones (all go to the journal), a
    // resize, and a read of everything.
    await within(put(vol, want, 1 * MiB + 4096, 8192), 'a write to a stripe chunk');
    await within(put(vol, want, JOURNALED_CHUNK * MiB + 100 * 1024, 4096), 'a write to the journaled chunk');
    await within(put(vol, want, 7 * MiB, 4096), 'a write to a never-written chunk');
    await within(vol.resize((CHUNKS + 2) * MiB), 'a resize');
    const grown = Buffer.alloc((CHUNKS + 2) * MiB);
    want.copy(grown);
    await within(put(vol, grown, (CHUNKS + 1) * MiB, 4096), 'a write past the old end');
    assert.ok((await within(readVolume(vol, 0, (CHUNKS + 2) * MiB), 'a read')).equals(grown), 'bytes with the truncate in flight');
    // A destage pass meanwhile takes the journaled chunks to stripes (never the file).
    await within(m.cold!.destager.kick(), 'a destage pass');
    for (const c of [1, JOURNALED_CHUNK, 7, CHUNKS + 1]) assert.equal(vol.chunkState[c], ChunkState.Cold, `chunk ${c} destaged`);
    assert.ok((await within(readVolume(vol, 0, (CHUNKS + 2) * MiB), 'a read')).equals(grown), 'bytes after the destage pass');
    // A second move now (the control loop, the API) is refused, not run beside the revert.
    await assert.rejects(migrateVolume(m, 'v', 'hot', { preserve: false }), (err: Error) => err instanceof MigrationInProgress);
    await assert.rejects(migrateVolume(m, 'v', 'cold', { preserve: false }), (err: Error) => err instanceof MigrationInProgress);
    assert.equal(vol.rec.tier, 'cold');
    assert.equal(settled, false, 'the move ended before its truncate landed');
    assert.equal(vol.chunksOnFile().length, 0, 'nothing was allocated in the file while it is being truncated');
    hold.release();
    await assert.rejects(moved, (err: Error) => err instanceof MigrationAborted);
    assert.equal(await hold.landed, null);
    assert.equal(vol.rec.tier, 'hot', 'the tier reverted');
    // Back on hot: a stripe chunk promoted into the file, a never-written
    // chunk allocated there, a journaled one merged.
    await put(vol, grown, 2 * MiB + 12288, 4096);
    await put(vol, grown, 5 * MiB, 4096);
    await put(vol, grown, JOURNALED_CHUNK * MiB, 4096);
    await vol.flush();
    for (const c of [2, 5, JOURNALED_CHUNK]) assert.equal(vol.chunkState[c], ChunkState.Allocated, `chunk ${c} in the file`);
    assert.deepEqual(openVolumeFiles(dir, vol.rec.id), ['hot-0']);
    // Chunks not written since the revert hold nothing in the file (the old bytes are gone).
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(MiB);
      for (const c of [0, 1, 3]) {
        buf.fill(0);
        fs.readSync(fd, buf, 0, MiB, c * MiB);
        assert.ok(buf.every((x) => x === 0), `chunk ${c}: old bytes still in the file`);
      }
    } finally {
      fs.closeSync(fd);
    }
    assert.ok((await readVolume(vol, 0, (CHUNKS + 2) * MiB)).equals(grown), 'bytes after the revert');
    // A second move to cold right after, with a write racing it: finishes, releases the file.
    const racing = put(vol, grown, 4 * MiB + 4096, 4096);
    await migrateVolume(m, 'v', 'cold', { preserve: false });
    await racing;
    assert.equal(fs.statSync(file).size, 0, 'the finished move released the file');
    assert.ok((await readVolume(vol, 0, (CHUNKS + 2) * MiB)).equals(grown), 'bytes after a second move to cold');
    await m.close();
    m = await openColdTierManager(dir, false);
    const again = m.openVolume('v');
    assert.equal(again.rec.tier, 'cold');
    assert.equal(again.rec.sizeBytes, (CHUNKS + 2) * MiB);
    assert.ok((await readVolume(again, 0, (CHUNKS + 2) * MiB)).equals(grown), 'bytes after a restart');
  });

  test('aborted move to cold, volume deleted while its truncate is in flight: the delete waits for it, the move ends, no descriptor leaks, the volume stays gone after a restart', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-abort-trunc-del-'));
    let m: VolumeManager | null = await openColdTierManager(dir);
    const hold = holdTruncate();
    t.after(async () => {
      hold.restore();
      await m?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const { vol, want, file } = await writtenVolume(m);
    const id = vol.rec.id;
    const { moved } = abortedMoveToCold(m, vol, want);
    const ended = moved.then(
      () => null,
      (err: Error) => err,
    );
    await within(hold.reached, 'the truncate');
    let deleted = false;
    const del = m.deleteVolume('v').then(() => void (deleted = true));
    // The delete's close() must not close the descriptor the truncate holds:
    // given turns enough to finish (its closes are threadpool round trips), it has not.
    for (let i = 0; i < 50 && !deleted; i++) await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(openVolumeFiles(dir, id), ['hot-0'], 'the descriptor the truncate uses is still open');
    assert.equal(deleted, false, 'the delete finished (closed the descriptor) before the truncate on it landed');
    hold.release();
    assert.equal(await hold.landed, null, 'the truncate ran on a valid descriptor');
    await within(del, 'the delete');
    assert.ok((await within(ended, 'the move')) instanceof MigrationAborted);
    assert.deepEqual(openVolumeFiles(dir, id), [], 'no descriptor of the volume file left open');
    assert.equal(fs.existsSync(file), false, 'the volume file is deleted');
    assert.equal(m.meta.volumes.get('v'), undefined, 'the record did not come back (the revert)');
    await m.close();
    m = await openColdTierManager(dir, false);
    assert.equal(m.meta.volumes.get('v'), undefined, 'the volume stays deleted after a restart');
    assert.equal([...m.meta.volumeChunks(id)].length, 0, 'no chunk entry left');
  });

  for (const point of ['before', 'after'] as const) {
    test(`aborted move to cold, kill -9 ${point === 'before' ? 'with the truncate issued, not landed' : 'once the truncate landed, before the tier reverts'}: every flushed byte reads back after the restart`, async (t) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `couchestor-review-abort-trunc-crash-${point}-`));
      let m: VolumeManager | null = null;
      t.after(async () => {
        await m?.close();
        fs.rmSync(dir, { recursive: true, force: true });
      });
      const self = fileURLToPath(import.meta.url);
      const r = spawnSync(process.execPath, [self, 'crash-child', dir, point], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.signal, 'SIGKILL', `the child died at the crash point (status ${r.status}): ${r.stderr}`);
      const want = fs.readFileSync(path.join(dir, 'want.bin'));
      m = await openColdTierManager(dir, false);
      const vol = m.openVolume('v');
      assert.equal(vol.rec.tier, 'cold', 'the index still says cold (the crash came before the revert)');
      const sizeBytes = fs.statSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id)).size;
      if (point === 'before') assert.equal(sizeBytes, ON_FILE * MiB, 'the crash came before the truncate');
      else assert.equal(sizeBytes, 0, 'the crash came after the truncate');
      assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after the restart');
      // And the volume moves back to hot and reads the same.
      await migrateVolume(m, 'v', 'hot', { preserve: false });
      assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes after a move to hot');
    });
  }
}
