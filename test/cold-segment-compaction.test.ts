// Segment compaction (space reclaim) of the cold tier, through real clients:
// nbdcopy/nbdsh over NBD and the admin API. Overwriting a cold volume keeps
// its pools' segment bytes bounded and reads back byte-exact; deleting a
// volume frees its segments; compaction racing with reads and overwrites
// returns the right bytes; a SIGKILL during compaction loses nothing and
// leaves fsck clean, its leftovers reclaimed by the next pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import os from 'node:os';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { createColdBucket, startS3 } from './helpers/s3-env.js';
import { CLIENT_ENV, TestDaemon, nbdsh, run } from './helpers/daemon.js';
import { COLD_POOLS, MiB, api, assertSameBytes, createVolume, destage, dropCache, patternBytes, prng, readExport, segmentBytes, startColdDaemon } from './helpers/cold.js';

/** 1 MiB segments hold three 256 KiB shard records: a few overwrites seal many segments. */
const SEGMENT_BYTES = MiB;
const manualConfig = (extra = '') =>
  `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${SEGMENT_BYTES}\n  compaction:\n    intervalMs: 0\n${extra}`;
const VOLUME_MIB = 8;

interface CompactResult {
  segmentsCompacted: number;
  reclaimedBytes: number;
  copiedBytes: number;
  segmentsDeferred: number;
  reclaimedBytesTotal: number;
}

const compact = (d: TestDaemon) => api<CompactResult>(d, 'POST', '/v1/compact');

function coldSegmentBytes(d: TestDaemon): number[] {
  return Array.from({ length: COLD_POOLS }, (_, i) => segmentBytes(d, i));
}

/** nbdcopy `bytes` onto the whole export (FLUSHed by nbdcopy at the end). */
function writeVolume(d: TestDaemon, name: string, bytes: Buffer): void {
  const src = path.join(d.dataDir, `w-${name}.bin`);
  fs.writeFileSync(src, bytes);
  run('nbdcopy', [src, d.exportUri(name)]);
  fs.rmSync(src);
}

/** nbdcopy the export into a file without blocking this process's event loop. */
function readExportAsync(d: TestDaemon, name: string, file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('nbdcopy', [d.exportUri(name), file], { env: CLIENT_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.once('exit', (code) => (code === 0 ? resolve(fs.readFileSync(file)) : reject(new Error(`nbdcopy exited ${code}: ${err}`))));
  });
}

async function poolUsedBytes(d: TestDaemon): Promise<Map<string, number>> {
  const pools = await api<{ name: string; tier: string; usedBytes: number }[]>(d, 'GET', '/v1/pools');
  return new Map(pools.filter((p) => p.tier === 'cold').map((p) => [p.name, p.usedBytes]));
}

async function metric(d: TestDaemon, name: string): Promise<number> {
  const text = await (await fetch(`http://${d.info.metrics.host}:${d.info.metrics.port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} missing from /metrics`);
  return Number(m[1]);
}

function fsckClean(d: TestDaemon): { orphanRecords: number } {
  const f = d.cli('fsck');
  assert.equal(f.status, 0, `fsck: ${f.stdout}\n${f.stderr}`);
  const r = JSON.parse(f.stdout) as { stripes: { Degraded: number; Failed: number }; badShards: unknown[]; orphanRecords: number };
  assert.deepEqual(r.badShards, []);
  assert.equal(r.stripes.Degraded, 0);
  assert.equal(r.stripes.Failed, 0);
  return r;
}

test('overwriting a cold volume many times keeps its segment bytes bounded and reads back byte-exact', async (t) => {
  const d = await startColdDaemon(manualConfig());
  t.after(() => d.cleanup());
  await createVolume(d, 'v', VOLUME_MIB * MiB, 'cold');
  const rounds = 6;
  let want: Buffer = Buffer.alloc(0);
  for (let r = 0; r < rounds; r++) {
    want = patternBytes(VOLUME_MIB * MiB, 100 + r);
    writeVolume(d, 'v', want);
    await destage(d);
    await compact(d);
  }
  const perPool = coldSegmentBytes(d);
  t.diagnostic(`segment bytes per cold pool after ${rounds} overwrites: ${perPool.join(', ')}`);
  // Live: one 256 KiB record per stripe per pool. Bound: live + the head segment
  // + one sealed segment's worth not yet over the dead threshold.
  const recordBytes = 256 * 1024 + 64;
  const liveBytes = VOLUME_MIB * recordBytes;
  for (const [i, bytes] of perPool.entries()) {
    assert.ok(bytes <= liveBytes + 2 * SEGMENT_BYTES, `pool cold-${i}: ${bytes} segment bytes after ${rounds} overwrites (live ${liveBytes})`);
  }
  // Without compaction every generation would still be there.
  assert.ok(perPool.reduce((a, b) => a + b, 0) < (rounds * VOLUME_MIB * recordBytes * COLD_POOLS) / 2);
  await dropCache(d);
  assertSameBytes(readExport(d, 'v', path.join(d.dataDir, 'back.bin')), want, 'read back after compactions');
  const used = await poolUsedBytes(d);
  for (let i = 0; i < COLD_POOLS; i++) assert.equal(used.get(`cold-${i}`), perPool[i], `cold-${i} usedBytes is its segment bytes`);
  assert.ok((await metric(d, 'couchestor_segment_reclaimed_bytes_total')) > 0);
  // After a restart (stripe refs re-read from LMDB) the bytes are still right, and fsck is clean.
  assert.equal(await d.stop(), 0);
  fsckClean(d);
  const d2 = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => d2.kill());
  assertSameBytes(readExport(d2, 'v', path.join(d.dataDir, 'back2.bin')), want, 'read back after restart');
});

