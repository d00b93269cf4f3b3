// Online migration between the hot and the warm pool: the volume's chunks
// move into the other pool's file while fio verify and nbdcopy write and read
// through NBD; the old file is deleted (or kept in preservation mode until
// `volumes release`); pool usage follows; an aborted move leaves the volume
// split, readable and writable, and a later move finishes it; the control
// loop places a volume whose heat is between the watermarks on the warm pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createVolume, decisionFor, FioJob, fioFill, nbdcopyIn, nbdcopyOut, policyNamed, policyYaml, randomFile, reconcile, sleep, WINDOW_SETTLE_MS, writePolicy } from './helpers/control-loop.js';
import { api, migrate, poolUsedBytes, readFileRange, startWarmDaemon, volumeFile, volumeRecord } from './helpers/hot-warm.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { analyzeMigration, migrateVolume, MigrationAborted, type MigrationProgress } from '../src/dataplane/volumes/migration.js';

const MiB = 1024 * 1024;

test('hot -> warm -> hot twice under fio verify: byte-exact, the file really moves, pool usage follows', async (t) => {
  const SIZE_BYTES = 48 * MiB;
  const FIXED_BYTES = 16 * MiB;
  const d = await startWarmDaemon();
  let job: FioJob | null = null;
  t.after(async () => {
    job?.kill();
    await d.cleanup();
  });
  const rec = await createVolume(d, 'mv', SIZE_BYTES);
  assert.equal(rec.poolName, 'hot-0');
  // [0, 16 MiB): known bytes written once by nbdcopy; the rest: fio's verify region.
  const source = path.join(d.dataDir, 'src.bin');
  randomFile(source, FIXED_BYTES);
  const want = fs.readFileSync(source);
  // Every chunk holds data before the first move, so usage is exact.
  fioFill(`${d.exportUri('mv')}`, SIZE_BYTES);
  nbdcopyIn(source, d.exportUri('mv'));
  assert.equal(await poolUsedBytes(d, 'hot-0'), SIZE_BYTES);
  job = new FioJob('writer', d.exportUri('mv'), [
    '--rw=randwrite', '--bs=4k', '--iodepth=8', `--offset=${FIXED_BYTES}`, `--size=${SIZE_BYTES - FIXED_BYTES}`,
    '--verify=crc32c', '--verify_backlog=64', '--verify_fatal=1', '--verify_state_save=0',
    '--time_based', '--runtime=600',
  ]);
  const scratch = path.join(d.dataDir, 'out.bin');
  const moves: string[] = [];
  for (let cycle = 0; cycle < 2; cycle++) {
    for (const [to, pool, old] of [['warm', 'warm-0', 'hot-0'], ['hot', 'hot-0', 'warm-0']] as const) {
      const done = await migrate(d, 'mv', to);
      moves.push(`${to}:${done.phase}:${done.chunksDone}`);
      assert.equal(done.toPool, pool);
      const now = await volumeRecord(d, 'mv');
      assert.equal(now.tier, to);
      assert.equal(now.poolName, pool);
      // The file moved: gone from the old pool, the new one holds the bytes.
      assert.equal(fs.existsSync(volumeFile(d, old, rec.id)), false, `${old} still has the volume file after the move to ${to}`);
      assert.ok(readFileRange(volumeFile(d, pool, rec.id), 0, FIXED_BYTES).equals(want), `the ${pool} file does not hold the volume's bytes`);
      assert.equal(await poolUsedBytes(d, pool), SIZE_BYTES);
      assert.equal(await poolUsedBytes(d, old), 0);
      // Read through NBD while fio keeps writing the other region.
      assert.ok(nbdcopyOut(d.exportUri('mv'), scratch, FIXED_BYTES).equals(want), `bytes differ after the move to ${to}`);
      assert.ok(job.running, `fio stopped during the move to ${to}`);
    }
  }
  const r = await job.stop();
  assert.equal(r.job.error, 0, `${r.stderr}\nmoves: ${moves.join(' ')}`);
  assert.ok(r.job.write.total_ios > 0 && r.job.read.total_ios > 0);
  // Every move copied the whole volume (48 chunks of 1 MiB).
  assert.deepEqual(moves.map((m) => m.split(':').slice(0, 2).join(':')), ['warm:Done', 'hot:Done', 'warm:Done', 'hot:Done']);
  assert.ok(moves.every((m) => Number(m.split(':')[2]) === SIZE_BYTES / MiB), moves.join(' '));
  t.diagnostic(`fio: ${r.job.write.total_ios} writes, ${r.job.read.total_ios} verified across 4 moves`);
});

