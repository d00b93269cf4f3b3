// Review of the pool rebuild (fefe08e..978c244) through the real daemon:
// SIGKILL at several moments of a rebuild (unsynced windows in flight), then
// fsck offline (no half-written stripe, nothing Failed, no shard wrong), a
// second rebuild finishing the job, and byte-exact reads with two other
// pools lost; and a rebuild raced by a second POST, a scrub and a destage.
// The pool replaced again between a window's last write and its flips runs
// in process (the moment is a hook there; the daemon gives no event for it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';
import { replacePoolDir } from './helpers/rebuild.js';
import {
  MiB,
  allHealthy,
  coldStatus,
  destage,
  fsck,
  loseAndReplacePool,
  patternBytes,
  postRebuild,
  prng,
  readBackWithPoolsLost,
  rebuildPool,
  rebuildPoolAllHealthy,
  scrub,
  segmentBytes,
  startWithColdVolume,
  untilPoolBytes,
} from './helpers/cold.js';

const STRIPES = 48;
const VOLUME_BYTES = STRIPES * MiB;

async function coldVolume(work: string, seed: number, env?: NodeJS.ProcessEnv): Promise<{ d: TestDaemon; model: Buffer }> {
  const started = await startWithColdVolume(work, VOLUME_BYTES, VOLUME_BYTES, seed, env);
  assert.equal((await coldStatus(started.d)).stripes.Healthy, STRIPES);
  return started;
}

