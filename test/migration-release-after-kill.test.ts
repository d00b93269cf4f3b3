// A SIGKILL between a move's last SWITCH and its RELEASE: the volume record
// says which old files preservation mode keeps (keptFilePools, written with
// the tier switch), so fsck tells a leftover from a kept copy, and the next
// start finishes the RELEASE of the leftover only. The daemon is paused at
// that exact point (COUCHESTOR_TEST_PAUSE_BEFORE_RELEASE) and killed; flushed
// writes made before the move and while it was paused read back after the
// restart, both ways. Records written before the field (no list) keep the old
// meaning: every such file is kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { crashDaemons, TestDaemon } from './helpers/daemon.js';
import { RawNbd } from './helpers/nbd-client.js';
import { readVolume as readVolumeNbd } from './helpers/crash-model.js';
import { api, readFileRange, startWarmDaemon, volumeFile, volumeRecord } from './helpers/hot-warm.js';
import { fsckDataDir } from './helpers/cold.js';
import { openColdTierManager, readVolume, restartManager, tempDirClosing, writeVolume } from './helpers/volume.js';
import { fsck, type FsckReport } from '../src/dataplane/fsck.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import type { MigrationProgress } from '../src/dataplane/volumes/migration.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 8 * MiB;

const start = crashDaemons(startWarmDaemon);

/** A daemon whose moves stop for good once every SWITCH is durable (see migration.ts PAUSE_BEFORE_RELEASE). */
async function startPausing(): Promise<TestDaemon> {
  process.env.COUCHESTOR_TEST_PAUSE_BEFORE_RELEASE = '1';
  try {
    return await start();
  } finally {
    delete process.env.COUCHESTOR_TEST_PAUSE_BEFORE_RELEASE;
  }
}

/** Resolves with the volumes named by each `couchestor paused before-release` line, once `count` were printed. */
function pausedMoves(d: TestDaemon, count: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const seen: string[] = [];
    let text = '';
    const onData = (b: Buffer) => {
      text += b.toString();
      let nl: number;
      while ((nl = text.indexOf('\n')) >= 0) {
        const line = text.slice(0, nl);
        text = text.slice(nl + 1);
        const m = /^couchestor paused before-release (.*)$/.exec(line);
        if (m) seen.push((JSON.parse(m[1]!) as { volume: string }).volume);
      }
      if (seen.length >= count) {
        d.proc.stdout!.off('data', onData);
        resolve(seen.sort());
      }
    };
    d.proc.stdout!.on('data', onData);
    d.proc.once('exit', (code, sig) => reject(new Error(`daemon exited (${code ?? sig}) before ${count} moves paused (saw ${seen.join(',')}):\n${d.stderr}`)));
  });
}

/** Offline fsck of a stopped daemon's data directory, with the whole report (the helper's type names a subset). */
function fsckAll(dataDir: string): { report: FsckReport; stdout: string; stderr: string; status: number | null } {
  const f = fsckDataDir(dataDir);
  return { ...f, report: f.report as unknown as FsckReport };
}

async function writeFlushed(d: TestDaemon, name: string, at: number, data: Buffer): Promise<void> {
  const c = await RawNbd.connect({ port: d.info.nbd.port });
  try {
    await c.handshake(name);
    for (let o = 0; o < data.length; o += 4 * MiB) assert.equal((await c.writeAt(at + o, data.subarray(o, Math.min(data.length, o + 4 * MiB)))).error, 0);
    assert.equal((await c.flush()).error, 0);
  } finally {
    c.close();
  }
}

async function readAll(d: TestDaemon, name: string): Promise<Buffer> {
  const c = await RawNbd.connect({ port: d.info.nbd.port });
  try {
    await c.handshake(name);
    return await readVolumeNbd(c, VOLUME_BYTES);
  } finally {
    c.close();
  }
}

interface Case {
  name: string;
  to: 'warm' | 'cold';
  preserve: boolean;
}
const CASES: Case[] = [
  { name: 'warm-released', to: 'warm', preserve: false },
  { name: 'warm-kept', to: 'warm', preserve: true },
  { name: 'cold-released', to: 'cold', preserve: false },
  { name: 'cold-kept', to: 'cold', preserve: true },
];