test('deleting a cold volume frees its segments', async (t) => {
  const d = await startColdDaemon(manualConfig());
  t.after(() => d.cleanup());
  await createVolume(d, 'gone', VOLUME_MIB * MiB, 'cold');
  writeVolume(d, 'gone', patternBytes(VOLUME_MIB * MiB, 7));
  await destage(d);
  const before = coldSegmentBytes(d);
  const del = await fetch(`http://${d.info.api.host}:${d.info.api.port}/v1/volumes/gone`, { method: 'DELETE' });
  assert.equal(del.status, 204);
  const cli = d.cli('compact'); // the CLI's pass, same as POST /v1/compact
  assert.equal(cli.status, 0, cli.stderr);
  assert.ok(cli.stdout.trim().startsWith('{'), `compact printed: ${JSON.stringify(cli.stdout)} stderr ${cli.stderr}`);
  const r = JSON.parse(cli.stdout) as CompactResult;
  assert.ok(r.segmentsCompacted >= COLD_POOLS, `compacted ${r.segmentsCompacted} segments`);
  assert.equal(r.copiedBytes, 0, 'nothing live to copy');
  const after = coldSegmentBytes(d);
  for (let i = 0; i < COLD_POOLS; i++) {
    // Only the head segment (never compacted while appended to) may remain.
    assert.ok(after[i]! <= SEGMENT_BYTES && after[i]! < before[i]!, `cold-${i}: ${before[i]} -> ${after[i]} bytes`);
  }
});

test('promoting a cold volume to hot and trimming one free their segments', async (t) => {
  const d = await startColdDaemon(manualConfig());
  t.after(() => d.cleanup());
  const hotData = patternBytes(VOLUME_MIB * MiB, 31);
  await createVolume(d, 'p', VOLUME_MIB * MiB, 'cold');
  await createVolume(d, 't', VOLUME_MIB * MiB, 'cold');
  writeVolume(d, 'p', hotData);
  writeVolume(d, 't', patternBytes(VOLUME_MIB * MiB, 32));
  await destage(d);
  const before = coldSegmentBytes(d);
  await api<unknown>(d, 'POST', '/v1/volumes/p/migrate', { tier: 'hot' });
  nbdsh([`h.connect_uri(${JSON.stringify(d.exportUri('t'))})`, `h.trim(${VOLUME_MIB * MiB}, 0)`, 'h.flush()'].join('\n'));
  await destage(d);
  const r = await compact(d);
  const after = coldSegmentBytes(d);
  t.diagnostic(`cold segment bytes per pool: ${before.join(', ')} -> ${after.join(', ')}; pass ${JSON.stringify(r)}`);
  for (let i = 0; i < COLD_POOLS; i++) assert.ok(after[i]! <= SEGMENT_BYTES && after[i]! < before[i]!, `cold-${i}: ${before[i]} -> ${after[i]} bytes`);
  assertSameBytes(readExport(d, 'p', path.join(d.dataDir, 'p.bin')), hotData, 'promoted volume');
  assertSameBytes(readExport(d, 't', path.join(d.dataDir, 't.bin')), Buffer.alloc(VOLUME_MIB * MiB), 'trimmed volume');
});

