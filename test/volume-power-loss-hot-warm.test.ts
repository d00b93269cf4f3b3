// Power cuts on the hot/warm data path, on the model of helpers/power-loss-fs
// (what a power cut keeps of a directory: only what an fsync/fdatasync made
// durable, the rest kept or lost per sector and per directory change). The
// index (LMDB, overlappingSync off) is durable at each commit, so a crash
// state pairs the index as committed with the pool directory as the model
// says it survived. Two cases: the emptying of a pool file a move re-enters
// (a fixed bug), and a seeded random run of concurrent requests, chunk moves,
// tier switches and RELEASEs over a volume split between two pool files
// (COUCHESTOR_PLFS_SEED picks the seed), each crash state checked with
// helpers/crash-model's Model, then written one sector a chunk (the rest of
// each chunk must read as before). Cuts are taken between rounds and inside
// them (right at a FLUSH's or FUA's answer, after any modelled call: mid-move,
// mid-RELEASE), the index as a read sees it at that instant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState, MetaStore, type ChunkEntry, type VolumeRecord } from '../src/dataplane/meta/store.js';
import { PowerLossFs, seededRandom } from './helpers/power-loss-fs.js';
import { readVolume, writeVolume } from './helpers/volume.js';
import { Model, type OpKind } from './helpers/crash-model.js';

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

/** A client request of the random run, with the clock values the model's cuts are compared with. */
interface ClientOp {
  kind: OpKind;
  offsetBytes: number;
  lengthBytes: number;
  value: Buffer | null;
  fua: boolean;
  /** Clock at issue (before the volume saw it) and at acknowledgement (Infinity until then). */
  issueAt: number;
  ackAt: number;
}

/**
 * The index as committed at one instant: the volume's record and chunk map as
 * a read sees them (lmdb-js reads see committed transactions only, and with
 * overlappingSync off a commit is visible only once durable). Taken
 * synchronously, so at any instant of the run: right after a FLUSH or FUA
 * answered, after any modelled call completed (mid-move, mid-RELEASE), and
 * between rounds.
 */
interface IndexSnapshot {
  cut: number;
  why: string;
  rec: VolumeRecord;
  chunks: [number, ChunkEntry][];
}

/** Writes a snapshot's record and chunk map into the index under dataDir (the rest of the index as it is). */
async function restoreIndex(dataDir: string, id: number, snap: IndexSnapshot): Promise<void> {
  const meta = MetaStore.open(dataDir);
  try {
    await meta.transaction(() => {
      for (const { chunkIndex } of [...meta.volumeChunks(id)]) void meta.chunks.remove([id, chunkIndex]);
      for (const [c, e] of snap.chunks) void meta.chunks.put([id, c], e);
      void meta.volumes.put(snap.rec.name, snap.rec);
    });
    await meta.durable();
  } finally {
    await meta.close();
  }
}

