// An aborted hot <-> warm move closes and deletes its target pool's file
// unless chunks were switched into it: N > MAX_VOLUME_FILES aborted moves,
// each to another warm pool, under client writes, reads and FLUSHes, leave
// open (and on disk) only the files the index places chunks in plus the
// placement pool's; the volume still migrates and reads back byte-exact,
// also after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { MAX_VOLUME_FILES, type Volume } from '../src/dataplane/volumes/volume.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { openVolumeFiles } from './helpers/hot-warm.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 20;
/** One more warm pool than a volume may have files open: without the close, the 16th target could not be opened. */
const WARM_POOLS = MAX_VOLUME_FILES + 2;
const ABORTED_MOVES = MAX_VOLUME_FILES + 6;

/** Pools with volume `id`'s data file on disk. */
function filesOnDisk(m: VolumeManager, id: number): string[] {
  return [...m.pools.values()].filter((p) => fs.existsSync(p.volumeFile(id))).map((p) => p.name).sort();
}

/** Pools the volume needs a file on: the placement pool's, and every one the index places a chunk in. */
function neededFiles(vol: Volume): string[] {
  return [...new Set([vol.rec.poolName, ...vol.poolsInUse().map((p) => p.name)])].sort();
}

test(`${ABORTED_MOVES} aborted moves over ${WARM_POOLS} warm pools under I/O keep only the needed files open; the volume still migrates and reads back byte-exact`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-abort-files-'));
  let running = true;
  let m: VolumeManager | null = null;
  t.after(async () => {
    running = false;
    await m?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const open = async (create: boolean) => {
    const m = VolumeManager.open(path.join(dir, 'meta'));
    if (create) {
      await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 256 * MiB, labels: { tier: 'hot' } });
      for (let i = 0; i < WARM_POOLS; i++) {
        await m.putPool({ name: `warm-${i}`, path: path.join(dir, `warm-${i}`), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
      }
    }
    return m;
  };
  m = await open(true);
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  let vol = m.openVolume('v');
  const id = vol.rec.id;
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();

  // Clients keep writing, reading and flushing through every abort and close.
  let writes = 0;
  let flushes = 0;
  const client = (async () => {
    while (running) {
      const at = crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096;
      const data = crypto.randomBytes(4096);
      await writeVolume(vol, at, data);
      data.copy(want, at);
      writes++;
      const rd = crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096;
      assert.ok((await readVolume(vol, rd, 4096)).equals(want.subarray(rd, rd + 4096)), `read at ${rd} during the moves`);
      if (writes % 8 === 0) {
        await vol.flush();
        flushes++;
      }
    }
  })();

  const targets = new Set<string>();
  let filler = 0;
  for (let i = 0; i < ABORTED_MOVES; i++) {
    // Every fourth move is aborted with 16 chunks across (progress is
    // reported every 16), the others before any chunk moved.
    const partial = i % 4 === 3;
    const ac = new AbortController();
    let target = '';
    await assert.rejects(
      migrateVolume(m, 'v', 'warm', {
        preserve: false,
        signal: ac.signal,
        concurrency: partial ? 1 : 4,
        onProgress: (p) => {
          target = p.toPool ?? '';
          if (!partial && p.phase === 'Copy' && p.chunksTotal > 0) ac.abort();
          if (partial && p.chunksDone >= 16) ac.abort();
        },
      }),
      (err: Error) => err instanceof MigrationAborted,
      `move ${i}`,
    );
    assert.match(target, /^warm-\d+$/);
    targets.add(target);
    assert.equal(vol.rec.tier, 'hot', `move ${i}: an aborted move reverts the tier`);
    assert.equal(vol.rec.poolName, 'hot-0');
    const chunksOnTarget = Array.from({ length: CHUNKS }, (_, c) => c).filter((c) => vol.chunkPool(c).name === target).length;
    if (partial) assert.ok(chunksOnTarget >= 16, `move ${i}: ${chunksOnTarget} chunks switched to ${target}`);
    else assert.equal(chunksOnTarget, 0, `move ${i}: no chunk switched to ${target}`);
    // migrateVolume settles once the target file is closed and deleted.
    const needed = neededFiles(vol);
    assert.deepEqual(openVolumeFiles(dir, id), needed, `move ${i} to ${target}: open data files`);
    assert.deepEqual(filesOnDisk(m, id), needed, `move ${i} to ${target}: data files on disk`);
    assert.ok(needed.length <= 2, `move ${i}: ${needed.join(', ')}`);
    // Steer the next move to another warm pool: another volume takes a chunk
    // of this one, so it is no longer the one with the most free space.
    const f = `filler-${filler++}`;
    await m.createVolume({ name: f, sizeBytes: MiB, pool: target });
    await writeVolume(m.openVolume(f), 0, Buffer.alloc(4096, 1));
  }
  assert.ok(targets.size >= MAX_VOLUME_FILES, `the moves went to ${targets.size} pools: ${[...targets].join(', ')}`);

  // A move that is not aborted finishes, and leaves one file.
  const done = await migrateVolume(m, 'v', 'warm', { preserve: false });
  running = false;
  await client;
  assert.ok(writes > ABORTED_MOVES && flushes > 0, `${writes} writes, ${flushes} flushes`);
  t.diagnostic(`${ABORTED_MOVES} aborted moves to ${targets.size} pools, then Done to ${done.toPool}; client: ${writes} writes, ${flushes} flushes`);
  assert.equal(done.phase, 'Done');
  assert.equal(vol.rec.tier, 'warm');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), [done.toPool]);
  assert.deepEqual(openVolumeFiles(dir, id), [done.toPool]);
  assert.deepEqual(filesOnDisk(m, id), [done.toPool]);
  await vol.flush();
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the moves');

  await m.close();
  m = null;
  m = await open(false);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after a restart');
});
