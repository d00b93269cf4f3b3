// Aborted and finished moves between hot, warm and cold, under client
// writes, zeroes, trims, reads and FLUSHes and a destager draining the
// journal: after each hot/warm move only the files the volume needs stay on
// disk (the placement pool's and those the index places chunks in); at the
// end every byte reads back as the model says, fsck finds every Allocated
// chunk in its pool file, and the bytes survive a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Tier } from '../src/dataplane/meta/store.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { fsck } from '../src/dataplane/fsck.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
const MOVES = 30;
const WARM_POOLS = 3;

test(`${MOVES} aborted or finished moves under writes, zeroes, trims, FLUSHes and destaging: needed files only, byte-exact, fsck clean, also after a restart`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-abort-stress-'));
  let m: VolumeManager | null = null;
  t.after(async () => {
    await m?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const open = async (create: boolean) => {
    const mm = await openColdTierManager(dir, create);
    if (create) {
      for (let i = 0; i < WARM_POOLS; i++) {
        await mm.putPool({ name: `warm-${i}`, path: path.join(dir, `warm-${i}`), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
      }
    }
    return mm;
  };
  m = await open(true);
  const mgr = m;
  await mgr.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  let vol = mgr.openVolume('v');
  const want = Buffer.alloc(CHUNKS * MiB);
  for (let c = 0; c < CHUNKS; c += 2) {
    const d = crypto.randomBytes(MiB);
    await writeVolume(vol, c * MiB, d);
    d.copy(want, c * MiB);
  }
  await vol.flush();
  // Start cold: later moves promote stripes and journaled chunks too.
  await migrateVolume(mgr, 'v', 'cold', { preserve: false });

  let running = true;
  let ops = 0;
  let drains = 0;
  // Two clients on disjoint chunks (even / odd), so each one's model is exact.
  const client = async (k: number) => {
    while (running) {
      const r = crypto.randomInt(0, 10);
      const c = crypto.randomInt(0, CHUNKS / 2) * 2 + k;
      const at = c * MiB + crypto.randomInt(0, 256) * 4096;
      if (r < 5) {
        const d = crypto.randomBytes(4096);
        await writeVolume(vol, at, d);
        d.copy(want, at);
      } else if (r < 6) {
        await vol.trim(c * MiB, MiB, false);
        want.fill(0, c * MiB, (c + 1) * MiB);
      } else if (r < 7) {
        await vol.writeZeroes(at, 4096, { noHole: false, fua: false, fastZero: false });
        want.fill(0, at, at + 4096);
      } else if (r < 8) await vol.flush();
      else assert.ok((await readVolume(vol, c * MiB, MiB)).equals(want.subarray(c * MiB, (c + 1) * MiB)), `read chunk ${c}`);
      ops++;
    }
  };
  const destager = async () => {
    while (running) {
      await mgr.cold!.destager.drain();
      drains++;
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const background = Promise.allSettled([client(0), client(1), destager()]);
  const phases: string[] = [];
  try {
    for (let i = 0; i < MOVES; i++) {
      const ac = new AbortController();
      const stopAfterChunks = crypto.randomInt(0, 20);
      const other: Tier = vol.rec.tier === 'hot' ? 'warm' : 'hot';
      // Every 7th to cold; every 5th to its own tier (finishing a split); else to the other of hot/warm.
      const to: Tier = i % 7 === 6 ? 'cold' : i % 5 === 4 && vol.rec.tier !== 'cold' ? vol.rec.tier : other;
      const phase = await migrateVolume(mgr, 'v', to, {
        preserve: false,
        signal: ac.signal,
        concurrency: 2,
        onProgress: (p) => {
          if (p.chunksDone >= stopAfterChunks || (stopAfterChunks < 3 && p.phase === 'Copy')) ac.abort();
        },
      }).then(
        (p) => p.phase,
        (err: Error) => err.name,
      );
      phases.push(`${to}:${phase}`);
      // A move to cold releases nothing when aborted (its destaged chunks' file stays open until the next RELEASE).
      if (vol.rec.tier === 'cold' || to === 'cold') continue;
      const needed = [...new Set([vol.rec.poolName, ...vol.poolsInUse().map((p) => p.name)])].sort();
      const onDisk = [...mgr.pools.values()].filter((p) => fs.existsSync(p.volumeFile(vol.rec.id))).map((p) => p.name).sort();
      assert.deepEqual(onDisk, needed, `after move ${i} to ${to} (${phase})`);
    }
  } finally {
    running = false;
  }
  for (const r of await background) if (r.status === 'rejected') throw r.reason;
  t.diagnostic(`moves: ${phases.join(' ')}; ${ops} client ops, ${drains} destager drains`);
  assert.ok(phases.some((p) => p.endsWith(':MigrationAborted')) && phases.some((p) => p.endsWith(':Done')), phases.join(' '));
  await vol.flush();
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ before the restart');

  await mgr.close();
  m = null;
  m = await open(false);
  const report = await fsck(m, () => undefined);
  assert.equal(report.badChunkCount, 0, JSON.stringify(report.badChunks));
  assert.deepEqual(report.badVolumes, []);
  vol = m.openVolume('v');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'bytes differ after the restart');
});
