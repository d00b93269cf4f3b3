// Preservation mode (`serve --preserve`, `volumes migrate --preserve`): after
// a hot -> cold migration the old copy stays in the volume's file on the hot
// pool; without it, RELEASE truncates that file to zero bytes. After a
// cold -> hot one the old stripes stay referenced (compaction keeps them,
// fsck counts them) until `volumes release` frees them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { COLD_POOLS, api, assertSameBytes, destage, dropCache, patternBytes, readExport, segmentBytes, startColdDaemon } from './helpers/cold.js';
import { coldStatus, decisionFor, nbdcopyIn, nbdcopyOut, policyNamed, policyYaml, randomFile, reconcile, sleep, startControlDaemon, volume, waitForLog, WINDOW_SETTLE_MS, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const DATA_BYTES = 8 * MiB;

async function volumeFile(d: TestDaemon, name: string): Promise<string> {
  const rec = await volume(d, name);
  return path.join(d.dataDir, 'pools', 'hot-0', 'volumes', `${rec.id}.dat`);
}

test('--preserve keeps the hot copy after hot -> cold; without it the file is released', async (t) => {
  // Both daemons run side by side so their heat windows overlap.
  const kept = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') }, args: ['--preserve'] });
  const released = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') } });
  t.after(async () => {
    await kept.cleanup();
    await released.cleanup();
  });
  const source = path.join(kept.dataDir, 'src.bin');
  randomFile(source, DATA_BYTES);
  const expected = fs.readFileSync(source);
  for (const d of [kept, released]) {
    await createVolume(d, 'v', 16 * MiB);
    nbdcopyIn(source, d.exportUri('v'));
    assert.ok(fs.readFileSync(await volumeFile(d, 'v')).subarray(0, DATA_BYTES).equals(expected), 'bytes are in the hot file before');
  }
  await sleep(WINDOW_SETTLE_MS);
  for (const d of [kept, released]) {
    const p = policyNamed(await reconcile(d, true), 'tiering');
    assert.equal(decisionFor(p, 'v').action, 'migrate');
    assert.equal(p.migrationHistory[0]?.result, 'succeeded');
    assert.equal((await volume(d, 'v')).tier, 'cold');
    assert.equal((await coldStatus(d)).stripes.Healthy, DATA_BYTES / MiB);
  }
  await waitForLog(kept, /migration started .*volume=v .*preservationMode=true/);
  await waitForLog(released, /migration started .*volume=v .*preservationMode=false/);

  const keptFile = fs.readFileSync(await volumeFile(kept, 'v'));
  assert.ok(keptFile.length >= DATA_BYTES, `preserved file is ${keptFile.length} bytes`);
  assert.ok(keptFile.subarray(0, DATA_BYTES).equals(expected), 'preservation mode: the old copy still holds the bytes');
  assert.equal(fs.statSync(await volumeFile(released, 'v')).size, 0, 'without --preserve the old copy is released');

  // Either way the volume reads its data from the cold tier.
  for (const d of [kept, released]) {
    assert.ok(nbdcopyOut(d.exportUri('v'), path.join(d.dataDir, 'back.bin'), DATA_BYTES).equals(expected));
  }
});

// ---- cold -> hot ----------------------------------------------------------

/** 1 MiB segments hold three 256 KiB shard records: 8 stripes seal segments on every pool. */
const SEGMENT_BYTES = MiB;
const COLD_CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${SEGMENT_BYTES}\n  compaction:\n    intervalMs: 0\n`;
/** One shard record of a 1 MiB 4+2 stripe: 256 KiB of data plus its header. */
const RECORD_BYTES = 256 * 1024 + 64;
const COLD_MIB = 8;

interface FsckJson {
  stripes: { Healthy: number; Degraded: number; Failed: number };
  badShards: unknown[];
  orphanRecords: number;
  preservedStripes: number;
}

/** `couchestor fsck` on a stopped daemon's data dir: no bad shard, nothing Degraded or Failed. */
function fsckClean(d: TestDaemon): FsckJson {
  const f = d.cli('fsck');
  assert.equal(f.status, 0, `fsck: ${f.stdout}\n${f.stderr}`);
  const r = JSON.parse(f.stdout) as FsckJson;
  assert.deepEqual(r.badShards, []);
  assert.equal(r.stripes.Degraded, 0);
  assert.equal(r.stripes.Failed, 0);
  return r;
}

function cliJson<T>(d: TestDaemon, ...args: string[]): T {
  const r = d.cli(...args);
  assert.equal(r.status, 0, `couchestor ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

function coldSegmentBytes(d: TestDaemon): number[] {
  return Array.from({ length: COLD_POOLS }, (_, i) => segmentBytes(d, i));
}

/** A cold volume holding `COLD_MIB` destaged stripes; returns its bytes. */
async function coldVolumeWithData(d: TestDaemon, name: string, seed: number): Promise<Buffer> {
  await api<unknown>(d, 'POST', '/v1/volumes', { name, sizeBytes: COLD_MIB * MiB, tier: 'cold' });
  const want = patternBytes(COLD_MIB * MiB, seed);
  const src = path.join(d.dataDir, `src-${name}.bin`);
  fs.writeFileSync(src, want);
  nbdcopyIn(src, d.exportUri(name));
  fs.rmSync(src);
  await destage(d);
  return want;
}

/**
 * Writes chunk c of `bytes` with nbdsh (FLUSHed), then destages it: one
 * stripe per call, so the shard records land in the segments in call order.
 */
async function writeChunkAndDestage(d: TestDaemon, name: string, c: number, bytes: Buffer): Promise<void> {
  const piece = path.join(d.dataDir, 'piece.bin');
  fs.writeFileSync(piece, bytes.subarray(c * MiB, (c + 1) * MiB));
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri(name))})\nh.pwrite(open(${JSON.stringify(piece)}, 'rb').read(), ${c * MiB})\nh.flush()`);
  await destage(d);
}

async function hotFile(d: TestDaemon, name: string): Promise<Buffer> {
  const rec = await volume(d, name);
  return fs.readFileSync(path.join(d.dataDir, 'pools', rec.poolName, 'volumes', `${rec.id}.dat`));
}

test('cold -> hot --preserve keeps the old stripes through compaction, a restart and a destage; volumes release frees them', async (t) => {
  const d = await startColdDaemon(COLD_CONFIG);
  t.after(() => d.cleanup());
  await api<unknown>(d, 'POST', '/v1/volumes', { name: 'v', sizeBytes: COLD_MIB * MiB, tier: 'cold' });
  // One stripe per destage, in order: per pool the segments hold chunks
  // {0,1,2} {3,4,5} {6,7,0'} {1',3',4'} {6',7'}. Overwriting chunks
  // 0,1,3,4,6,7 leaves each of the first three segments 2/3 dead with one
  // record still live: compaction must copy it out and flip its ref.
  const want = patternBytes(COLD_MIB * MiB, 41);
  for (let c = 0; c < COLD_MIB; c++) await writeChunkAndDestage(d, 'v', c, want);
  patternBytes(COLD_MIB * MiB, 51).copy(want, 0, 0, 2 * MiB);
  for (const c of [3, 4, 6, 7]) patternBytes(MiB, 60 + c).copy(want, c * MiB);
  for (const c of [0, 1, 3, 4, 6, 7]) await writeChunkAndDestage(d, 'v', c, want);
  const liveBytes = COLD_MIB * RECORD_BYTES;

  const moved = cliJson<{ phase: string; from: string; to: string }>(d, 'volumes', 'migrate', 'v', 'hot', '--preserve');
  assert.equal(moved.phase, 'Done');
  assert.equal((await volume(d, 'v')).tier, 'hot');
  assertSameBytes((await hotFile(d, 'v')).subarray(0, COLD_MIB * MiB), want, 'hot file after the migration');
  const compacted = cliJson<{ segmentsCompacted: number; copiedBytes: number }>(d, 'compact');
  t.diagnostic(`compact after the preserving migration: ${JSON.stringify(compacted)}`);
  // The live records of the three mixed segments, on every pool: preserved refs relocated (fsck below checks they were flipped).
  assert.ok(compacted.segmentsCompacted >= 3 * COLD_POOLS, `compacted ${compacted.segmentsCompacted} segments`);
  assert.equal(compacted.copiedBytes, 3 * COLD_POOLS * RECORD_BYTES, 'one preserved record copied out of each mixed segment');
  const kept = coldSegmentBytes(d);
  for (const [i, bytes] of kept.entries()) assert.ok(bytes >= liveBytes, `pool cold-${i}: ${bytes} segment bytes, the preserved records are ${liveBytes}`);

  // Restart: the preserved refs are re-read from LMDB; fsck counts them as referenced.
  assert.equal(await d.stop(), 0);
  let f = fsckClean(d);
  assert.equal(f.preservedStripes, COLD_MIB);
  assert.equal(f.stripes.Healthy, COLD_MIB, 'the preserved stripes are whole');
  assert.equal(f.orphanRecords, 0, 'no preserved record is an orphan');
  const d2 = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => d2.kill());
  assertSameBytes(readExport(d2, 'v', path.join(d.dataDir, 'back.bin')), want, 'read back from the hot file');
  cliJson(d2, 'compact');
  assert.deepEqual(coldSegmentBytes(d2).map((b) => b >= liveBytes), Array(COLD_POOLS).fill(true), 'a pass after the restart keeps them too');

  // Back to cold (no --preserve): the destage of every chunk must carry the preserved ref along.
  assert.equal(cliJson<{ phase: string }>(d2, 'volumes', 'migrate', 'v', 'cold').phase, 'Done');
  cliJson(d2, 'compact');
  await dropCache(d2);
  assertSameBytes(readExport(d2, 'v', path.join(d.dataDir, 'back2.bin')), want, 'read back from new stripes');
  assert.equal(await d2.stop(), 0);
  f = fsckClean(d);
  assert.equal(f.preservedStripes, COLD_MIB, 'the destage kept the preserved refs');
  assert.equal(f.stripes.Healthy, 2 * COLD_MIB, 'live + preserved stripes');
  const d3 = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => d3.kill());

  const released = cliJson<{ volume: string; stripesFreed: number }>(d3, 'volumes', 'release', 'v');
  assert.equal(released.stripesFreed, COLD_MIB);
  assert.equal(cliJson<{ stripesFreed: number }>(d3, 'volumes', 'release', 'v').stripesFreed, 0, 'a second release has nothing left to free');
  const before = coldSegmentBytes(d3);
  cliJson(d3, 'compact');
  const after = coldSegmentBytes(d3);
  t.diagnostic(`segment bytes per cold pool: preserved ${kept.join(', ')}; before release+compact ${before.join(', ')}; after ${after.join(', ')}`);
  // Live: the volume's own 8 stripes; bound as in cold-segment-compaction: live + head + one sealed segment not over the threshold.
  for (const [i, bytes] of after.entries()) {
    assert.ok(bytes <= liveBytes + 2 * SEGMENT_BYTES, `pool cold-${i}: ${bytes} segment bytes after release + compact (live ${liveBytes})`);
    assert.ok(bytes < before[i]!, `pool cold-${i}: release let compaction reclaim (${before[i]} -> ${bytes})`);
  }
  await dropCache(d3);
  assertSameBytes(readExport(d3, 'v', path.join(d.dataDir, 'back3.bin')), want, 'read back after release');
  assert.equal(await d3.stop(), 0);
  f = fsckClean(d);
  assert.equal(f.preservedStripes, 0);
  assert.equal(f.stripes.Healthy, COLD_MIB);
});

test('cold -> hot without --preserve frees the stripes; deleting a volume frees its preserved stripes', async (t) => {
  const d = await startColdDaemon(COLD_CONFIG);
  t.after(() => d.cleanup());
  const want = await coldVolumeWithData(d, 'plain', 42);
  assert.equal(cliJson<{ phase: string }>(d, 'volumes', 'migrate', 'plain', 'hot').phase, 'Done');
  cliJson(d, 'compact');
  const plain = coldSegmentBytes(d);
  // Only the head segment (never compacted) may be left: under 3 records.
  for (const [i, bytes] of plain.entries()) assert.ok(bytes <= SEGMENT_BYTES, `pool cold-${i}: ${bytes} segment bytes left without --preserve`);
  assertSameBytes(readExport(d, 'plain', path.join(d.dataDir, 'back.bin')), want, 'read back from the hot file');

  await coldVolumeWithData(d, 'gone', 43);
  assert.equal(cliJson<{ phase: string }>(d, 'volumes', 'migrate', 'gone', 'hot', '--preserve').phase, 'Done');
  cliJson(d, 'compact');
  const preserved = coldSegmentBytes(d);
  for (const [i, bytes] of preserved.entries()) assert.ok(bytes >= COLD_MIB * RECORD_BYTES, `pool cold-${i}: ${bytes} segment bytes while preserved`);
  const del = d.cli('volumes', 'delete', 'gone');
  assert.equal(del.status, 0, del.stderr);
  cliJson(d, 'compact');
  const after = coldSegmentBytes(d);
  t.diagnostic(`segment bytes per cold pool: without --preserve ${plain.join(', ')}; preserved ${preserved.join(', ')}; after delete ${after.join(', ')}`);
  for (const [i, bytes] of after.entries()) assert.ok(bytes <= SEGMENT_BYTES, `pool cold-${i}: ${bytes} segment bytes after deleting the volume`);
  assert.equal(await d.stop(), 0);
  const f = fsckClean(d);
  assert.equal(f.preservedStripes, 0);
  assert.equal(f.stripes.Healthy, 0);
});
