// Deleting a volume with a big chunk map (a fully written 1 TiB volume has
// 1M entries) read the whole map in one go (~1.3 s of event loop) and removed
// every entry in ONE index transaction (~2.4 s more): every NBD and S3 client
// of the node waited. The delete now takes the volume out of the namespace
// with a durable "deleting" mark in one small transaction, then removes the
// map DELETE_BATCH_ENTRIES entries per transaction with the event loop
// turning between two, freeing what each batch named after its commit; the
// last batch removes the mark. A mark a crash left is finished at the next
// start, the daemon serving meanwhile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { bigChunkMap } from './helpers/big-chunk-map.js';
import { MiB, api, createVolume, fsckDataDir } from './helpers/cold.js';
import { openColdTierManager, tempDirClosing } from './helpers/volume.js';

const CHUNK_BYTES = 4096;

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;

test('a delete of a 100,000-entry volume removes its map in batches with the event loop turning between them', async (t) => {
  const CHUNKS = 100_000;
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-vdel-slices-', () => m!);
  m = await openColdTierManager(dir);
  const mgr = m;
  const rec = await mgr.createVolume({ name: 'big', sizeBytes: CHUNKS * CHUNK_BYTES, tier: 'hot', pool: 'hot-0' });
  await mgr.meta.transaction(() => {
    for (let i = 0; i < CHUNKS; i++) void mgr.meta.chunks.put([rec.id, i], { state: ChunkState.Allocated, pool: 'hot-0' });
  });
  const pool = mgr.pools.get('hot-0')!;
  pool.usedBytes += CHUNKS * CHUNK_BYTES;
  const usedBefore = pool.usedBytes;
  // Chunk entries removed between two turns of the event loop: all of them in one turn before.
  let removedThisTurn = 0;
  let mostInOneTurn = 0;
  let turns = 0;
  const chunks = mgr.meta.chunks as unknown as { remove: (...args: unknown[]) => unknown };
  const remove = chunks.remove;
  chunks.remove = (...args: unknown[]) => {
    removedThisTurn++;
    return remove(...args);
  };
  t.after(() => (chunks.remove = remove));
  let deleting = true;
  const spin = (): void => {
    turns++;
    mostInOneTurn = Math.max(mostInOneTurn, removedThisTurn);
    removedThisTurn = 0;
    if (deleting) setImmediate(spin);
  };
  setImmediate(spin);
  await mgr.deleteVolume('big');
  deleting = false;
  mostInOneTurn = Math.max(mostInOneTurn, removedThisTurn);
  chunks.remove = remove;
  assert.ok(mostInOneTurn <= 1024, `${mostInOneTurn} chunk entries were removed in one turn of the event loop (at most a batch of 1,024 expected; ${turns} turns)`);
  assert.equal([...mgr.meta.volumeChunks(rec.id)].length, 0, 'no chunk entry of the deleted volume is left');
  assert.deepEqual(mgr.meta.listDeletingVolumes(), [], 'the deleting mark is removed last');
  assert.equal(usedBefore - pool.usedBytes, CHUNKS * CHUNK_BYTES, 'the pool space of every Allocated chunk is given back');
  assert.equal(mgr.getVolumeRecord('big'), undefined);
});

