// `couchestor rebuild <pool>` (POST /v1/rebuild) through the real daemon: a
// lost and replaced cold pool gets back exactly the shards it lost, read from
// k survivors per stripe; the rebuilt shards are real (they carry reads once
// two other pools are lost, and after a restart); a survivor corrupted under
// the rebuild is detected and another survivor used instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import {
  MiB,
  allHealthy,
  assertSameBytes,
  coldStatus,
  corruptSegments,
  destage,
  dropCache,
  loseAndReplacePool,
  patternBytes,
  postRebuild,
  readBackWithPoolsLost,
  readExport,
  rebuildPool,
  rebuildPoolAllHealthy,
  scrub,
  segmentBytes,
  startColdDaemon,
  startWithColdVolume,
  writeColdVolume,
} from './helpers/cold.js';

const VOLUME_BYTES = 24 * MiB;
const STRIPES = 20;
const ALL_HEALTHY = allHealthy(STRIPES);

async function coldVolumeOnStripes(work: string): Promise<{ d: TestDaemon; model: Buffer }> {
  const started = await startWithColdVolume(work, VOLUME_BYTES, STRIPES * MiB, 0x2eb1);
  assert.deepEqual((await coldStatus(started.d)).stripes, ALL_HEALTHY);
  return started;
}

test('couchestor rebuild of a replaced pool restores every stripe; the rebuilt shards carry reads with two other pools lost, also after a restart', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-pool-rebuild-'));
  let { d, model } = await coldVolumeOnStripes(work);
  try {
    const perPoolBytes = segmentBytes(d, 2);
    assert.ok(perPoolBytes > STRIPES * 256 * 1024, `pool 2 holds ${STRIPES} shard records (${perPoolBytes} bytes)`);

    // A healthy pool: nothing is missing, nothing is written.
    const idle = await rebuildPool(d, 2);
    assert.equal(idle.stripesChecked, STRIPES);
    assert.equal(idle.stripesRebuilt, 0);
    assert.equal(segmentBytes(d, 2), perPoolBytes);

    loseAndReplacePool(d, 2);
    // The operator's CLI, as documented.
    const cli = d.cli('rebuild', 'cold-2', '--json');
    assert.equal(cli.status, 0, cli.stderr);
    const report = JSON.parse(cli.stdout) as Awaited<ReturnType<typeof rebuildPool>>;
    assert.equal(report.pool, 'cold-2');
    assert.equal(report.stripesChecked, STRIPES);
    assert.equal(report.stripesRebuilt, STRIPES);
    assert.equal(report.slowPathStripes, 0, 'every survivor read was good');
    assert.equal(report.notRebuilt, 0);
    assert.equal(report.bytesLanded, perPoolBytes, 'one record per stripe, the size of the lost ones');
    assert.deepEqual(report.stripes, ALL_HEALTHY);
    assert.equal(segmentBytes(d, 2), perPoolBytes, 'the new pool received exactly one shard record per stripe');
    assert.equal((await coldStatus(d)).shardsRebuilt, STRIPES);
    // Every shard of every stripe verifies (CRC and identity), the rebuilt ones included.
    assert.equal((await scrub(d)).badStripes, 0);

    // The index flips are durable: a restart (SIGKILL, no clean shutdown) keeps them.
    await d.kill();
    d = await TestDaemon.start({ dataDir: d.dataDir });
    // With pools 0 and 5 gone, k = 4 shards survive per stripe, one of them
    // the rebuilt one on pool 2: a byte-exact read proves its payload.
    const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'pools 0 and 5 lost after rebuilding pool 2, after a restart');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('a survivor that fails its CRC during a pool rebuild is not decoded from: another survivor is used, and the data stays byte-exact', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-pool-rebuild-'));
  const { d, model } = await coldVolumeOnStripes(work);
  try {
    loseAndReplacePool(d, 2);
    // Sources are ranked by pool name (cold-0, -1, -3, -4 are read; cold-5 is the spare):
    // corrupting cold-0 hits records the rebuild decodes from.
    const corrupted = corruptSegments(d, 0, 6, 0xbad5);
    const offsets = [...corrupted.values()].flat();
    assert.ok(offsets.length === 6);
    const report = await rebuildPoolAllHealthy(d, 2, STRIPES);
    assert.equal(report.stripesRebuilt, STRIPES, JSON.stringify(report));
    // Each flipped byte lands in one record (header or payload): at most 6 stripes, at least 1.
    assert.ok(report.slowPathStripes >= 1 && report.slowPathStripes <= 6, `slow-path stripes: ${report.slowPathStripes}`);
    assert.match(d.stderr, /another survivor is used pool=cold-0 /, "the corrupt cold-0 source is reported");
    // The slow path read every survivor, so it rebuilt the corrupt cold-0 shard of those stripes too.
    assert.equal((await coldStatus(d)).shardsRebuilt, STRIPES + report.slowPathStripes);
    assert.equal((await scrub(d)).badStripes, 0, 'every shard verifies after the rebuild');
    // Pools 3 and 4 gone: every stripe reads through its rebuilt cold-2 shard.
    const after = await readBackWithPoolsLost(d, [3, 4], 'c1', model, path.join(work, 'out.bin'), 'after rebuilding pool 2 around a corrupt survivor');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('writes destaged while a pool rebuild runs are not lost: the rebuild flips only stripes it read (CAS), the rest are rewritten whole', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-pool-rebuild-'));
  const stripes = 64;
  const d = await startColdDaemon();
  try {
    const model = patternBytes(stripes * MiB, 0x7a11);
    await writeColdVolume(d, 'c1', model, work);
    loseAndReplacePool(d, 2);
    // Overwrite chunks across the volume (first, middle and last groups of the rebuild).
    const chunks = [0, 17, 33, 63];
    const lines = [`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})`];
    for (const c of chunks) {
      const fresh = patternBytes(MiB, 0x1000 + c);
      fresh.copy(model, c * MiB);
      fs.writeFileSync(path.join(work, `chunk-${c}.bin`), fresh);
      lines.push(`h.pwrite(open(${JSON.stringify(path.join(work, `chunk-${c}.bin`))}, 'rb').read(), ${c * MiB})`);
    }
    lines.push('h.flush()');
    // Journaled first (an nbdsh start-up outlasts a rebuild this size), then the destage of
    // those chunks and the rebuild are started together: both rewrite the same stripes.
    await promisify(execFile)('nbdsh', ['-c', lines.join('\n')], { env: CLIENT_ENV });
    const [report] = await Promise.all([rebuildPool(d, 2), destage(d)]);
    assert.equal(report.notRebuilt, 0, JSON.stringify(report));
    assert.deepEqual((await coldStatus(d)).stripes, allHealthy(stripes));
    assert.equal((await scrub(d)).badStripes, 0, 'every shard of every stripe verifies');
    await dropCache(d);
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'writes made during the rebuild');
    // Pools 0 and 5 gone: every stripe (rebuilt or rewritten) reads through its cold-2 shard.
    await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'pools 0 and 5 lost after the rebuild');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('rebuild of an unknown pool is a 404, not a crash', async () => {
  const d = await startColdDaemon();
  try {
    const res = await postRebuild(d, 'cold-9');
    assert.equal(res.status, 404);
    assert.match(await res.text(), /no cold pool named cold-9/);
  } finally {
    await d.cleanup();
  }
});
