// BLOCK_STATUS's per-group counts against a brute-force oracle: a volume of
// 8 KiB chunks (a 2+1 policy's stripes, 4,096 chunks = 32 MiB a group, its
// last group and last chunk partial) goes through random writes, zero writes,
// WRITE_ZEROES with and without NO_HOLE, TRIM, whole groups written and
// trimmed, hot -> cold and back, destages, growth across group edges,
// restarts and closes of a lent volume; after each step every answer of
// blockStatus (whole volume as a client walks it, random ranges, REQ_ONE) is
// checked chunk by chunk against the chunk map and the journal, and no chunk
// holding a non-zero byte may read as a hole (a copy would skip it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { prng } from './helpers/cold.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 8 * KiB;
const GROUP_BYTES = 4096 * CHUNK;
const ZERO_CHUNK = Buffer.alloc(CHUNK);
const POLICY = DEFAULT_EC_POLICY_YAML.replace('dataShards: 4', 'dataShards: 2').replace('parityShards: 2', 'parityShards: 1').replace('stripeSizeBytes: 1048576', `stripeSizeBytes: ${CHUNK}`);

async function openManager(dir: string, create: boolean): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  if (create) {
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 4096 * MiB, labels: { tier: 'hot' } });
    for (let i = 0; i < 3; i++) await m.putPool({ name: `cold-${i}`, path: path.join(dir, `cold-${i}`), tier: 'cold', capacityBytes: 4096 * MiB, labels: { tier: 'cold' } });
  }
  m.startColdTier(parsePolicyYaml(POLICY, 3), { intervalMs: 3_600_000, thresholdPercent: 90, concurrency: 2 });
  return m;
}

/** The bytes a volume must read: chunks ever written, by index (any other reads as zeros). */
class Model {
  readonly chunks = new Map<number, Buffer>();
  write(off: number, data: Buffer): void {
    for (let pos = off; pos < off + data.length; ) {
      const c = Math.floor(pos / CHUNK);
      const end = Math.min(off + data.length, (c + 1) * CHUNK);
      let buf = this.chunks.get(c);
      if (buf === undefined) this.chunks.set(c, (buf = Buffer.alloc(CHUNK)));
      data.copy(buf, pos - c * CHUNK, pos - off, end - off);
      pos = end;
    }
  }
  zero(off: number, len: number): void {
    for (const [c, buf] of this.chunks) {
      const a = Math.max(off, c * CHUNK);
      const b = Math.min(off + len, (c + 1) * CHUNK);
      if (a < b) buf.fill(0, a - c * CHUNK, b - c * CHUNK);
    }
  }
  /** Reads back every chunk it holds from `vol` (after a TRIM: what it discarded reads as zeros) or compares them. */
  async sync(vol: Volume, off: number, len: number, compare: string | null): Promise<void> {
    for (const [c, buf] of this.chunks) {
      if ((c + 1) * CHUNK <= off || c * CHUNK >= off + len) continue;
      const n = Math.min(CHUNK, vol.sizeBytes - c * CHUNK);
      const got = await readVolume(vol, c * CHUNK, n);
      if (compare === null) got.copy(buf);
      else assert.ok(got.equals(buf.subarray(0, n)), `${compare}: chunk ${c} reads other bytes`);
    }
  }
}

/** What blockStatus must say of chunk c: data when Allocated, Cold or journaled. */
function oracle(m: VolumeManager, vol: Volume, c: number): boolean {
  const st = vol.chunkState[c];
  return st === ChunkState.Allocated || st === ChunkState.Cold || m.cold!.journal.extents(vol.rec.id, c) !== undefined;
}

/** Checks one answer over [off, off+len) chunk by chunk; returns the bytes it covers. */
function checkAnswer(m: VolumeManager, vol: Volume, off: number, len: number, maxExtents: number, what: string): number {
  const ext = vol.blockStatus(off, len, maxExtents);
  assert.ok(ext.length >= 1 && ext.length <= maxExtents, `${what}: ${ext.length} extents for at most ${maxExtents}`);
  let pos = off;
  for (const e of ext) {
    assert.ok(e.lengthBytes > 0, `${what}: empty extent`);
    const hole = e.flags !== 0;
    assert.ok(e.flags === 0 || e.flags === 3, `${what}: flags ${e.flags}`);
    const first = Math.floor(pos / CHUNK);
    const last = Math.floor((pos + e.lengthBytes - 1) / CHUNK);
    for (let c = first; c <= last; c++) {
      if (oracle(m, vol, c) === hole) assert.fail(`${what}: chunk ${c} (group ${c >> 12}) answered ${hole ? 'hole' : 'data'} in extent [${pos}, +${e.lengthBytes}), the chunk map says ${hole ? 'data' : 'hole'} (state ${vol.chunkState[c]})`);
    }
    pos += e.lengthBytes;
  }
  const covered = pos - off;
  assert.ok(covered > 0 && covered <= len, `${what}: covers ${covered} of ${len}`);
  // Less than asked only where the reply had to stop: at maxExtents, or at the budget (a chunk edge).
  if (covered < len && ext.length < maxExtents) assert.equal(pos % CHUNK, 0, `${what}: a short reply ends mid-chunk at ${pos}`);
  return covered;
}