test('a daemon killed in the middle of a delete finishes it at the next start; a new volume of the same name and another volume are untouched', async (t) => {
  const CHUNKS = 20_000;
  let d = await TestDaemon.start({ config: CONFIG });
  t.after(() => d.cleanup());
  // The admin API, not the CLI: a CLI process costs ~1 s of start-up on a loaded box.
  await createVolume(d, 'big', 4 * MiB, 'hot');
  await createVolume(d, 'other', 4 * MiB, 'hot');
  nbdsh(`h.connect_uri(${JSON.stringify(d.unixUri('other'))})\nh.pwrite(b'\\x5a' * 65536, 0)\nh.flush()\nh.shutdown()`);
  assert.equal(await d.stop(), 0);
  const file = await bigChunkMap(d.dataDir, 'big', { chunks: CHUNKS, chunkBytes: CHUNK_BYTES });
  let meta = MetaStore.open(d.dataDir);
  const oldId = meta.volumes.get('big')!.id;
  await meta.close();

  // Paused (for good) once 3 batches of 1,024 entries are removed and freed: the kill lands mid-removal.
  d = await TestDaemon.start({ dataDir: d.dataDir, env: { COUCHESTOR_TEST_PAUSE_DELETE_AFTER_BATCHES: '3' } });
  const del = await fetch(`http://${d.info.api.host}:${d.info.api.port}/v1/volumes/big`, { method: 'DELETE' });
  assert.equal(del.status, 204, await del.text());
  const paused = JSON.parse((await d.line(/^couchestor paused delete /, 10_000)).replace(/^couchestor paused delete /, '')) as { id: number; entriesRemoved: number };
  assert.equal(paused.id, oldId);
  // The volume is gone to clients already; the name is free; the event loop serves another volume.
  const names = (await api<{ name: string }[]>(d, 'GET', '/v1/volumes')).map((v) => v.name);
  assert.deepEqual(names.sort(), ['other'], 'the volumes list does not show the volume being deleted');
  assert.ok(!fs.existsSync(file), 'its file is removed at once');
  await createVolume(d, 'big', 4 * MiB, 'hot');
  const out = nbdsh(
    `h.connect_uri(${JSON.stringify(d.unixUri('other'))})\nassert h.pread(65536, 0) == b'\\x5a' * 65536\nh.shutdown()\n` +
      `h2 = nbd.NBD()\nh2.connect_uri(${JSON.stringify(d.unixUri('big'))})\nassert h2.get_size() == ${4 * MiB}\nassert h2.pread(4096, 0) == bytes(4096)\n` +
      `h2.pwrite(b'\\xa5' * 8192, 4096)\nh2.flush()\nh2.shutdown()\nprint('ok')`,
  );
  assert.match(out, /ok/);
  await d.kill();

  meta = MetaStore.open(d.dataDir);
  const left = [...meta.volumeChunks(oldId)].length;
  const newId = meta.volumes.get('big')!.id;
  await meta.close();
  assert.equal(left, CHUNKS - paused.entriesRemoved, 'premise: the kill landed with entries of the deleted volume left');
  assert.notEqual(newId, oldId);
  // fsck knows the mark: the entries left are the delete's, not damage.
  const mid = fsckDataDir(d.dataDir);
  assert.equal(mid.status, 0, mid.stdout);
  assert.deepEqual((mid.report as unknown as { deletingVolumes: unknown[] }).deletingVolumes, [{ volume: 'big', id: oldId, chunkEntriesLeft: left }]);

  // Restarted without the hook: the mark is found and the removal finished in the background.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const deadline = Date.now() + 20_000;
  while (!/deleted volume: its chunk map is removed .*volume=big id=/.test(d.stderr)) {
    assert.ok(Date.now() < deadline, `the resumed delete did not finish within 20 s:\n${d.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(d.stderr, /finishing deletes a stop or crash cut short/);
  const out2 = nbdsh(
    `h.connect_uri(${JSON.stringify(d.unixUri('big'))})\nassert h.pread(8192, 4096) == b'\\xa5' * 8192\nassert h.pread(4096, 0) == bytes(4096)\nh.shutdown()\n` +
      `h2 = nbd.NBD()\nh2.connect_uri(${JSON.stringify(d.unixUri('other'))})\nassert h2.pread(65536, 0) == b'\\x5a' * 65536\nh2.shutdown()\nprint('ok')`,
  );
  assert.match(out2, /ok/, 'the new volume of the same name and the other volume read back');
  const pools = await api<{ name: string; usedBytes: number }[]>(d, 'GET', '/v1/pools');
  const usedAfterResume = pools.find((p) => p.name === 'hot-0')!.usedBytes;
  assert.equal(await d.stop(), 0);

  meta = MetaStore.open(d.dataDir);
  let usedByVolumesLeft = 0;
  try {
    assert.equal([...meta.volumeChunks(oldId)].length, 0, 'no chunk entry of the deleted volume is left');
    assert.deepEqual(meta.listDeletingVolumes(), [], 'no deleting mark is left');
    assert.ok([...meta.volumeChunks(newId)].length > 0, 'the new volume keeps its chunk entries');
    for (const v of meta.listVolumes()) for (const { entry } of meta.volumeChunks(v.id)) if (entry.state === ChunkState.Allocated && entry.pool === 'hot-0') usedByVolumesLeft += v.chunkSizeBytes;
  } finally {
    await meta.close();
  }
  // The resumed delete gave back no space the start had not counted (the start counts listed volumes only).
  assert.ok(usedByVolumesLeft > 0, 'premise: the volumes left use space');
  assert.equal(usedAfterResume, usedByVolumesLeft, 'hot-0 usage after the resumed delete is what the volumes left use');
  assert.ok(!fs.existsSync(path.join(path.dirname(file), `${oldId}.dat`)));
  const f = fsckDataDir(d.dataDir);
  assert.equal(f.status, 0, f.stdout);
  const r = f.report as unknown as { deletingVolumes: unknown[]; orphanVolumeFileCount: number; badChunkCount: number; orphanRecords: number };
  assert.deepEqual(r.deletingVolumes, []);
  assert.equal(r.orphanVolumeFileCount, 0);
  assert.equal(r.badChunkCount, 0);
});