test('SIGKILL between SWITCH and RELEASE: fsck tells leftovers from kept copies, the restart releases the leftovers only, flushed data reads back', async (t) => {
  let d = await startPausing();
  const ids = new Map<string, number>();
  const want = new Map<string, Buffer>();
  for (const c of CASES) {
    d.createVolume(c.name, `${VOLUME_BYTES}`);
    ids.set(c.name, (await volumeRecord(d, c.name)).id);
    const data = crypto.randomBytes(VOLUME_BYTES);
    await writeFlushed(d, c.name, 0, data);
    want.set(c.name, data);
  }
  // Every file on hot-0 holds the whole volume before the moves.
  const hotFile = (name: string) => volumeFile(d, 'hot-0', ids.get(name)!);
  for (const c of CASES) assert.equal(fs.statSync(hotFile(c.name)).size, VOLUME_BYTES);

  const paused = pausedMoves(d, CASES.length);
  const moves = CASES.map((c) =>
    api<MigrationProgress>(d, 'POST', `/v1/volumes/${c.name}/migrate`, { tier: c.to, preserve: c.preserve }).then(
      (r) => assert.fail(`the move of ${c.name} answered ${r.status} ${JSON.stringify(r.body)} instead of pausing`),
      () => undefined, // the kill cuts the request
    ),
  );
  assert.deepEqual(await paused, CASES.map((c) => c.name).sort());
  // Paused after the last SWITCH: the records name the new tier, and the
  // old hot-0 files are all still there, whole.
  for (const c of CASES) {
    const rec = await volumeRecord(d, c.name);
    assert.equal(rec.tier, c.to, c.name);
    assert.equal(fs.statSync(hotFile(c.name)).size, VOLUME_BYTES, `${c.name}: RELEASE ran before the pause`);
  }
  // Flushed writes while paused go to the new tier (warm-0's file, or the
  // cold journal): they must survive the kill and the RELEASE the restart finishes.
  for (const c of CASES) {
    const late = crypto.randomBytes(64 * 1024);
    const at = 3 * MiB + 12_288;
    await writeFlushed(d, c.name, at, late);
    late.copy(want.get(c.name)!, at);
  }
  await d.kill();
  await Promise.all(moves);

  // Offline: the non-preserving moves' hot-0 files are leftovers, the preserving ones' kept copies.
  {
    const f = fsckAll(d.dataDir);
    assert.equal(f.status, 0, `fsck after the kill\n${f.stdout}\n${f.stderr}`);
    assert.equal(f.report.leftoverVolumeFiles, 2, f.stderr);
    assert.equal(f.report.leftoverVolumeFileBytes, 2 * VOLUME_BYTES);
    assert.equal(f.report.preservedVolumeFiles, 2, f.stderr);
    assert.equal(f.report.preservedVolumeFileBytes, 2 * VOLUME_BYTES);
    assert.equal(f.report.orphanVolumeFileCount, 0);
    assert.match(f.stderr, /volume warm-released: pool hot-0 file \(8388608 bytes\) holds no chunk and is not kept: left by a RELEASE cut short/);
    assert.match(f.stderr, /volume cold-released: pool hot-0 file \(8388608 bytes\) holds no chunk and is not kept: left by a RELEASE cut short/);
    assert.match(f.stderr, /volume warm-kept: pool hot-0 file \(8388608 bytes\) holds no chunk: kept copy/);
    assert.match(f.stderr, /volume cold-kept: pool hot-0 file \(8388608 bytes\) holds no chunk: kept copy/);
  }

  d = await start(d.dataDir);
  // The restart finished the two RELEASEs: hot -> warm deletes the old
  // file, hot -> cold truncates the (still placement) file; the kept copies
  // are untouched, byte for byte the data before the move.
  assert.equal(fs.existsSync(hotFile('warm-released')), false, 'warm-released: the hot-0 leftover is still there');
  assert.equal(fs.statSync(hotFile('cold-released')).size, 0, 'cold-released: the placement file was not truncated');
  for (const name of ['warm-kept', 'cold-kept']) {
    assert.equal(fs.statSync(hotFile(name)).size, VOLUME_BYTES, `${name}: the kept copy changed size`);
    const before = want.get(name)!;
    const kept = readFileRange(hotFile(name), 0, VOLUME_BYTES);
    // The kept copy is the data as it was at the move (the later write went to the new tier).
    assert.ok(kept.subarray(0, 3 * MiB).equals(before.subarray(0, 3 * MiB)) && kept.subarray(4 * MiB).equals(before.subarray(4 * MiB)), `${name}: the kept copy's bytes changed`);
  }
  for (const c of CASES) {
    const got = await readAll(d, c.name);
    assert.ok(got.equals(want.get(c.name)!), `${c.name}: flushed data does not read back after the restart`);
    assert.equal((await volumeRecord(d, c.name)).tier, c.to);
  }
  assert.equal(await d.stop(), 0);
  {
    const f = fsckAll(d.dataDir);
    assert.equal(f.status, 0, f.stderr);
    assert.equal(f.report.leftoverVolumeFiles, 0, f.stderr);
    assert.equal(f.report.preservedVolumeFiles, 2, f.stderr);
  }
  // `volumes release` still frees the kept copies; data stays.
  d = await start(d.dataDir);
  for (const name of ['warm-kept', 'cold-kept']) {
    const r = d.cli('volumes', 'release', name);
    assert.equal(r.status, 0, r.stderr);
  }
  assert.equal(fs.existsSync(hotFile('warm-kept')), false);
  assert.equal(fs.statSync(hotFile('cold-kept')).size, 0);
  for (const c of CASES) assert.ok((await readAll(d, c.name)).equals(want.get(c.name)!), `${c.name} after volumes release`);
  t.diagnostic('4 moves paused after their last SWITCH and killed; 2 leftovers released at restart, 2 kept copies kept');
  await d.stop();
});