test('preservation mode keeps the old pool file until volumes release; reads and writes use the new one', async (t) => {
  const d = await startWarmDaemon({ preservationMode: true });
  t.after(() => d.cleanup());
  const rec = await createVolume(d, 'keep', 8 * MiB);
  const source = path.join(d.dataDir, 'src.bin');
  randomFile(source, 8 * MiB);
  const want = fs.readFileSync(source);
  nbdcopyIn(source, d.exportUri('keep'));
  await migrate(d, 'keep', 'warm', true);
  const hotFile = volumeFile(d, 'hot-0', rec.id);
  const warmFile = volumeFile(d, 'warm-0', rec.id);
  assert.ok(fs.existsSync(hotFile), 'preservation mode deleted the old file');
  assert.ok(readFileRange(hotFile, 0, want.length).equals(want), 'the kept file lost its bytes');
  assert.ok(readFileRange(warmFile, 0, want.length).equals(want));
  assert.equal(await poolUsedBytes(d, 'hot-0'), 0);
  assert.equal(await poolUsedBytes(d, 'warm-0'), 8 * MiB);
  // New writes land in the warm file only: the kept copy is frozen.
  const next = crypto.randomBytes(8 * MiB);
  const nextFile = path.join(d.dataDir, 'next.bin');
  fs.writeFileSync(nextFile, next);
  nbdcopyIn(nextFile, d.exportUri('keep'));
  assert.ok(readFileRange(hotFile, 0, want.length).equals(want), 'a write after the move reached the kept file');
  assert.ok(nbdcopyOut(d.exportUri('keep'), path.join(d.dataDir, 'out.bin'), next.length).equals(next));
  const rel = await api<{ fileReleased: boolean }>(d, 'POST', '/v1/volumes/keep/release');
  assert.equal(rel.status, 200);
  assert.equal(rel.body.fileReleased, true);
  assert.equal(fs.existsSync(hotFile), false, 'volumes release left the kept file');
  assert.ok(nbdcopyOut(d.exportUri('keep'), path.join(d.dataDir, 'out.bin'), next.length).equals(next));
});

