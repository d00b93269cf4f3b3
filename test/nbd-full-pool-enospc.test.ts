// A hot pool's disk fills up under NBD writes: the client is told ENOSPC
// (NBD_ENOSPC), not EIO, also for the write that lands in part (a short
// write at the full point); every write answered before it reads back,
// before and after a restart; a volume on another pool carries on; once
// space is freed the same writes succeed. Real daemon, real libnbd client
// (nbdsh), the pool on a small tmpfs (root; helpers/small-pool, unmounted
// after the test in every outcome).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';
import { api } from './helpers/cold.js';
import { attachedNbdsh, type AttachedNbdsh } from './helpers/nbd-client.js';
import { poolsYaml } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';

const MiB = 1024 * 1024;
const sha = (fill: string, bytes: number) => `hashlib.sha256(b'${fill}' * ${bytes}).hexdigest()`;

test('a full hot pool: ENOSPC for the short write at the full point and after it, acknowledged writes intact, another pool carries on, writes succeed once space is freed', async (t) => {
  let d: TestDaemon | null = null;
  const clients: AttachedNbdsh[] = [];
  const disk = await smallDisk(t, 'nbd-full-pool-', 8 * MiB);
  t.after(async () => {
    for (const c of clients) await c.close();
    await d?.cleanup();
  });
  d = await TestDaemon.start({
    config: poolsYaml(['hot-0', 'hot'], ['hot-small', 'hot', disk.poolDir]) + 'demoVolume: null\n',
  });
  // Through the admin API: a CLI process costs ~1 s of start-up on a loaded box.
  await api(d, 'POST', '/v1/volumes', { name: 'full', sizeBytes: 16 * MiB, tier: 'hot', pool: 'hot-small' });
  await api(d, 'POST', '/v1/volumes', { name: 'other', sizeBytes: 16 * MiB, tier: 'hot', pool: 'hot-0' });
  const full = await attachedNbdsh(d.exportUri('full'));
  clients.push(full);
  const other = await attachedNbdsh(d.exportUri('other'));
  clients.push(other);

  // Room for one and a half 1 MiB writes: the second lands in part.
  disk.leaveFree(1.5 * MiB);
  assert.equal(await full.step(`h.pwrite(b'A' * ${MiB}, 0)`), 'None');
  assert.match(await full.step(`h.pwrite(b'B' * ${MiB}, ${MiB})`), /^error: .*No space left on device/, 'the write reaching the full point');
  assert.equal(disk.freeBytes(), 0, 'the disk is full');
  // Again on the chunk now allocated (the daemon's synchronous idle path), and elsewhere.
  assert.match(await full.step(`h.pwrite(b'B' * ${MiB}, ${MiB})`), /^error: .*No space left on device/);
  assert.match(await full.step(`h.pwrite(b'C' * 65536, ${4 * MiB})`), /^error: .*No space left on device/);
  assert.equal(await full.step('h.flush()'), 'None');
  assert.equal(await full.step(`hashlib.sha256(h.pread(${MiB}, 0)).hexdigest() == ${sha('A', MiB)}`), 'True', 'the acknowledged write reads back');

  assert.equal(await other.step(`h.pwrite(b'O' * ${MiB}, 0)`), 'None', 'a volume on another pool carries on');
  assert.equal(await other.step(`hashlib.sha256(h.pread(${MiB}, 0)).hexdigest() == ${sha('O', MiB)}`), 'True');

  disk.freeFiller();
  assert.equal(await full.step(`h.pwrite(b'B' * ${MiB}, ${MiB})`), 'None', 'space freed: the write succeeds');
  assert.equal(await full.step('h.flush()'), 'None');
  for (const c of clients.splice(0)) assert.equal(await c.close(), 0);

  const dataDir = d.dataDir;
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir });
  const again = await attachedNbdsh(d.exportUri('full'));
  clients.push(again);
  assert.equal(await again.step(`hashlib.sha256(h.pread(${2 * MiB}, 0)).hexdigest() == hashlib.sha256(b'A' * ${MiB} + b'B' * ${MiB}).hexdigest()`), 'True', 'after a restart');
  assert.doesNotMatch(d.stderr, /short write/);
});
