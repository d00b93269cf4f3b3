// Crash safety of hot <-> warm moves: the daemon is SIGKILLed at random
// moments while a volume moves between the hot and the warm pool and a client
// writes, zeroes, trims and flushes through NBD. After each kill fsck finds
// every chunk in the pool file the index names; after each restart every
// flushed byte reads back (the chunk map points only at durable copies), and
// a later migration finishes the move with the old pool's file gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { crashDaemons } from './helpers/daemon.js';
import { RawNbd } from './helpers/nbd-client.js';
import { Model, readVolume, workload } from './helpers/crash-model.js';
import { api, migrate, poolUsedBytes, startWarmDaemon, volumeFile, volumeRecord } from './helpers/hot-warm.js';
import { fsckDataDir } from './helpers/cold.js';
import type { MigrationProgress } from '../src/dataplane/volumes/migration.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 64 * MiB;
// At least ROUNDS kills, and more (up to MAX_ROUNDS) until the kills have covered what the test
// is for: >= 3 during a move and >= 2 leaving the volume split between the pools after the
// restart, i.e. killed mid-copy (a kill between the last SWITCH and RELEASE leaves two files
// too, but the restart finishes that RELEASE: migration-release-after-kill). The kill times are
// random, so a fixed number of rounds sometimes fell short of the coverage, not of a guarantee.
const ROUNDS = 8;
const MAX_ROUNDS = 24;

const start = crashDaemons(startWarmDaemon);
const readAll = (c: RawNbd) => readVolume(c, VOLUME_BYTES);

test('SIGKILL at random points of hot <-> warm moves under flushed writes: every flushed byte survives, a later move finishes', async (t) => {
  let daemon = await start();
  daemon.createVolume('mv', `${VOLUME_BYTES}`);
  const id = (await volumeRecord(daemon, 'mv')).id;
  // Every chunk holds data, so every move copies the whole volume.
  const model = new Model(VOLUME_BYTES);
  {
    const c = await RawNbd.connect({ port: daemon.info.nbd.port });
    await c.handshake('mv');
    const fill = crypto.randomBytes(VOLUME_BYTES);
    for (let at = 0; at < VOLUME_BYTES; at += 4 * MiB) assert.equal((await c.writeAt(at, fill.subarray(at, at + 4 * MiB))).error, 0);
    assert.equal((await c.flush()).error, 0);
    model.reset(fill);
    c.close();
  }
  let killsMidMove = 0;
  let splitAfterRestart = 0;
  let totalAcked = 0;
  let totalFlushes = 0;
  let rounds = 0;
  for (let round = 0; round < MAX_ROUNDS && (round < ROUNDS || killsMidMove < 3 || splitAfterRestart < 2); round++) {
    rounds++;
    const to = round % 2 === 0 ? 'warm' : 'hot';
    const c = await RawNbd.connect({ port: daemon.info.nbd.port });
    await c.handshake('mv', { structured: round % 2 === 1 });
    const stats = { acked: 0, flushes: 0, inflight: 0 };
    const running = workload(c, model, stats, { workers: 6, maxOpBytes: 2 * MiB });
    let moved: MigrationProgress | null = null;
    const move = api<MigrationProgress>(daemon, 'POST', '/v1/volumes/mv/migrate', { tier: to }).then(
      (r) => (moved = r.body),
      () => undefined, // the kill cuts the request
    );
    // A move of 64 MiB under this load takes a few hundred ms here.
    await new Promise((r) => setTimeout(r, 10 + crypto.randomInt(0, 200)));
    if (moved === null) killsMidMove++;
    await daemon.kill();
    await Promise.all([running, move]);
    totalAcked += stats.acked;
    totalFlushes += stats.flushes;
    // Offline, every Allocated chunk is in the pool file the index names
    // and the file reaches it (a kill mid-move leaves them in two files).
    const f = fsckDataDir(daemon.dataDir);
    assert.equal(f.status, 0, `round ${round}: fsck after the kill\n${f.stdout}\n${f.stderr}`);
    assert.equal(f.report.badChunkCount, 0);
    assert.ok(f.report.chunksChecked > 0);

    daemon = await start(daemon.dataDir);
    if (fs.existsSync(volumeFile(daemon, 'hot-0', id)) && fs.existsSync(volumeFile(daemon, 'warm-0', id))) splitAfterRestart++;
    const v = await RawNbd.connect({ port: daemon.info.nbd.port });
    await v.handshake('mv');
    const actual = await readAll(v);
    const bad = model.violations(actual);
    assert.deepEqual(bad, [], `round ${round} (-> ${to}, ${moved === null ? 'killed mid-move' : 'move had finished'}): after ${stats.acked} acked ops and ${stats.flushes} flushes:\n${bad.join('\n')}`);
    assert.equal((await v.flush()).error, 0);
    model.reset(actual);
    v.close();
  }
  assert.ok(totalAcked > 50, `only ${totalAcked} ops were acknowledged`);
  assert.ok(totalFlushes > 3, `only ${totalFlushes} flushes`);
  assert.ok(killsMidMove >= 3, `only ${killsMidMove} of ${rounds} kills landed during a move`);
  assert.ok(splitAfterRestart >= 2, `only ${splitAfterRestart} of ${rounds} kills left the volume split between the two pools`);
  t.diagnostic(`${killsMidMove}/${rounds} kills mid-move, ${splitAfterRestart} restarts found the volume split, ${totalAcked} ops acked, ${totalFlushes} flushes`);

  // Finish on the warm pool: the hot pool's file goes, the bytes stay. (A
  // volume already warm goes to hot first, so the last move is real: a move
  // to the tier the volume is already on is refused. A hot file a kill
  // between SWITCH and RELEASE left is gone by then: the restart finished
  // that RELEASE, test migration-release-after-kill.)
  const cur = await volumeRecord(daemon, 'mv');
  if (cur.tier === 'warm') await migrate(daemon, 'mv', 'hot');
  const done = await migrate(daemon, 'mv', 'warm');
  assert.equal(done.toPool, 'warm-0');
  const rec = await volumeRecord(daemon, 'mv');
  assert.equal(rec.tier, 'warm');
  assert.equal(rec.poolName, 'warm-0');
  assert.equal(fs.existsSync(volumeFile(daemon, 'hot-0', id)), false, 'the hot pool still has the volume file');
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('mv');
  assert.deepEqual(model.violations(await readAll(c)), []);
  c.close();
  // Usage accounting: nothing left on hot; what warm holds survives a restart
  // unchanged (recounted from the chunk map at start).
  assert.equal(await poolUsedBytes(daemon, 'hot-0'), 0);
  const warmUsed = await poolUsedBytes(daemon, 'warm-0');
  assert.ok(warmUsed > 0 && warmUsed <= VOLUME_BYTES, `warm-0 usedBytes ${warmUsed}`);
  await daemon.stop();
  daemon = await start(daemon.dataDir);
  assert.equal(await poolUsedBytes(daemon, 'warm-0'), warmUsed);
  assert.equal(await poolUsedBytes(daemon, 'hot-0'), 0);
  const back = await RawNbd.connect({ port: daemon.info.nbd.port });
  await back.handshake('mv');
  assert.deepEqual(model.violations(await readAll(back)), []);
  back.close();
  await daemon.stop();
});