test('a record written before keptFilePools: a file no chunk is in stays kept at restart and in fsck; the next move records it as kept', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-legacy-kept-', () => m!);
  m = await openColdTierManager(dir);
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB, pool: 'hot-0' });
  let vol = m.openVolume('v');
  const id = vol.rec.id;
  const want = crypto.randomBytes(4 * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  const hotFile = m.pools.get('hot-0')!.volumeFile(id);
  // The state a kill between SWITCH and RELEASE leaves (hot -> warm, not preserving) ...
  await vol.setTier('warm', m.pools.get('warm-0')!);
  for (let c = 0; c < 4; c++) await vol.ensurePromoted(c, true);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['warm-0']);
  // ... in a record as an older daemon wrote it: no keptFilePools.
  const { keptFilePools: _dropped, ...legacy } = m.meta.volumes.get('v')!;
  await m.meta.volumes.put('v', legacy);
  ({ m, vol } = await restartManager(m, dir, 'v'));
  assert.equal(m.meta.volumes.get('v')!.keptFilePools, undefined);
  assert.deepEqual(await m.finishInterruptedReleases(), { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
  assert.equal(fs.statSync(hotFile).size, 4 * MiB, "the old record's file was released");
  const lines: string[] = [];
  const r = await fsck(m, (l) => lines.push(l));
  assert.equal(r.preservedVolumeFiles, 1, lines.join('\n'));
  assert.equal(r.leftoverVolumeFiles, 0, lines.join('\n'));
  assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want));
  // The next move (to cold, not preserving) writes the list: the file the
  // older daemon may have kept is listed as kept; the move's own source
  // (warm-0's file, truncated by its RELEASE) is not.
  await migrateVolume(m, 'v', 'cold', { preserve: false });
  assert.deepEqual(m.meta.volumes.get('v')!.keptFilePools, ['hot-0']);
  assert.equal(fs.statSync(m.pools.get('warm-0')!.volumeFile(id)).size, 0);
  assert.deepEqual(await m.finishInterruptedReleases(), { filesRemoved: 0, filesTruncated: 0, bytesPunched: 0 });
  assert.equal(fs.statSync(hotFile).size, 4 * MiB);
  assert.ok((await readVolume(vol, 0, 4 * MiB)).equals(want));
});