test('random writes, zeroes, trims, FUA and FLUSH on a volume split over a hot and a warm file, chunks moved between them: every crash state keeps every flushed byte', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-vol-plfs-rand-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const seed = Number(process.env.COUCHESTOR_PLFS_SEED ?? 11);
  const rng = seededRandom(seed);
  // The cuts' own draws: the run (requests, moves, completion order) stays that of `seed` alone.
  const cutRng = seededRandom(seed + 0x5eed);
  const m = await openManager(dir, true);
  const hot = m.pools.get('hot-0')!;
  const warm = m.pools.get('warm-0')!;
  const cs = 64 * 1024;
  const chunks = 8;
  const volumeBytes = chunks * cs;
  await m.createVolume({ name: 'v', sizeBytes: volumeBytes, pool: 'hot-0', chunkSizeBytes: cs });
  const id = m.getVolumeRecord('v')!.id;
  warm.ensureDirs();
  const plfs = PowerLossFs.install(t);
  const models = [hot, warm].map((p) => ({ pool: p, model: plfs.track(path.dirname(p.volumeFile(id))), file: p.volumeFile(id) }));
  const vol = m.openVolume('v');
  const ops: ClientOp[] = [];
  const flushes: { issueAt: number; doneAt: number }[] = [];
  const snapshots: IndexSnapshot[] = [];
  /** A cut now: the instant and the index as committed at it. */
  const snap = (why: string) => {
    const cut = plfs.mark();
    snapshots.push({ cut, why, rec: m.meta.volumes.get('v')!, chunks: [...m.meta.volumeChunks(id)].map(({ chunkIndex, entry }) => [chunkIndex, entry]) });
  };
  const metaDir = path.join(dir, 'data', 'meta');
  /** What the run did, with the clock at each step (in a failure's message). */
  const history: { at: number; what: string }[] = [];
  const rand = (n: number) => Math.floor(rng() * n);
  const range = (): [number, number] => {
    // Whole chunks a third of the time (a trim or zero that discards them), else any sectors.
    if (rng() < 0.33) {
      const n = 1 + rand(2);
      return [cs * rand(chunks - n + 1), n * cs];
    }
    const len = 512 * (1 + rand(rng() < 0.3 ? (2 * cs) / 512 : 16));
    return [512 * rand((volumeBytes - len) / 512 + 1), len];
  };
  // Requests in flight together (1-4 per round, on ranges that do not overlap), their
  // calls completed in a seeded random order; the index is copied between rounds.
  const busy: [number, number][] = [];
  const overlaps = ([o, l]: [number, number]) => busy.some(([bo, bl]) => o < bo + bl && bo < o + l);
  async function one(pick: number): Promise<void> {
    if (pick < 10) {
      const issueAt = plfs.mark();
      await vol.flush();
      flushes.push({ issueAt, doneAt: plfs.mark() });
      // Right at the answer: what the FLUSH promised must be in the index already.
      if (cutRng() < 0.3) snap('flush answered');
      history.push({ at: issueAt, what: `${issueAt}-${plfs.clock}: flush` });
    } else if (pick < 17) {
      // A chunk move (COPY, fdatasync, SWITCH) of a chunk off the placement file, or a tier switch between the two pools.
      const off = vol.chunksOffFile();
      const from = plfs.clock;
      if (pick === 13 || pick === 14) {
        // The rest of a move (every chunk off placement copied), then its RELEASE: the files no
        // chunk is in closed, deleted unless kept (preservation mode).
        for (const c of off) await vol.ensurePromoted(c, true);
        const keep = rand(2) === 0;
        const closed = await vol.releaseOtherFiles(keep);
        history.push({ at: from, what: `${from}-${plfs.clock}: release${keep ? ' (kept)' : ''} ${closed.map((p) => p.name).join(',')}` });
      } else if (off.length > 0 && pick < 13) {
        const c = off[rand(off.length)]!;
        await vol.ensurePromoted(c, true);
        history.push({ at: from, what: `${from}-${plfs.clock}: chunk ${c} moved to ${vol.pool.name}` });
      } else {
        await vol.setTier(vol.pool === hot ? 'warm' : 'hot', vol.pool === hot ? warm : hot);
        history.push({ at: from, what: `${from}-${plfs.clock}: placement ${vol.pool.name}` });
      }
    } else {
      let r = range();
      for (let k = 0; k < 20 && overlaps(r); k++) r = range();
      if (overlaps(r)) return;
      busy.push(r);
      const [offsetBytes, lengthBytes] = r;
      const fua = rand(5) === 0;
      const kind: OpKind = pick < 70 ? 'write' : pick < 85 ? 'zero' : 'trim';
      // Recorded at issue (the model's order); acknowledged later.
      const op: ClientOp = { kind, offsetBytes, lengthBytes, value: kind === 'write' ? crypto.randomBytes(lengthBytes) : null, fua, issueAt: plfs.mark(), ackAt: Infinity };
      ops.push(op);
      const no = ops.length - 1;
      if (kind === 'write') await new Promise<void>((res, rej) => vol.write(offsetBytes, op.value!, fua, (err) => (err ? rej(err) : res())));
      else if (kind === 'zero') await vol.writeZeroes(offsetBytes, lengthBytes, { noHole: rand(2) === 0, fua, fastZero: false });
      else await vol.trim(offsetBytes, lengthBytes, fua);
      const ackAt = (op.ackAt = plfs.mark());
      if (fua && cutRng() < 0.3) snap('FUA answered');
      // TRIM is advisory: what it left is what reads back now.
      if (kind === 'trim') op.value = await readVolume(vol, offsetBytes, lengthBytes);
      busy.splice(busy.indexOf(r), 1);
      history.push({ at: ackAt, what: `op #${no} acked ${ackAt}: ${kind}${fua ? ' FUA' : ''} ${offsetBytes}+${lengthBytes} (chunks ${Math.floor(offsetBytes / cs)}-${Math.floor((offsetBytes + lengthBytes - 1) / cs)})` });
    }
  }
  for (let round = 0; round < 120; round++) {
    const n = 1 + rand(4);
    // Cuts inside the round too: after any modelled call (a copy's write or
    // fdatasync, a RELEASE's delete, a file's O_TRUNC sync...), requests in flight.
    await plfs.pumpBeside(Promise.all(Array.from({ length: n }, () => one(rand(100)))), rng, () => {
      if (cutRng() < 0.02) snap('mid-round');
    });
    if (rand(5) === 0) {
      // A cut between rounds: nothing in flight, every commit landed.
      await m.meta.durable();
      snap('between rounds');
    }
  }
  // Three crash states per cut, each pool's file as its model kept it.
  const states: { snap: IndexSnapshot; images: Buffer[] }[] = [];
  const lost = { writes: 0, torn: 0 };
  for (const s of snapshots) {
    for (let k = 0; k < 3; k++) {
      const images = models.map(({ model, file }) => {
        const into = fs.mkdtempSync(path.join(dir, 'state-'));
        const cs = model.crashState(s.cut, rng, into, k === 0 ? 'lose' : undefined);
        lost.writes += cs.writesLost;
        lost.torn += cs.writesTorn;
        const f = path.join(into, path.basename(file));
        const img = fs.existsSync(f) ? fs.readFileSync(f) : null;
        fs.rmSync(into, { recursive: true });
        return img;
      });
      states.push({ snap: s, images: images as Buffer[] });
    }
  }
  await plfs.pumpBeside(m.close(), rng);
  for (const { model } of models) model.untrack();
  // The index as the run left it; each state puts its snapshot's record and chunk map into a copy.
  const finalMeta = path.join(dir, 'meta-final');
  fs.cpSync(metaDir, finalMeta, { recursive: true });
  let checked = 0;
  const why = new Map<string, number>();
  for (const st of states) {
    const cut = st.snap.cut;
    why.set(st.snap.why, (why.get(st.snap.why) ?? 0) + 1);
    fs.rmSync(metaDir, { recursive: true });
    fs.cpSync(finalMeta, metaDir, { recursive: true });
    await restoreIndex(path.join(dir, 'data'), id, st.snap);
    models.forEach(({ file }, i) => {
      const img = st.images[i];
      if (img === null || img === undefined) fs.rmSync(file, { force: true });
      else fs.writeFileSync(file, img);
    });
    // What the client knows at the cut: durable = FUA acknowledged, or acknowledged before a FLUSH that answered.
    const expect = new Model(volumeBytes);
    // Requests issued before the cut and not answered by it may have landed in part or not at all.
    for (const o of ops) {
      if (o.issueAt >= cut) continue;
      const e = expect.begin(o.kind, o.offsetBytes, o.lengthBytes, o.value);
      e.done = o.ackAt < cut;
      if ((o.fua && o.ackAt < cut) || flushes.some((f) => f.issueAt > o.ackAt && f.doneAt < cut)) expect.makeDurable(e);
    }
    const where = () => `seed ${seed}, cut ${cut} (${st.snap.why}), after:\n${history.filter((h) => h.at < cut).slice(-30).map((h) => h.what).join('\n')}`;
    const m2 = await openManager(dir, false);
    try {
      const v2 = m2.openVolume('v');
      const got = await readVolume(v2, 0, volumeBytes);
      assert.deepEqual(expect.violations(got), [], where());
      // Then one sector written into each chunk: the rest of the chunk must
      // read as before (a chunk first allocated now over bytes a lost entry or
      // an undone truncate left must be zeroed first).
      for (let c = 0; c < chunks; c++) {
        const at = c * cs + 512 * Math.floor(cutRng() * (cs / 512));
        const b = crypto.randomBytes(512);
        await writeVolume(v2, at, b);
        b.copy(got, at);
      }
      const again = await readVolume(v2, 0, volumeBytes);
      for (let at = 0; at < volumeBytes; at += 512) {
        if (!again.subarray(at, at + 512).equals(got.subarray(at, at + 512))) assert.fail(`a sector write after the crash changed byte ${at} (chunk ${Math.floor(at / cs)}) beside it: ${where()}`);
      }
      checked++;
    } finally {
      await m2.close();
    }
  }
  // Coverage: what the run did and what its crash states lost.
  const moves = history.filter((h) => h.what.includes(' moved to ')).length;
  const placements = history.filter((h) => h.what.includes('placement')).length;
  const releases = history.filter((h) => /release.* \S+-0/.test(h.what)).length;
  t.diagnostic(JSON.stringify({ seed, checked, cuts: Object.fromEntries(why), moves, placements, releases, flushes: flushes.length, ...lost }));
  assert.ok(checked >= 30 && (why.get('mid-round') ?? 0) >= 10 && (why.get('flush answered') ?? 0) >= 3 && moves + releases >= 3 && placements >= 2 && releases >= 1 && flushes.length >= 10 && lost.writes > 0 && lost.torn > 0, JSON.stringify({ checked, cuts: Object.fromEntries(why), moves, placements, releases, flushes: flushes.length, ...lost }));
});

