// A volume delete whose volume file cannot be removed (its pool's disk gone
// read-only, as ext4's errors=remount-ro leaves a failing disk). The file
// removal (step 1's end) threw: the API answered 500 after the volume had
// left the namespace, its chunk-map removal never ran (pool space not given
// back, the "deleting" mark left), and every later start threw the same
// error from VolumeManager.resumeDeletes: the daemon would not start until
// the disk was writable again. A file that cannot be removed is now logged
// and left (an orphan volume file, which fsck lists); the delete goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon } from './helpers/daemon.js';
import { bigChunkMap } from './helpers/big-chunk-map.js';
import { MiB, api, createVolume } from './helpers/cold.js';

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;
const CHUNK_BYTES = 4096;
const CHUNKS = 3000;

/** `dir` read-only from now (a read-only bind mount over itself) until the returned function is called (idempotent). */
function readOnly(dir: string): () => void {
  execFileSync('mount', ['--bind', dir, dir]);
  let mounted = true;
  const undo = () => {
    if (!mounted) return;
    mounted = false;
    execFileSync('umount', [dir]);
  };
  try {
    execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
  } catch (err) {
    undo();
    throw err;
  }
  return undo;
}

test('a delete whose volume file sits on a read-only disk completes, and a start with its mark left starts and finishes it', async (t) => {
  let d = await TestDaemon.start({ config: CONFIG });
  let undo = (): void => undefined;
  t.after(async () => {
    await d.kill();
    undo(); // before the data directory's removal
    await d.cleanup();
  });
  await createVolume(d, 'v', 4 * MiB, 'hot');
  await createVolume(d, 'keep', 4 * MiB, 'hot');
  assert.equal(await d.stop(), 0);
  const file = await bigChunkMap(d.dataDir, 'v', { chunks: CHUNKS, chunkBytes: CHUNK_BYTES });
  let meta = MetaStore.open(d.dataDir);
  const id = meta.volumes.get('v')!.id;
  const pool = meta.volumes.get('v')!.poolName;
  await meta.close();
  assert.ok(fs.existsSync(file));
  const volumesDir = path.dirname(file);

  // Paused for good after 1 batch: the kill lands with the mark and 1,976 entries left.
  d = await TestDaemon.start({ dataDir: d.dataDir, env: { COUCHESTOR_TEST_PAUSE_DELETE_AFTER_BATCHES: '1' } });
  undo = readOnly(volumesDir);
  const del = await fetch(`http://${d.info.api.host}:${d.info.api.port}/v1/volumes/v`, { method: 'DELETE' });
  assert.equal(del.status, 204, await del.text());
  await d.line(/^couchestor paused delete /, 10_000);
  assert.deepEqual((await api<{ name: string }[]>(d, 'GET', '/v1/volumes')).map((v) => v.name), ['keep']);
  await d.kill();

  // Started with the disk still read-only: it starts, serves, and finishes the delete.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const deadline = Date.now() + 8_000;
  while (!/deleted volume: its chunk map is removed .*volume=v id=/.test(d.stderr)) {
    assert.ok(Date.now() < deadline, `the resumed delete did not finish within 8 s:\n${d.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pools = await api<{ name: string; usedBytes: number }[]>(d, 'GET', '/v1/pools');
  assert.equal(pools.find((p) => p.name === pool)!.usedBytes, 0, 'no space counted for the deleted volume');
  assert.equal(await d.stop(), 0);
  undo();

  meta = MetaStore.open(d.dataDir);
  try {
    assert.equal([...meta.volumeChunks(id)].length, 0);
    assert.deepEqual(meta.listDeletingVolumes(), []);
  } finally {
    await meta.close();
  }
  // The file it could not remove is left (an orphan volume file, as fsck lists one).
  assert.ok(fs.existsSync(file), 'the file on the read-only disk is left in place');
});