test('abort mid-move: the volume stays readable and writable across a restart, split between pools; a later move finishes it; ANALYZE picks the warm pool with room', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-hw-abort-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const CHUNKS = 32;
  const open = async (create: boolean) => {
    const m = VolumeManager.open(path.join(dir, 'meta'));
    if (create) {
      await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
      // Too small for the volume: ANALYZE must not pick it.
      await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 16 * MiB, labels: { tier: 'warm' } });
    }
    return m;
  };
  let m = await open(true);
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  let vol = m.openVolume('v');
  const want = crypto.randomBytes(CHUNKS * MiB);
  for (let c = 0; c < CHUNKS; c++) await writeVolume(vol, c * MiB, want.subarray(c * MiB, (c + 1) * MiB));
  await vol.flush();
  assert.match(analyzeMigration(m, vol, 'warm') ?? '', /no pool with tier=warm has room: warm-0 has 16777216 bytes free, needs 33554432/);
  await assert.rejects(migrateVolume(m, 'v', 'warm', { preserve: false }), /has room/);
  assert.equal(vol.rec.tier, 'hot');
  await m.putPool({ name: 'warm-1', path: path.join(dir, 'warm-1'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });

  // Abort once 16 chunks are across, while a writer keeps writing.
  const ac = new AbortController();
  let writing = true;
  let writes = 0;
  const writer = (async () => {
    while (writing) {
      const at = crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096;
      const data = crypto.randomBytes(4096);
      await writeVolume(vol, at, data);
      data.copy(want, at);
      writes++;
    }
  })();
  const moving = migrateVolume(m, 'v', 'warm', {
    preserve: false,
    signal: ac.signal,
    concurrency: 2,
    onProgress: (p: MigrationProgress) => {
      if (p.chunksDone >= 16) ac.abort();
    },
  });
  await assert.rejects(moving, (err: Error) => err instanceof MigrationAborted);
  writing = false;
  await writer;
  assert.ok(writes > 0);
  assert.equal(vol.rec.tier, 'hot', 'an aborted move reverts the tier');
  assert.equal(vol.rec.poolName, 'hot-0');
  const inUse = vol.poolsInUse().map((p) => p.name).sort();
  assert.deepEqual(inUse, ['hot-0', 'warm-1'], 'switched chunks stay on warm-1, the rest on hot-0');
  const onWarm = Array.from({ length: CHUNKS }, (_, c) => vol.chunkPool(c).name).filter((n) => n === 'warm-1').length;
  assert.ok(onWarm >= 16 && onWarm < CHUNKS, `${onWarm} chunks on warm-1`);
  assert.equal(m.pools.get('hot-0')!.usedBytes + m.pools.get('warm-1')!.usedBytes, CHUNKS * MiB);
  assert.equal(m.pools.get('warm-1')!.usedBytes, onWarm * MiB);
  // Writable across the split, including one write spanning a chunk on each pool.
  const boundary = Array.from({ length: CHUNKS - 1 }, (_, c) => c + 1).find((c) => vol.chunkPool(c - 1).name !== vol.chunkPool(c).name)!;
  assert.ok(boundary !== undefined);
  const span = crypto.randomBytes(64 * 1024);
  await writeVolume(vol, boundary * MiB - 32 * 1024, span);
  span.copy(want, boundary * MiB - 32 * 1024);
  await vol.flush();
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the abort');

  // Restart: both files are opened from the chunk map.
  await m.close();
  m = await open(false);
  vol = m.openVolume('v');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name).sort(), ['hot-0', 'warm-1']);
  assert.equal(m.pools.get('warm-1')!.usedBytes, onWarm * MiB);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the restart');

  // A later move finishes: only the chunks still on hot-0 are copied.
  const done = await migrateVolume(m, 'v', 'warm', { preserve: false });
  assert.equal(done.phase, 'Done');
  assert.equal(done.toPool, 'warm-1');
  assert.equal(done.chunksDone, CHUNKS - onWarm);
  assert.equal(vol.rec.tier, 'warm');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['warm-1']);
  assert.equal(fs.existsSync(m.pools.get('hot-0')!.volumeFile(vol.rec.id)), false);
  assert.equal(m.pools.get('hot-0')!.usedBytes, 0);
  assert.equal(m.pools.get('warm-1')!.usedBytes, CHUNKS * MiB);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want));
  // Deleting the volume gives every pool its space and files back.
  await m.deleteVolume('v');
  assert.equal(m.pools.get('warm-1')!.usedBytes, 0);
  assert.equal(fs.existsSync(m.pools.get('warm-1')!.volumeFile(vol.rec.id)), false);
  await m.close();
});

test('control loop: a volume whose heat is between the watermarks is moved to the warm pool (dry run first moves nothing)', async (t) => {
  const warmPolicy = (dryRun: boolean) => policyYaml('tiers', { warmPoolSelector: { matchLabels: { tier: 'warm' } }, dryRun });
  const d = await startWarmDaemon({ policies: { 'tiers.yaml': warmPolicy(true) } });
  let job: FioJob | null = null;
  t.after(async () => {
    job?.kill();
    await d.cleanup();
  });
  const rec = await createVolume(d, 'lukewarm', 16 * MiB);
  const source = path.join(d.dataDir, 'src.bin');
  randomFile(source, 8 * MiB);
  const want = fs.readFileSync(source);
  nbdcopyIn(source, d.exportUri('lukewarm'));
  // ~100 IOPS: between the watermarks (50, 200), on the other half of the volume.
  job = new FioJob('warmload', d.exportUri('lukewarm'), ['--rw=randwrite', '--bs=4k', '--iodepth=1', `--offset=${8 * MiB}`, `--size=${8 * MiB}`, '--rate_iops=100', '--time_based', '--runtime=600']);
  await sleep(WINDOW_SETTLE_MS);
  const dry = decisionFor(policyNamed(await reconcile(d, true), 'tiers'), 'lukewarm');
  assert.equal(dry.action, 'would-migrate', dry.reason);
  assert.equal(dry.targetTier, 'warm');
  assert.match(dry.reason, /between watermarks 50 and 200; dry run: would migrate hot -> warm/);
  assert.equal((await volumeRecord(d, 'lukewarm')).tier, 'hot');
  assert.ok(fs.existsSync(volumeFile(d, 'hot-0', rec.id)));
  assert.equal(fs.existsSync(volumeFile(d, 'warm-0', rec.id)), false, 'a dry run created a file on the warm pool');

  writePolicy(d, 'tiers.yaml', warmPolicy(false));
  let p = policyNamed(await reconcile(d, true), 'tiers');
  // The policy file is re-read on change; the first pass may still see the old one.
  if (decisionFor(p, 'lukewarm').action === 'would-migrate') p = policyNamed(await reconcile(d, true), 'tiers');
  const hist = p.migrationHistory.find((h) => h.volume === 'lukewarm');
  assert.ok(hist, JSON.stringify(p));
  assert.equal(hist.result, 'succeeded', hist.error);
  assert.equal(hist.from, 'hot');
  assert.equal(hist.to, 'warm');
  const now = await volumeRecord(d, 'lukewarm');
  assert.equal(now.tier, 'warm');
  assert.equal(now.poolName, 'warm-0');
  assert.equal(fs.existsSync(volumeFile(d, 'hot-0', rec.id)), false);
  assert.ok(job.running, 'the load ran through the move');
  const r = await job.stop();
  assert.equal(r.job.error, 0, r.stderr);
  assert.ok(nbdcopyOut(d.exportUri('lukewarm'), path.join(d.dataDir, 'out.bin'), want.length).equals(want));
  // Warm and staying warm: the next pass leaves it.
  job = new FioJob('warmload', d.exportUri('lukewarm'), ['--rw=randwrite', '--bs=4k', '--iodepth=1', `--offset=${8 * MiB}`, `--size=${8 * MiB}`, '--rate_iops=100', '--time_based', '--runtime=600']);
  await sleep(WINDOW_SETTLE_MS);
  const stay = decisionFor(policyNamed(await reconcile(d, true), 'tiers'), 'lukewarm');
  assert.equal(stay.action, 'stay', stay.reason);
  assert.match(stay.reason, /already warm/);
});

