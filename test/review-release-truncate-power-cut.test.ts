// A cold volume's RELEASE truncates its hot file (Volume.releaseFile,
// ftruncate to 0) and nothing synced that truncate: when the volume came
// back to hot on the same pool (the file still open, so no O_TRUNC and no
// fdatasync of openFile), a first write to a chunk the file may hold stale
// bytes of (below staleBelowBytes: a write whose entry an earlier crash lost)
// asked the page cache whether the region held data; after the truncate it
// did not, so the chunk was not zeroed, and its Allocated entry is durable at
// its commit, before any FLUSH. A power cut that undid the truncate then had
// that chunk read the lost write's bytes around the new one. Now the first
// allocation of a fresh chunk after such a truncate syncs the file first
// (Volume.shrinkDurable), unless a FLUSH did since. The same truncate left
// in the page cache only by a SIGKILLed process: the next one opened the
// file at its truncated size (staleBelowBytes 0) and trusted it; now a
// volume file is fdatasynced when opened (manager.ts openOrCreate). On the
// model of helpers/power-loss-fs (what a power cut keeps).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { PowerLossFs, seededRandom, type DirModel } from './helpers/power-loss-fs.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

interface Released {
  dir: string;
  id: number;
  cs: number;
  /** v's hot file on hot-0. */
  file: string;
  /** The lost write's bytes, in chunk 1 of the file. */
  old: Buffer;
  plfs: PowerLossFs;
  model: DirModel;
  rng: () => number;
}

/**
 * Volume v (4 MiB) in a temp dir named `prefix`: chunk 0 written and flushed, chunk 1's bytes in the file with no entry
 * (a crash between the pwrite and its commit; never flushed), then to cold keeping the file (preservation mode), so a
 * RELEASE is the truncate. From here the file's directory is modelled (its contents as durable).
 */
async function releasedLostWrite(t: TestContext, prefix: string, seed: number): Promise<Released> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const first = await openColdTierManager(dir);
  await first.createVolume({ name: 'v', sizeBytes: 4 * MiB });
  const v1 = first.openVolume('v');
  const id = v1.rec.id;
  const cs = v1.rec.chunkSizeBytes;
  await writeVolume(v1, 0, crypto.randomBytes(cs));
  await v1.flush();
  await first.close();
  const file = first.pools.get('hot-0')!.volumeFile(id);
  // Chunk 1: bytes in the file, no entry (a crash between the pwrite and its commit; never flushed).
  const old = crypto.randomBytes(cs);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, old, 0, cs, cs);
  fs.fsyncSync(fd);
  fs.closeSync(fd);

  const second = await openColdTierManager(dir, false);
  const v2 = second.openVolume('v');
  assert.ok((await readVolume(v2, cs, cs)).equals(Buffer.alloc(cs)), 'the lost write reads as zeros');
  // To cold keeping the file (preservation mode), so the RELEASE below is the truncate.
  await migrateVolume(second, 'v', 'cold', { preserve: true });
  assert.equal(v2.chunksOnFile().length, 0);
  await second.close();
  assert.ok(fs.readFileSync(file).subarray(cs, 2 * cs).equals(old), 'the kept file holds the lost write');

  const plfs = PowerLossFs.install(t);
  const model = plfs.track(path.dirname(file));
  return { dir, id, cs, file, old, plfs, model, rng: seededRandom(seed) };
}

/**
 * Opens the manager over the model and v, runs `truncated` (it leaves v cold with its file truncated), then moves v back
 * to hot on the same pool (chunk 0 stays in its stripe: not needed here) and writes 4 KiB into chunk 1, not flushed.
 * Every crash state of that moment is then opened in turn: chunk 1 reads zeros or the new write, never the lost one.
 */
async function backToHotThroughPowerCuts(rel: Released, truncated: (m: VolumeManager, vol: Volume) => Promise<void>): Promise<void> {
  const { dir, id, cs, file, old, plfs, model, rng } = rel;
  const m = await openColdTierManager(dir, false);
  let closed = false;
  try {
    const vol = m.openVolume('v');
    await truncated(m, vol);
    await plfs.pumpBeside(vol.setTier('hot', m.pools.get('hot-0')!), rng);
    const w = crypto.randomBytes(4096);
    await plfs.pumpBeside(writeVolume(vol, cs + 8192, w), rng);
    await m.meta.durable();
    assert.equal(m.meta.chunks.get([id, 1])?.state !== undefined, true, 'chunk 1 has its entry');
    const cut = plfs.clock;
    const images: Buffer[] = [];
    for (let s = 0; s < 16; s++) {
      const into = fs.mkdtempSync(path.join(dir, 'state-'));
      model.crashState(cut, rng, into, s === 0 ? 'lose' : undefined);
      const f = path.join(into, path.basename(file));
      images.push(fs.existsSync(f) ? fs.readFileSync(f) : Buffer.alloc(0));
      fs.rmSync(into, { recursive: true });
    }
    await plfs.pumpBeside(m.close(), rng);
    closed = true;
    model.untrack();
    for (const [i, image] of images.entries()) {
      fs.writeFileSync(file, image);
      const m2 = await openColdTierManager(dir, false);
      try {
        const got = await readVolume(m2.openVolume('v'), cs, cs);
        for (let at = 0; at < cs; at += 512) {
          const sector = got.subarray(at, at + 512);
          const inW = at >= 8192 && at < 8192 + 4096;
          const ok = sector.equals(Buffer.alloc(512)) || (inW && sector.equals(w.subarray(at - 8192, at - 8192 + 512)));
          assert.ok(ok, `state ${i}, chunk 1 byte ${at}: ${sector.equals(old.subarray(at, at + 512)) ? 'the bytes of the write the first crash lost came back' : 'bytes no write put there'}`);
        }
      } finally {
        await m2.close();
      }
    }
  } finally {
    if (!closed) await m.close();
  }
}

test('a cold volume released (its hot file truncated), moved back to hot on that pool and written: no power cut brings back bytes of a write an earlier crash lost the entry of', async (t) => {
  const rel = await releasedLostWrite(t, 'couchestor-release-trunc-plfs-', 5);
  const { file, plfs, rng } = rel;
  // The file opened through the model.
  await backToHotThroughPowerCuts(rel, async (m, vol) => {
    // A FLUSH first: the file as this process found it is durable, so only the RELEASE's truncate is not.
    await writeVolume(vol, 0, crypto.randomBytes(4096));
    await plfs.pumpBeside(vol.flush(), rng);
    const r = await plfs.pumpBeside(m.releasePreserved('v'), rng);
    assert.equal(r.fileReleased, true);
    assert.equal(fs.statSync(file).size, 0, 'the RELEASE truncated the file');
  });
});

test('the same RELEASE truncate left in the page cache by a killed process: the next process syncs the file at open, so no power cut brings those bytes back either', async (t) => {
  const rel = await releasedLostWrite(t, 'couchestor-release-trunc-kill-plfs-', 6);
  const { file } = rel;
  // The RELEASE's truncate by a process SIGKILLed before anything synced it: in the page cache only.
  const tfd = fs.openSync(file, 'r+');
  fs.ftruncateSync(tfd, 0);
  fs.closeSync(tfd);
  await backToHotThroughPowerCuts(rel, async () => {
    assert.equal(fs.statSync(file).size, 0);
  });
});
