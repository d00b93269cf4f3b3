// The read cache's L2 file is zero-filled at start on the hot pool, the disk
// the cold tier's journal is on. One that fit but left less than the
// journal's room (each append leaves 1 MiB free) made every cold write wait
// for room (30 s; shortened here) and then fail with ENOSPC. Now the L2 file
// is made smaller, so that the journal's room (its capacity not yet on disk,
// and the margin) stays free, and the daemon says so; cold writes, destage
// and reads carry on. Real daemon, real libnbd client (nbdsh); the hot pool
// on a small tmpfs (root; helpers/small-pool, unmounted in every outcome).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, api, createVolume, destage, dropCache, startColdDaemon } from './helpers/cold.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';

const ENV = { COUCHESTOR_TEST_JOURNAL_FULL_TIMEOUT_MS: '300' };
const JOURNAL_CAPACITY_BYTES = 4 * MiB;
const L2_BYTES = 8 * MiB;

test('an L2 file that would leave the journal less than its room is made smaller: cold writes, destage and reads carry on', async (t) => {
  let d: TestDaemon | null = null;
  const disk = await smallDisk(t, 'cache-l2-journal-room-', 32 * MiB);
  t.after(async () => {
    await d?.cleanup();
  });
  // The L2 file fits, with half a MiB to spare: less than one journal append leaves.
  disk.leaveFree(L2_BYTES + MiB / 2);
  const config = `${poolsYaml(['hot-0', 'hot', disk.poolDir])}${MANUAL_DESTAGE_CONFIG}  journalCapacityBytes: ${JOURNAL_CAPACITY_BYTES}\ncache:\n  l2CapacityBytes: ${L2_BYTES}\n`;
  d = await startColdDaemon(config, ENV);
  assert.match(d.stderr, /read cache: L2 made smaller than cache\.l2CapacityBytes: the rest of the hot pool's free space is the journal's room .*pool=hot-0/);
  const stats = await api<{ l2?: { capacityBytes: number } }>(d, 'GET', '/v1/cache');
  const l2Bytes = stats.l2?.capacityBytes ?? 0;
  assert.ok(l2Bytes >= MiB && l2Bytes < L2_BYTES, `a smaller L2: ${JSON.stringify(stats.l2)}`);
  assert.equal(fs.statSync(path.join(disk.poolDir, 'cache', 'l2.cache')).size, l2Bytes);
  assert.ok(disk.freeBytes() >= JOURNAL_CAPACITY_BYTES, `the journal's room is free (${disk.freeBytes()} bytes)`);

  await createVolume(d, 'c1', 8 * MiB, 'cold');
  const uri = d.exportUri('c1');
  // Before: ENOSPC after the journal's wait for room.
  nbdsh(`h.connect_uri(${JSON.stringify(uri)}); h.pwrite(b'Z' * ${MiB}, ${MiB}); h.pwrite(b'Y' * ${MiB}, ${3 * MiB}); h.flush()`);
  await destage(d);
  await dropCache(d);
  const want = `bytes(${MiB}) + b'Z' * ${MiB} + bytes(${MiB}) + b'Y' * ${MiB}`;
  const out = nbdsh(`import hashlib; h.connect_uri(${JSON.stringify(uri)}); print(hashlib.sha256(h.pread(${4 * MiB}, 0)).hexdigest() == hashlib.sha256(${want}).hexdigest())`);
  assert.equal(out.trim(), 'True', 'the destaged writes read back from the stripes');
});