test('compaction racing with reads and overwrites returns the right bytes', async (t) => {
  const d = await startColdDaemon(manualConfig());
  t.after(() => d.cleanup());
  await createVolume(d, 'r', VOLUME_MIB * MiB, 'cold');
  await createVolume(d, 'w', VOLUME_MIB * MiB, 'cold');
  let stable = patternBytes(VOLUME_MIB * MiB, 1);
  writeVolume(d, 'r', stable);
  let moving = patternBytes(VOLUME_MIB * MiB, 2);
  writeVolume(d, 'w', moving);
  await destage(d);
  for (let round = 0; round < 4; round++) {
    // Overwrite the whole of `r` once more so its old stripes are dead and its segments get compacted.
    stable = patternBytes(VOLUME_MIB * MiB, 10 + round);
    writeVolume(d, 'r', stable);
    moving = patternBytes(VOLUME_MIB * MiB, 20 + round);
    await destage(d);
    await dropCache(d);
    // Reads of `r` (stripes being moved) and a rewrite + destage of `w`, all while compaction runs.
    const reading = readExportAsync(d, 'r', path.join(d.dataDir, `race-${round}.bin`));
    const writing = (async () => {
      await new Promise<void>((resolve, reject) => {
        const src = path.join(d.dataDir, `w-${round}.bin`);
        fs.writeFileSync(src, moving);
        const p = spawn('nbdcopy', [src, d.exportUri('w')], { env: CLIENT_ENV, stdio: 'ignore' });
        p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nbdcopy write exited ${code}`))));
      });
      await destage(d);
    })();
    const [got] = await Promise.all([reading, writing, compact(d)]);
    assertSameBytes(got, stable, `round ${round}: read of r during compaction`);
  }
  await compact(d);
  await dropCache(d);
  assertSameBytes(readExport(d, 'r', path.join(d.dataDir, 'r.bin')), stable, 'r after the races');
  assertSameBytes(readExport(d, 'w', path.join(d.dataDir, 'w.bin')), moving, 'w after the races');
  const cold = await api<{ forwardedShardReads: number }>(d, 'GET', '/v1/cold');
  t.diagnostic(`shard reads that followed a compaction forward: ${cold.forwardedShardReads}`);
  assert.equal(await d.stop(), 0);
  fsckClean(d);
});

test('SIGKILL during compaction: every flushed byte reads back, fsck is clean, leftovers are reclaimed', async (t) => {
  // Background compaction every 100 ms, throttled to 1 MiB/s so a pass that copies spans the kill.
  const config = manualConfig().replace('    intervalMs: 0\n', '    intervalMs: 100\n    maxBytesPerSecond: 1048576\n');
  const d = await startColdDaemon(config);
  t.after(() => d.cleanup());
  await createVolume(d, 'k', VOLUME_MIB * MiB, 'cold');
  const model = patternBytes(VOLUME_MIB * MiB, 299);
  writeVolume(d, 'k', model);
  await destage(d);
  let daemon = d;
  t.after(() => daemon.kill());
  // On failure: every daemon's stderr of the kill chain (and, with
  // COUCHESTOR_TEST_KEEP_DIR set, a copy of the data directory) to find out why.
  const chain: TestDaemon[] = [d];
  try {
    await killLoop();
  } catch (err) {
    chain.forEach((c, n) => t.diagnostic(`daemon ${n} stderr (last 16 KiB):\n${c.stderr.slice(-16384)}`));
    const keep = process.env.COUCHESTOR_TEST_KEEP_DIR;
    if (keep) fs.cpSync(d.dataDir, path.join(keep, `sigkill-${process.pid}-${Date.now()}`), { recursive: true });
    throw err;
  }
  async function killLoop(): Promise<void> {
    const rnd = prng(42);
    const kills = 6;
    let killedMidPass = 0;
    for (let i = 0; i < kills; i++) {
      // Rewrite half the chunks: old segments end up part live, part dead, so passes copy (slowly).
      const chunks = Array.from({ length: VOLUME_MIB }, (_, c) => c).filter((c) => (c + i) % 2 === 0);
      for (const c of chunks) patternBytes(MiB, 1000 * i + c).copy(model, c * MiB);
      const src = path.join(d.dataDir, 'model.bin');
      fs.writeFileSync(src, model);
      nbdsh(
        [
          `h.connect_uri(${JSON.stringify(daemon.exportUri('k'))})`,
          `src = open(${JSON.stringify(src)}, 'rb').read()`,
          `for c in ${JSON.stringify(chunks)}:`,
          `  h.pwrite(src[c * ${MiB}:(c + 1) * ${MiB}], c * ${MiB})`,
          'h.flush()',
        ].join('\n'),
      ); // FLUSHed: all of it must survive the kill
      await destage(daemon);
      // The first moment a pass is seen running (polling the API: the daemon
      // has no event stream), then a random moment in its first 120 ms: a
      // batch's copy, fdatasync and flip take tens of ms, then the throttle
      // sleeps >= 250 ms per record copied before the deletion, so kills land
      // before, in and after the flips, not only at the pass's first I/O.
      const deadline = Date.now() + 20_000;
      let running = false;
      while (!(running = (await api<{ running: boolean }>(daemon, 'GET', '/v1/compaction')).running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      if (running) {
        await new Promise((r) => setTimeout(r, rnd() % 120));
        running = (await api<{ running: boolean }>(daemon, 'GET', '/v1/compaction')).running;
      }
      await daemon.kill();
      if (running) killedMidPass++;
      fsckClean(daemon);
      daemon = await TestDaemon.start({ dataDir: d.dataDir });
      chain.push(daemon);
      assertSameBytes(readExport(daemon, 'k', path.join(d.dataDir, `k-${i}.bin`)), model, `after kill ${i}`);
    }
    t.diagnostic(`${killedMidPass} of ${kills} kills landed while a compaction pass ran`);
    assert.ok(killedMidPass >= kills / 2, `only ${killedMidPass} kills hit a running pass: the test no longer covers a crash mid-compaction`);
    // The recount at start marks leftovers (copies or sources of the cut pass) dead: one pass takes them.
    await compact(daemon);
    const recordBytes = 256 * 1024 + 64;
    // After a pass every sealed segment is under the 0.5 dead fraction, so sealed bytes < 2 x live; plus the head.
    for (const [i, bytes] of coldSegmentBytes(daemon).entries()) {
      assert.ok(bytes <= 2 * VOLUME_MIB * recordBytes + SEGMENT_BYTES, `cold-${i}: ${bytes} bytes after the kills`);
    }
    assertSameBytes(readExport(daemon, 'k', path.join(d.dataDir, 'k-final.bin')), model, 'after the final pass');
    // SIGTERM while a throttled pass copies: the job stops after its batch and the daemon exits cleanly.
    patternBytes(4 * MiB, 77).copy(model, 0);
    writeVolume(daemon, 'k', model);
    await destage(daemon);
    const deadline = Date.now() + 20_000;
    while (!(await api<{ running: boolean }>(daemon, 'GET', '/v1/compaction')).running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const stopStartMs = Date.now();
    assert.equal(await daemon.stop(), 0);
    const stopMs = Date.now() - stopStartMs;
    t.diagnostic(`SIGTERM during a pass: exited in ${stopMs} ms`);
    assert.ok(stopMs < 10_000, `stop took ${stopMs} ms`);
    fsckClean(daemon);
    daemon = await TestDaemon.start({ dataDir: d.dataDir });
    chain.push(daemon);
    assertSameBytes(readExport(daemon, 'k', path.join(d.dataDir, 'k-term.bin')), model, 'after SIGTERM mid-pass');
  }
});

test('deleting and overwriting cold S3 objects frees their segments; a GET streaming through compaction reads the right bytes', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-s3-compact-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), manualConfig());
  const env = await startS3({ dataDir });
  t.after(() => env.cleanup());
  const d = env.daemon;
  await createColdBucket(env, 'cold');
  const OBJECT_BYTES = 6 * MiB + 12345;
  let want: Buffer = Buffer.alloc(0);
  for (let r = 0; r < 4; r++) {
    want = patternBytes(OBJECT_BYTES, 500 + r);
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'o', Body: want }));
  }
  const kept = patternBytes(2 * MiB, 600);
  await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'kept', Body: kept }));
  await dropCache(d);
  // A GET opened before the pass, read to the end while the pass moves its stripes.
  const get = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o' }));
  const [body, r1] = await Promise.all([get.Body!.transformToByteArray(), compact(d)]);
  assertSameBytes(Buffer.from(body), want, 'GET streaming through compaction');
  assert.ok(r1.segmentsCompacted > 0, 'the overwritten versions left segments to compact');
  const recordBytes = 256 * 1024 + 64;
  const liveRecords = Math.ceil(OBJECT_BYTES / MiB) + 2;
  // Every sealed segment under the 0.5 dead fraction after the pass: sealed bytes < 2 x live, plus the head.
  for (const [i, bytes] of coldSegmentBytes(d).entries()) {
    assert.ok(bytes <= 2 * liveRecords * recordBytes + SEGMENT_BYTES, `cold-${i}: ${bytes} bytes after overwrites + compaction`);
  }
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'o' }));
  assertSameBytes(Buffer.from(await got.Body!.transformToByteArray()), want, 'GET after compaction');
  // Delete: only `kept` (2 stripes) stays live.
  await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: 'o' }));
  await compact(d);
  for (const [i, bytes] of coldSegmentBytes(d).entries()) {
    assert.ok(bytes <= 2 * 2 * recordBytes + SEGMENT_BYTES, `cold-${i}: ${bytes} bytes after the delete`);
  }
  const k = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: 'kept' }));
  assertSameBytes(Buffer.from(await k.Body!.transformToByteArray()), kept, 'the other object');
  assert.equal(await d.stop(), 0);
  const f = fsckClean(d);
  t.diagnostic(`fsck after S3 compaction: ${f.orphanRecords} orphan records`);
});
