// The disk holding the cold tier's journal (the hot pool) fills up under
// cold NBD writes: the write that finds no room is told ENOSPC, alone; the
// journal is not failed. Before, the journal's writev hit ENOSPC, the
// journal latched failed ("cold volumes are offline") and every cold
// volume's writes answered EIO until a restart, even once space was freed.
// Now: ENOSPC (after the journal's wait for room, shortened here), every
// acknowledged write reads back, and once space is freed the same client's
// writes succeed, with no restart; after one, all of it replays. Real
// daemon, real libnbd client (nbdsh); the hot pool on a small tmpfs (root;
// helpers/small-pool, unmounted after the test in every outcome).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';
import { attachedNbdsh, type AttachedNbdsh } from './helpers/nbd-client.js';
import { MANUAL_DESTAGE_CONFIG, MiB, createVolume, startColdDaemon } from './helpers/cold.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';

const ENV = { COUCHESTOR_TEST_JOURNAL_FULL_TIMEOUT_MS: '300' };
const same = (expr: string, want: string) => `hashlib.sha256(${expr}).hexdigest() == hashlib.sha256(${want}).hexdigest()`;

test('the journal pool full: cold writes get ENOSPC, the journal is not failed, acknowledged writes read back, writes succeed once space is freed and replay after a restart', async (t) => {
  let d: TestDaemon | null = null;
  const clients: AttachedNbdsh[] = [];
  const disk = await smallDisk(t, 'cold-journal-full-', 24 * MiB);
  t.after(async () => {
    for (const c of clients) await c.close();
    await d?.cleanup();
  });
  d = await startColdDaemon(poolsYaml(['hot-0', 'hot', disk.poolDir]) + MANUAL_DESTAGE_CONFIG + 'cache:\n  l2CapacityBytes: 0\n', ENV);
  await createVolume(d, 'c1', 16 * MiB, 'cold');
  await createVolume(d, 'c2', 16 * MiB, 'cold');
  const c1 = await attachedNbdsh(d.exportUri('c1'));
  clients.push(c1);
  const c2 = await attachedNbdsh(d.exportUri('c2'));
  clients.push(c2);
  assert.equal(await c1.step(`h.pwrite(b'A' * ${MiB}, 0)`), 'None');
  assert.equal(await c1.step('h.flush()'), 'None');

  // Less room than a 1 MiB record: without the journal's check its writev lands in part.
  disk.leaveFree(MiB / 2);
  assert.match(await c1.step(`h.pwrite(b'B' * ${MiB}, ${MiB})`), /^error: .*No space left on device/, 'the write that finds no room');
  assert.match(await c2.step(`h.pwrite(b'C' * 4096, 0)`), /^error: .*No space left on device/, 'another cold volume: ENOSPC, not EIO');
  assert.equal(await c1.step('h.flush()'), 'None', 'the journal is not failed: a FLUSH succeeds');
  assert.equal(await c1.step(same(`h.pread(${MiB}, 0)`, `b'A' * ${MiB}`)), 'True', 'the acknowledged write reads back');

  disk.freeFiller();
  assert.equal(await c1.step(`h.pwrite(b'B' * ${MiB}, ${MiB})`), 'None', 'space freed: the write succeeds, no restart');
  assert.equal(await c2.step(`h.pwrite(b'C' * 4096, 0)`), 'None');
  assert.equal(await c1.step('h.flush()'), 'None');
  assert.equal(await c2.step('h.flush()'), 'None');
  assert.doesNotMatch(d.stderr, /journal failed/);
  for (const c of clients.splice(0)) assert.equal(await c.close(), 0);

  const dataDir = d.dataDir;
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir, env: ENV });
  const again = await attachedNbdsh(d.exportUri('c1'));
  clients.push(again);
  assert.equal(await again.step(same(`h.pread(${2 * MiB}, 0)`, `b'A' * ${MiB} + b'B' * ${MiB}`)), 'True', 'replayed after a restart');
});