test('a volume created, written and flushed: every crash state after the FLUSH has the volume with its bytes (the new file name, its size and data all durable)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-vol-plfs-create-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const m = await openManager(dir, true);
  const hot = m.pools.get('hot-0')!;
  hot.ensureDirs();
  const plfs = PowerLossFs.install(t);
  const model = plfs.track(path.join(hot.rec.path, 'volumes'));
  const rng = seededRandom(3);
  await plfs.pumpBeside(m.createVolume({ name: 'v', sizeBytes: 4 * MiB, pool: 'hot-0' }), rng);
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(3 * MiB + 4096);
  await plfs.pumpBeside(writeVolume(vol, 4096, want), rng);
  await plfs.pumpBeside(vol.flush(), rng);
  const cut = plfs.mark();
  const file = hot.volumeFile(vol.rec.id);
  const images: Buffer[] = [];
  for (let s = 0; s < 12; s++) {
    const into = fs.mkdtempSync(path.join(dir, 'state-'));
    model.crashState(cut, rng, into, s === 0 ? 'lose' : undefined);
    const f = path.join(into, path.basename(file));
    assert.ok(fs.existsSync(f), 'the new volume file is in the crash state');
    images.push(fs.readFileSync(f));
    fs.rmSync(into, { recursive: true });
  }
  await plfs.pumpBeside(m.close(), rng);
  model.untrack();
  for (const image of images) {
    fs.writeFileSync(file, image);
    const m2 = await openManager(dir, false);
    try {
      const got = await readVolume(m2.openVolume('v'), 0, 4 * MiB);
      assert.ok(got.subarray(0, 4096).equals(Buffer.alloc(4096)) && got.subarray(4096, 4096 + want.length).equals(want) && got.subarray(4096 + want.length).equals(Buffer.alloc(4 * MiB - 4096 - want.length)), 'the flushed bytes read back');
    } finally {
      await m2.close();
    }
  }
});