function checkAll(m: VolumeManager, vol: Volume, model: Model, rand: () => number, step: string): void {
  const size = vol.sizeBytes;
  // Every chunk with a non-zero byte holds data (else a copy skips it).
  for (const [c, buf] of model.chunks) {
    if (!oracle(m, vol, c) && !buf.equals(ZERO_CHUNK)) assert.fail(`${step}: chunk ${c} holds data but its state is ${vol.chunkState[c]}, not journaled`);
  }
  // The whole volume as a client maps it: 4 GiB - 4 KiB requests, each from where the last answer ended.
  for (const maxExtents of [1024, 1]) {
    for (let off = 0; off < size; ) off += checkAnswer(m, vol, off, Math.min(size - off, 2 ** 32 - 4096), maxExtents, `${step} map(max ${maxExtents}) at ${off}`);
  }
  for (let i = 0; i < 40; i++) {
    const off = Math.floor(rand() * size);
    const len = 1 + Math.floor(rand() * Math.min(size - off, rand() < 0.5 ? 3 * GROUP_BYTES : 4 * CHUNK));
    checkAnswer(m, vol, off, len, rand() < 0.3 ? 1 : 1024, `${step} range [${off}, +${len})`);
  }
}

test('BLOCK_STATUS answers match a per-chunk oracle through writes, zeroes, trims, tier moves, destages, growth and reopens', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-bs-oracle-'));
  let m = await openManager(dir, true);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const next = prng(Number(process.env.BS_ORACLE_SEED ?? 7));
  const rand = (): number => next() / 2 ** 32;
  // 18 whole groups (> 65,536 chunks: a whole-volume answer hits the budget) and a partial one ending mid-chunk.
  let size = 18 * GROUP_BYTES + 5 * CHUNK + 1536;
  await m.createVolume({ name: 'v', sizeBytes: size, pool: 'hot-0', chunkSizeBytes: CHUNK });
  let vol = m.openVolume('v');
  const model = new Model();
  const pick = (maxLen: number): [number, number] => {
    const off = Math.floor(rand() * size);
    return [off, 1 + Math.floor(rand() * Math.min(size - off, maxLen))];
  };
  // A few chunks in every group, so that groups are mixed (scanned) and the budget is reached.
  for (let g = 0; g * GROUP_BYTES < size; g++) {
    const at = g * GROUP_BYTES + Math.floor(rand() * Math.min(GROUP_BYTES, size - g * GROUP_BYTES - 512));
    const data = crypto.randomBytes(Math.min(512, size - at));
    await writeVolume(vol, at, data);
    model.write(at, data);
  }
  checkAll(m, vol, model, rand, 'seeded');
  type Op = 'write' | 'zero' | 'zero-no-hole' | 'trim' | 'fill-group' | 'fill-last-group' | 'migrate' | 'destage' | 'grow' | 'restart' | 'lend';
  const op = async (name: Op): Promise<string> => {
    const tier = vol.rec.tier;
    switch (name) {
      case 'write': {
        const [off, len] = pick(6 * CHUNK);
        const data = rand() < 0.2 ? Buffer.alloc(len) : crypto.randomBytes(len);
        await writeVolume(vol, off, data);
        model.write(off, data);
        return `write [${off}, +${len})${data.every((b) => b === 0) ? ' of zeros' : ''}`;
      }
      case 'zero':
      case 'zero-no-hole': {
        const noHole = name === 'zero-no-hole';
        // NO_HOLE writes (or, cold, journals) every byte: kept short.
        const [off, len] = pick(noHole ? 64 * CHUNK : 3 * GROUP_BYTES);
        await vol.writeZeroes(off, len, { noHole, fua: false, fastZero: false });
        model.zero(off, len);
        return `${name} [${off}, +${len})`;
      }
      case 'trim': {
        // On a cold volume, one journaled zero record per chunk (each destaged or promoted later): kept short.
        const [off, len] = pick(tier === 'cold' ? 64 * CHUNK : 3 * GROUP_BYTES);
        await vol.trim(off, len, false);
        // TRIM is advisory: what it discarded (whole chunks) now reads as zeros.
        await model.sync(vol, off, len, null);
        return `trim [${off}, +${len})`;
      }
      case 'fill-group':
      case 'fill-last-group': {
        // A whole group (or the partial last one) written: counted full, answered in one step.
        const last = Math.ceil(size / GROUP_BYTES) - 1;
        const g = name === 'fill-last-group' ? last : Math.floor(rand() * last);
        const at = g * GROUP_BYTES;
        const data = crypto.randomBytes(Math.min(GROUP_BYTES, size - at));
        await writeVolume(vol, at, data);
        model.write(at, data);
        return `fill group ${g}`;
      }
      case 'migrate': {
        const to = tier === 'cold' ? 'hot' : 'cold';
        const p = await migrateVolume(m, 'v', to, { preserve: false });
        assert.equal(p.phase, 'Done', `migrate to ${to}: ${JSON.stringify(p)}`);
        return `migrate ${tier} -> ${to}`;
      }
      case 'destage':
        await vol.flush();
        await m.cold!.destager.drain();
        return 'destage';
      case 'grow': {
        // Across at least one group edge.
        const grown = size + GROUP_BYTES + Math.floor((rand() * GROUP_BYTES) / 512) * 512 + 512;
        await m.resizeVolume('v', grown);
        size = grown;
        return `grow to ${grown}`;
      }
      case 'restart':
        await vol.flush();
        await m.close();
        m = await openManager(dir, false);
        // Lent, as NBD connections and background passes hold volumes (see 'lend').
        vol = m.borrowVolume('v');
        return 'restart';
      case 'lend': {
        // The loan given back closes the volume once quiet; lent again, it is
        // opened from the index a slice at a time (as NBD, the API and moves open).
        await vol.flush();
        const before = vol;
        m.giveBack(vol);
        vol = await m.borrowVolumeAsync('v');
        return `lend (${vol === before ? 'stayed open' : 'reopened'})`;
      }
    }
  };
  // A group filled while hot only after the last move to cold (4,096 stripes to write).
  const ops: Op[] = ['write', 'zero', 'zero-no-hole', 'trim', 'write', 'fill-last-group', 'restart', 'migrate', 'write', 'trim', 'write', 'zero-no-hole', 'restart', 'destage', 'lend', 'grow', 'write', 'migrate', 'fill-group', 'zero', 'write', 'trim', 'restart', 'lend'];
  const random = process.env.BS_ORACLE_STEPS !== undefined;
  const names: Op[] = ['write', 'write', 'write', 'zero', 'zero-no-hole', 'trim', 'fill-group', 'migrate', 'destage', 'grow', 'restart'];
  const steps = random ? Number(process.env.BS_ORACLE_STEPS) : ops.length;
  for (let s = 0; s < steps; s++) {
    const t0 = Date.now();
    const step = await op(random ? names[Math.floor(rand() * names.length)]! : ops[s]!);
    assert.equal(vol.sizeBytes, size);
    if (process.env.BS_ORACLE_DEBUG) console.log(s, step, Date.now() - t0);
    checkAll(m, vol, model, rand, `step ${s} (${step})`);
  }
  // What the volume reads is the model (the oracle's own check).
  await model.sync(vol, 0, size, 'volume reads back its model');

  // A cold volume with more journaled chunks than a group holds (empty groups
  // then looked at chunk by chunk), a few of them Cold: a TRIM over three
  // groups journals a zero record per chunk, data written inside it.
  const wSize = 6 * GROUP_BYTES + 3 * CHUNK;
  await m.createVolume({ name: 'w', sizeBytes: wSize, tier: 'cold', chunkSizeBytes: CHUNK });
  let w = m.openVolume('w');
  const wModel = new Model();
  const wWrite = async (off: number, len: number) => {
    const data = crypto.randomBytes(len);
    await writeVolume(w, off, data);
    wModel.write(off, data);
  };
  for (const off of [GROUP_BYTES - CHUNK, 2 * GROUP_BYTES + 100, 5 * GROUP_BYTES + 7 * CHUNK]) await wWrite(off, 2 * CHUNK);
  await w.flush();
  await m.cold!.destager.drain();
  await w.trim(GROUP_BYTES / 2 + 3, 3 * GROUP_BYTES, false);
  await wModel.sync(w, 0, wSize, null);
  await wWrite(2 * GROUP_BYTES + 9 * CHUNK, 3 * CHUNK);
  await wWrite(4 * GROUP_BYTES + 9 * CHUNK, CHUNK);
  assert.ok(m.cold!.journal.dirtyChunkCount(w.rec.id) > 4096);
  checkAll(m, w, wModel, rand, 'cold volume, long journal');
  await w.flush();
  await m.close();
  m = await openManager(dir, false);
  w = m.openVolume('w');
  checkAll(m, w, wModel, rand, 'cold volume, long journal, after a restart');
  await wModel.sync(w, 0, wSize, 'cold volume reads back its model');
});