test('SIGKILL during a pool rebuild: fsck finds no half-written or failed stripe, only cold-2 shards missing; the next rebuild completes byte-exact', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-crash-'));
  // The first daemon holds a whole-pool rebuild once its first group is written (the
  // test hook): round 0 is killed there, so at least one kill lands mid-rebuild however
  // the machine is loaded (polling the pool's size, a rebuild of a few hundred ms could
  // finish between two polls: seen at load 10 overshooting to the last byte). The
  // daemons of later rounds start without it: their kills land at random points.
  let { d, model } = await coldVolume(work, 0x51c1, { COUCHESTOR_TEST_PAUSE_POOL_REBUILD: '1' });
  const rand = prng(0x6b11);
  try {
    const fullBytes = segmentBytes(d, 2);
    loseAndReplacePool(d, 2);
    let midRebuildKills = 0;
    for (let round = 0; round < 4; round++) {
      // Kill once the rebuild has written past a round-dependent point on cold-2 (a
      // window is 64 MiB, so these are all before its first sync... or after the
      // last one on a later round), or when it finishes first.
      const startBytes = segmentBytes(d, 2);
      const killAtBytes = startBytes + 1 + Math.floor((rand() / 2 ** 32) * 0.8 * fullBytes);
      let settled = false;
      const pending = rebuildPool(d, 2).then(
        () => 'finished',
        () => 'killed',
      ).finally(() => (settled = true));
      if (round === 0) await d.line(/^couchestor paused pool-rebuild \{"pool":"cold-2"\}$/, 120_000);
      else await untilPoolBytes(d, 2, killAtBytes, () => settled);
      const landedBytes = segmentBytes(d, 2) - startBytes;
      await d.kill();
      const outcome = await pending;
      if (round === 0) assert.ok(landedBytes > 0 && outcome === 'killed', `round 0 killed at the held rebuild: ${landedBytes} bytes landed, rebuild ${outcome}`);
      if (landedBytes > 0 && outcome === 'killed') midRebuildKills++;
      t.diagnostic(`round ${round}: kill at ${landedBytes} bytes written this round (target ${killAtBytes - startBytes}) of ${fullBytes}, rebuild ${outcome}`);

      const { report: checked, stdout } = fsck(d);
      assert.equal(checked.halfWrittenStripes, 0, `round ${round}: ${stdout}`);
      assert.equal(checked.stripes.Failed, 0, `round ${round}: ${stdout}`);
      assert.equal(checked.stripes.Healthy + checked.stripes.Degraded, STRIPES);
      assert.equal(checked.corruptRecords, 0, `round ${round}: ${stdout}`);
      // Only the lost pool's shards may be missing: no survivor was touched, no flipped shard is missing.
      for (const b of checked.badShards) assert.equal(b.pool, 'cold-2', `round ${round}: ${JSON.stringify(b)}`);
      assert.equal(checked.badShards.length, checked.stripes.Degraded, `round ${round}: one missing shard per degraded stripe`);
      d = await TestDaemon.start({ dataDir: d.dataDir });
    }
    // Without a real mid-rebuild kill the rounds above prove nothing.
    assert.ok(midRebuildKills >= 1, 'at least one kill landed while the rebuild was writing');

    await rebuildPoolAllHealthy(d, 2, STRIPES);
    assert.equal((await scrub(d)).badStripes, 0);
    await d.kill();
    const final = fsck(d);
    assert.deepEqual(final.report.stripes, { Healthy: STRIPES, Degraded: 0, Failed: 0 }, final.stdout);
    assert.equal(final.report.halfWrittenStripes, 0);
    t.diagnostic(`final fsck: ${final.report.orphanRecords} orphan records (unflipped rebuild writes of killed rounds), ${final.report.tornTails} torn tails`);
    d = await TestDaemon.start({ dataDir: d.dataDir });
    // k = 4 survivors per stripe with cold-0 and cold-5 gone: the rebuilt cold-2 shards carry every read.
    const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'after crashes mid-rebuild and a final rebuild');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('two POST /v1/rebuild of the same pool share one run, another pool is refused while it runs, and a scrub and a destage racing it lose nothing', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-race-'));
  const { d, model } = await coldVolume(work, 0x7a3e);
  try {
    loseAndReplacePool(d, 2);
    const first = rebuildPool(d, 2);
    const second = rebuildPool(d, 2);
    const other = postRebuild(d, 'cold-3');
    const scrubbed = scrub(d);
    // Overwrite the first 4 KiB of 4 stripes (FLUSHed: acknowledged) while the rebuild runs, then destage them.
    const patch = patternBytes(4096, 0x99);
    const chunks = [1, 7, 20, 40];
    for (const chunk of chunks) patch.copy(model, chunk * MiB);
    fs.writeFileSync(path.join(work, 'patch.bin'), patch);
    const script = [
      `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})`,
      `buf = open(${JSON.stringify(path.join(work, 'patch.bin'))}, 'rb').read()`,
      ...chunks.map((c) => `h.pwrite(buf, ${c * MiB})`),
      'h.flush()',
    ].join('\n');
    const writes = new Promise<void>((resolve, reject) => {
      const p = spawn('nbdsh', ['-c', script], { env: CLIENT_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      p.stderr.on('data', (b: Buffer) => (err += b.toString()));
      p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nbdsh exited ${code}: ${err}`))));
    }).then(() => destage(d));
    const [a, b, o] = await Promise.all([first, second, other]);
    assert.deepEqual(a, b, 'the second POST is answered with the first run report');
    const otherText = await o.text();
    assert.equal(o.status >= 400 && o.status < 500, true, `another pool's rebuild is refused while one runs: HTTP ${o.status} ${otherText}`);
    assert.match(otherText, /being rebuilt/);
    assert.equal(a.stripesChecked, STRIPES);
    await scrubbed;
    await writes;
    // What a racing destage superseded is rebuilt by the queue pass (or this scrub).
    await scrub(d);
    assert.deepEqual((await coldStatus(d)).stripes, allHealthy(STRIPES));
    // Two other pools lost: every stripe reads through its cold-2 shard (rebuilt or rewritten).
    const after = await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'after a rebuild raced by a second POST, a scrub and flushed writes');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// In process (real VolumeManager, stripe store, segment files, LMDB index,
// Reconstructor): the test replaces the pool directory from inside the target
// store's sync, the moment the rebuild's window has written its last record
// and before the identity check and flips. Through the daemon no event told
// the test that moment; polling segment sizes let the replacement land after
// the flips under load (48 reported rebuilt, scrub 48 bad).
test('the rebuilt pool replaced again between its last write and the index flip: no stripe is flipped onto records of the deleted directory', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-replaced-again-'));
  const stripesCount = 32;
  const model = patternBytes(stripesCount * MiB, 0x3c0d);
  let m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.createVolume({ name: 'v', sizeBytes: model.length });
  let vol = m.openVolume('v');
  await writeVolume(vol, 0, model);
  await vol.flush();
  await migrateVolume(m, 'v', 'cold', { preserve: false });
  assert.equal(vol.stripes.size, stripesCount);
  const pool2 = path.join(dir, 'cold-2');
  // A new disk with the pool's identity (as `pools replace` gives it): an empty directory without it is offline.
  const swap = () => replacePoolDir(dir, 'cold-2');
  swap();
  const cold = m.cold!;
  // The store the rebuild lands on (the same one: the directory has not changed since).
  const target = (await cold.stripes.segmentStore('cold-2'))!;
  const sync = target.sync.bind(target);
  let recordsBeforeSwap = -1;
  let inodeReused = false;
  target.sync = async () => {
    if (recordsBeforeSwap < 0) {
      // Every record of the window written (one 64 MiB window holds them all), nothing flipped yet.
      const segDir = path.join(pool2, 'segments');
      recordsBeforeSwap = fs.readdirSync(segDir).reduce((sum, f) => sum + fs.statSync(path.join(segDir, f)).size, 0);
      // Logged: the identity check compares inode numbers. The old store's open files
      // keep the deleted directory's inode allocated, so the new one gets another.
      const before = fs.statSync(pool2).ino;
      swap();
      inodeReused = fs.statSync(pool2).ino === before;
      // The new directory as the daemon leaves it once anything opened the pool again:
      // the old store's directory fsync (by path) then succeeds on it.
      fs.mkdirSync(path.join(pool2, 'segments'));
    }
    return sync();
  };
  const report = await cold.reconstructor.rebuildPool('cold-2');
  t.diagnostic(`rebuild ${JSON.stringify(report)}; ${recordsBeforeSwap} bytes written before the swap; the new directory ${inodeReused ? 'reuses' : 'does not reuse'} the old one's inode number`);
  assert.equal(recordsBeforeSwap, report.bytesLanded, 'the swap ran once the window had written all its records');
  // Whatever the rebuild reported rebuilt is whole: a full check finds nothing to repair.
  const scrubbed = await cold.reconstructor.scrub();
  assert.equal(scrubbed.badStripes, 0, `stripes the rebuild reported rebuilt are missing their cold-2 shard: ${JSON.stringify(scrubbed)}`);
  assert.equal(report.stripesRebuilt, stripesCount, JSON.stringify(report));
  assert.equal(report.notRebuilt, 0);
  assert.deepEqual(cold.reconstructor.counts(), allHealthy(stripesCount));
  // k = 4 survivors with cold-0 and cold-5 gone: every read goes through a rebuilt cold-2 shard.
  await m.close();
  for (const lost of [0, 5]) fs.rmSync(path.join(dir, `cold-${lost}`), { recursive: true, force: true });
  m = await openColdTierManager(dir, false);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, model.length)).equals(model), 'byte-exact with cold-0 and cold-5 lost');
});

test('SIGTERM during a pool rebuild: a clean exit, fsck finds every stripe Healthy or missing only its cold-2 shard, and nothing half-written', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-term-'));
  let { d, model } = await coldVolume(work, 0x7e57);
  try {
    const fullBytes = segmentBytes(d, 2);
    loseAndReplacePool(d, 2);
    // Connection: close. A keep-alive connection busy when the API server starts
    // closing holds the daemon's exit for fastify's 72 s keep-alive timeout
    // (reported separately; not what this test is about).
    const pending = postRebuild(d, 'cold-2', { connection: 'close' }).then(
      async (r) => `HTTP ${r.status} ${await r.text()}`,
      (e: Error) => `failed ${e.message}`,
    );
    await untilPoolBytes(d, 2, fullBytes / 3);
    const startedMs = Date.now();
    assert.equal(await d.stop(), 0, d.stderr.slice(-2000));
    t.diagnostic(`SIGTERM at ${segmentBytes(d, 2)} of ${fullBytes} bytes; exit after ${Date.now() - startedMs} ms; rebuild ${await pending}`);
    const { report: checked, stdout } = fsck(d);
    assert.equal(checked.halfWrittenStripes, 0, stdout);
    assert.equal(checked.stripes.Failed, 0, stdout);
    assert.equal(checked.corruptRecords, 0, stdout);
    for (const b of checked.badShards) assert.equal(b.pool, 'cold-2', JSON.stringify(b));
    d = await TestDaemon.start({ dataDir: d.dataDir });
    const report = await rebuildPool(d, 2);
    assert.deepEqual(report.stripes, allHealthy(STRIPES), JSON.stringify(report));
    await readBackWithPoolsLost(d, [0, 5], 'c1', model, path.join(work, 'out.bin'), 'after SIGTERM mid-rebuild and a second rebuild');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
