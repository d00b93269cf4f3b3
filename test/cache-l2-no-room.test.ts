// The read cache's L2 file (64 MiB by default, zero-filled on the hot pool at
// start) does not fit on a small hot pool beside the journal's room: the
// daemon starts with L1 only, logs why, and leaves the space (the journal on
// that pool needs it); cold writes, destage and reads carry on. Before,
// `serve` exited with a bare "ENOSPC: no space left on device, write" (and
// left the pool full, so the journal failed too); then it tried the fill and
// gave the space back on ENOSPC (still the fallback when the room cannot be
// measured); now it is sized beside the journal first (cache-l2-journal-room).
// Real daemon, real libnbd client (nbdsh); the hot pool on a 16 MiB tmpfs
// (root; unmounted after the test in every outcome).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, api, createVolume, destage, dropCache, startColdDaemon } from './helpers/cold.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';

test('an L2 file that does not fit on the hot pool beside the journal: the daemon starts with L1 only, says so, leaves the space; cold writes, destage and reads carry on', async (t) => {
  let d: TestDaemon | null = null;
  const disk = await smallDisk(t, 'cache-l2-no-room-', 16 * MiB);
  t.after(async () => {
    await d?.cleanup();
  });
  d = await startColdDaemon(poolsYaml(['hot-0', 'hot', disk.poolDir]) + MANUAL_DESTAGE_CONFIG);
  assert.match(d.stderr, /read cache: L2 not used: the hot pool's free space is the journal's room .*pool=hot-0/);
  assert.equal(fs.statSync(path.join(disk.poolDir, 'cache', 'l2.cache'), { throwIfNoEntry: false })?.size ?? 0, 0, 'no L2 file fill');
  assert.ok(disk.freeBytes() > 15 * MiB, `the pool has its room back (${disk.freeBytes()} bytes free)`);
  const stats = await api<{ l1: unknown; l2?: unknown }>(d, 'GET', '/v1/cache');
  assert.ok(stats.l1 !== undefined && stats.l2 === undefined, `L1 only: ${JSON.stringify(stats)}`);

  await createVolume(d, 'c1', 8 * MiB, 'cold');
  const uri = d.exportUri('c1');
  nbdsh(`h.connect_uri(${JSON.stringify(uri)}); h.pwrite(b'Z' * ${MiB}, ${MiB}); h.flush()`);
  await destage(d);
  await dropCache(d);
  const out = nbdsh(`import hashlib; h.connect_uri(${JSON.stringify(uri)}); print(hashlib.sha256(h.pread(${2 * MiB}, 0)).hexdigest() == hashlib.sha256(bytes(${MiB}) + b'Z' * ${MiB}).hexdigest())`);
  assert.equal(out.trim(), 'True', 'the destaged write reads back from the stripes');
});
