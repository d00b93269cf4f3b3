// Power cuts on the hot/warm data path, on the model of helpers/power-loss-fs
// (what a power cut keeps of a directory: only what an fsync/fdatasync made
// durable, the rest kept or lost per sector and per directory change). The
// index (LMDB, overlappingSync off) is durable at each commit, so a crash
// state pairs the index as committed with the pool directory as the model
// says it survived.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { PowerLossFs, seededRandom } from './helpers/power-loss-fs.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

async function openManager(dir: string, create: boolean): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'data'));
  if (create) {
    for (const tier of ['hot', 'warm'] as const) await m.putPool({ name: `${tier}-0`, path: path.join(dir, `${tier}-0`), tier, capacityBytes: 256 * MiB, labels: { tier } });
  }
  return m;
}

test('a move back into a pool whose file a preserving move kept: the file is emptied durably before a chunk entry names it (a power cut never brings back bytes of a write an earlier crash lost)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-vol-plfs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const first = await openManager(dir, true);
  await first.createVolume({ name: 'v', sizeBytes: 2 * MiB, pool: 'hot-0' });
  const v1 = first.openVolume('v');
  const id = v1.rec.id;
  await writeVolume(v1, 0, crypto.randomBytes(MiB));
  await v1.flush();
  await first.close();
  const hotFile = path.join(dir, 'hot-0', 'volumes', `${id}.dat`);
  // A write to chunk 1 whose bytes reached the file while its chunk entry did
  // not (a crash between the two; never flushed): the next start reads the
  // chunk as zeros (staleBelowBytes), as it must.
  const old = crypto.randomBytes(MiB);
  const fd = fs.openSync(hotFile, 'r+');
  fs.writeSync(fd, old, 0, MiB, MiB);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const m = await openManager(dir, false);
  const hot = m.pools.get('hot-0')!;
  const warm = m.pools.get('warm-0')!;
  const vol = m.openVolume('v');
  assert.ok((await readVolume(vol, MiB, MiB)).equals(Buffer.alloc(MiB)), 'the lost write reads as zeros');
  // A preserving move to warm: chunk 0 copied, hot-0's file kept (the lost write's bytes still in it).
  await vol.setTier('warm', warm);
  await vol.ensurePromoted(0, true);
  assert.deepEqual((await vol.releaseOtherFiles(true)).map((p) => p.name), ['hot-0']);
  assert.ok(fs.readFileSync(hotFile).subarray(MiB).equals(old), 'the kept file holds the lost write');
  assert.equal(m.meta.chunks.get([id, 1]), undefined, 'chunk 1 has no entry');

  // From here the kept file's directory is modelled: its contents (old bytes) as durable.
  const plfs = PowerLossFs.install(t);
  const model = plfs.track(path.dirname(hotFile));
  const rng = seededRandom(1);
  // The move back to hot-0 (chunk 0 is not copied back here: not needed), then a 4 KiB write into chunk 1, not flushed.
  await plfs.pumpBeside(vol.setTier('hot', hot), rng);
  const w = crypto.randomBytes(4096);
  await plfs.pumpBeside(writeVolume(vol, MiB + 8192, w), rng);
  // The chunk's entry (Allocated on hot-0) is committed, and a commit is durable.
  await m.meta.durable();
  assert.equal(m.meta.chunks.get([id, 1])?.pool, 'hot-0');
  const cut = plfs.clock;
  const states = 24;
  const images: Buffer[] = [];
  for (let s = 0; s < states; s++) {
    const into = fs.mkdtempSync(path.join(dir, 'state-'));
    model.crashState(cut, rng, into, s === 0 ? 'lose' : undefined);
    const name = path.basename(hotFile);
    images.push(fs.existsSync(path.join(into, name)) ? fs.readFileSync(path.join(into, name)) : Buffer.alloc(0));
    fs.rmSync(into, { recursive: true });
  }
  await plfs.pumpBeside(m.close(), rng);
  model.untrack();

  // Each crash state: the index as committed, hot-0's file as the model kept it.
  let checked = 0;
  for (const image of images) {
    fs.writeFileSync(hotFile, image);
    const m2 = await openManager(dir, false);
    try {
      const got = await readVolume(m2.openVolume('v'), MiB, MiB);
      // Chunk 1 reads zeros (nothing durable was ever written there) except where the unflushed write may have landed.
      for (let at = 0; at < MiB; at += 512) {
        const sector = got.subarray(at, at + 512);
        const inW = at >= 8192 && at < 8192 + 4096;
        const ok = sector.equals(Buffer.alloc(512)) || (inW && sector.equals(w.subarray(at - 8192, at - 8192 + 512)));
        assert.ok(ok, `chunk 1 byte ${at}: ${sector.equals(old.subarray(at, at + 512)) ? 'the bytes of the write the first crash lost came back' : 'bytes no write put there'}`);
      }
      checked++;
    } finally {
      await m2.close();
    }
  }
  assert.equal(checked, states);
});