test('a write in flight when its chunk starts moving to the other pool is in the copy (never lost to the move)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-hw-race-'));
  const m = VolumeManager.open(path.join(dir, 'meta'));
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const hot = await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  const warm = await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 64 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, Buffer.alloc(MiB, 0x4f));
  // The loss needs the move's read of the source to overtake the client's
  // pwrite on the libuv pool: a race, so many rounds, each moving the chunk
  // to the other pool with a whole-chunk write in flight.
  const ROUNDS = 120;
  const lost: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const to = round % 2 === 0 ? warm : hot;
    await vol.setTier(to.rec.tier, to);
    const data = Buffer.alloc(MiB, 1 + (round % 250));
    const written = writeVolume(vol, 0, data);
    const moved = vol.ensurePromoted(0, true);
    await Promise.all([written, moved]);
    assert.equal(vol.chunkPool(0).name, to.name);
    if (!(await readVolume(vol, 0, MiB)).equals(data)) lost.push(round);
  }
  assert.deepEqual(lost, [], `acknowledged writes read back as older bytes in rounds ${lost.join(',')}`);
});

test('warm -> cold -> warm: destage reads the warm file, promote fills a warm pool file, journaled writes merged', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-hw-cold-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  const CHUNKS = 8;
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  const warmFile = m.pools.get('warm-0')!.volumeFile(vol.rec.id);
  const hotFile = m.pools.get('hot-0')!.volumeFile(vol.rec.id);
  assert.equal((await migrateVolume(m, 'v', 'warm', { preserve: false })).toPool, 'warm-0');
  assert.equal(fs.existsSync(hotFile), false);
  await migrateVolume(m, 'v', 'cold', { preserve: false });
  assert.equal(vol.rec.tier, 'cold');
  assert.equal(vol.stripes.size, CHUNKS);
  assert.equal(m.pools.get('warm-0')!.usedBytes, 0);
  assert.equal(fs.statSync(warmFile).size, 0, 'RELEASE after the move to cold left the warm file holding data');
  // Journaled on the cold volume, merged by the promote into the warm file.
  const patch = crypto.randomBytes(64 * 1024);
  await writeVolume(vol, 3 * MiB - 4096, patch);
  patch.copy(want, 3 * MiB - 4096);
  const back = await migrateVolume(m, 'v', 'warm', { preserve: false });
  assert.equal(back.toPool, 'warm-0');
  assert.equal(vol.rec.tier, 'warm');
  assert.equal(vol.stripes.size, 0);
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['warm-0']);
  assert.equal(m.pools.get('warm-0')!.usedBytes, CHUNKS * MiB);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want));
  assert.ok(readFileRange(warmFile, 0, CHUNKS * MiB).equals(want), 'the warm file does not hold the volume');
});
