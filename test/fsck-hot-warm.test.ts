// `couchestor fsck` checks hot/warm volume files: every Allocated chunk's pool
// must exist and its file must exist and reach the chunk. Clean on a thin,
// partly written volume after a move and after an aborted move (chunks in two
// pools' files); each kind of damage is reported per chunk (a volume whose
// placement pool is unknown, per volume), exit status 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { openManager } from '../src/daemon.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { migrateVolume, MigrationAborted } from '../src/dataplane/volumes/migration.js';
import { nbdsh } from './helpers/daemon.js';
import { assertSameBytes, fsckDataDir, MiB, patternBytes, readExport, type FsckReport } from './helpers/cold.js';
import { api, migrate, startWarmDaemon, volumeFile, volumeRecord } from './helpers/hot-warm.js';

const VOLUME_BYTES = 40 * MiB;
/** Chunks 0..19 written whole; 24, 30 and 35 only partly (4-8 KiB); the rest never written. */
const FULL_CHUNKS = 20;

/** Writes `data` at `offsetBytes` of the export through nbdsh, then FLUSH. */
function nbdWrite(uri: string, offsetBytes: number, data: Buffer, scratch: string): void {
  fs.writeFileSync(scratch, data);
  nbdsh(`h.connect_uri(${JSON.stringify(uri)})\nh.pwrite(open(${JSON.stringify(scratch)}, 'rb').read(), ${offsetBytes})\nh.flush()\nh.shutdown()`);
  fs.rmSync(scratch);
}

function assertClean(f: ReturnType<typeof fsckDataDir>, chunks: number, what: string): void {
  assert.equal(f.status, 0, `${what}: fsck exit status\n${f.stdout}\n${f.stderr}`);
  assert.equal(f.report.chunksChecked, chunks, `${what}: chunks checked\n${f.stdout}`);
  assert.equal(f.report.badChunkCount, 0, `${what}\n${f.stdout}`);
  assert.deepEqual(f.report.badChunks, []);
  assert.deepEqual(f.report.badVolumes, []);
}

function badChunkIndexes(r: FsckReport): number[] {
  return r.badChunks.map((b) => b.chunkIndex).sort((a, b) => a - b);
}

/** A copy of a stopped daemon's data directory to damage (the volume files are sparse). */
function copyDataDir(from: string, to: string): string {
  fs.cpSync(from, to, { recursive: true });
  return to;
}

test('fsck: a thin, partly written volume is clean after a move and after an aborted move; a missing pool file, a short one, a chunk or volume on an unknown pool are reported, exit 1', async (t) => {
  const d = await startWarmDaemon();
  const scratchDir = fs.mkdtempSync('/tmp/couchestor-fsck-hw-');
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(scratchDir, { recursive: true, force: true });
  });
  const created = await api<{ id: number }>(d, 'POST', '/v1/volumes', { name: 'v', sizeBytes: VOLUME_BYTES });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const model = Buffer.alloc(VOLUME_BYTES);
  const put = (offsetBytes: number, data: Buffer) => {
    nbdWrite(d.exportUri('v'), offsetBytes, data, path.join(scratchDir, 'w.bin'));
    data.copy(model, offsetBytes);
  };
  put(0, patternBytes(FULL_CHUNKS * MiB, 1));
  put(24 * MiB, patternBytes(4096, 2));
  // Ends inside chunk 30: hot-0's file is shorter than the chunk, which is healthy (the rest reads as zeros).
  put(30 * MiB + 512 * 1024, patternBytes(8192, 3));
  assert.equal(fs.statSync(volumeFile(d, 'hot-0', created.body.id)).size, 30 * MiB + 512 * 1024 + 8192);

  await migrate(d, 'v', 'warm');
  // Written on warm-0 after the move: warm-0's file now ends inside chunk 35.
  put(35 * MiB + 4096, patternBytes(4096, 4));
  const id = (await volumeRecord(d, 'v')).id;
  const warmFile = volumeFile(d, 'warm-0', id);
  const hotFile = volumeFile(d, 'hot-0', id);
  assert.equal(fs.statSync(warmFile).size, 35 * MiB + 8192);
  assert.equal(fs.existsSync(hotFile), false, 'RELEASE left the hot file');
  const CHUNKS = FULL_CHUNKS + 3;
  assert.equal(await d.stop(), 0);
  assertClean(fsckDataDir(d.dataDir), CHUNKS, 'after hot -> warm');

  // A move back to hot aborted once 16 chunks are across (progress is
  // reported every 16): chunks 0..15 in hot-0's file, the rest in warm-0's.
  {
    const m = await openManager(loadConfig(d.dataDir), { coldTier: false });
    try {
      const ac = new AbortController();
      await assert.rejects(
        migrateVolume(m, 'v', 'hot', { preserve: false, signal: ac.signal, concurrency: 1, onProgress: (p) => p.chunksDone >= 16 && ac.abort() }),
        (err: Error) => err instanceof MigrationAborted,
      );
      const vol = m.openVolume('v');
      assert.equal(vol.rec.poolName, 'warm-0');
      const onHot = Array.from({ length: 40 }, (_, c) => c).filter((c) => vol.chunkState[c] === ChunkState.Allocated && vol.chunkPool(c).name === 'hot-0');
      assert.deepEqual(onHot, Array.from({ length: 16 }, (_, c) => c));
    } finally {
      await m.close();
    }
  }
  assertClean(fsckDataDir(d.dataDir), CHUNKS, 'after an aborted warm -> hot move');

  // What fsck calls clean reads back: restart and read the whole export.
  const d2 = await startWarmDaemon({ dataDir: d.dataDir });
  try {
    assertSameBytes(readExport(d2, 'v', path.join(scratchDir, 'out.bin')), model, 'export after the aborted move');
  } finally {
    assert.equal(await d2.stop(), 0);
  }

  // Damage 1: hot-0's file deleted: exactly the 16 chunks the index places in it.
  {
    const dir = copyDataDir(d.dataDir, path.join(scratchDir, 'missing'));
    fs.rmSync(path.join(dir, 'pools', 'hot-0', 'volumes', `${id}.dat`));
    const f = fsckDataDir(dir);
    assert.equal(f.status, 1, `a missing pool file: exit status\n${f.stdout}`);
    assert.equal(f.report.chunksChecked, CHUNKS);
    assert.equal(f.report.badChunkCount, 16);
    assert.deepEqual(badChunkIndexes(f.report), Array.from({ length: 16 }, (_, c) => c));
    for (const b of f.report.badChunks) {
      assert.equal(b.volume, 'v');
      assert.equal(b.pool, 'hot-0');
      assert.match(b.reason, new RegExp(`pool file .*/pools/hot-0/volumes/${id}\\.dat is missing`));
    }
    assert.match(f.stderr, /fsck: volume v: 16 chunk\(s\) on pool hot-0 unreadable, first chunk 0: pool file .* is missing/);
    fs.rmSync(dir, { recursive: true });
  }

  // Damage 2: warm-0's file cut inside chunk 24. Chunk 24 still has its
  // first bytes (like a partly written last chunk: not reported); 30 and 35
  // lie wholly past the end.
  {
    const dir = copyDataDir(d.dataDir, path.join(scratchDir, 'short'));
    fs.truncateSync(path.join(dir, 'pools', 'warm-0', 'volumes', `${id}.dat`), 24 * MiB + 2048);
    const f = fsckDataDir(dir);
    assert.equal(f.status, 1, `a short pool file: exit status\n${f.stdout}`);
    assert.equal(f.report.badChunkCount, 2);
    assert.deepEqual(badChunkIndexes(f.report), [30, 35]);
    for (const b of f.report.badChunks) {
      assert.equal(b.pool, 'warm-0');
      assert.match(b.reason, new RegExp(`pool file .*/pools/warm-0/volumes/${id}\\.dat is ${24 * MiB + 2048} bytes: it ends before this chunk \\(bytes ${b.chunkIndex * MiB}\\.\\.${(b.chunkIndex + 1) * MiB}\\)`));
    }
    fs.rmSync(dir, { recursive: true });
  }

  // Damage 3: chunk 17's index entry names a pool that does not exist.
  {
    const dir = copyDataDir(d.dataDir, path.join(scratchDir, 'nopool'));
    const meta = MetaStore.open(dir);
    try {
      const entry = meta.chunks.get([id, 17]);
      assert.ok(entry);
      assert.equal(entry.state, ChunkState.Allocated);
      assert.equal(entry.pool, 'warm-0');
      await meta.chunks.put([id, 17], { ...entry, pool: 'warm-9' });
      await meta.durable();
    } finally {
      await meta.close();
    }
    const f = fsckDataDir(dir);
    assert.equal(f.status, 1, `a chunk on an unknown pool: exit status\n${f.stdout}`);
    assert.equal(f.report.badChunkCount, 1);
    assert.deepEqual(f.report.badChunks, [{ volume: 'v', chunkIndex: 17, pool: 'warm-9', reason: 'the index places this chunk on pool "warm-9", which does not exist' }]);
    fs.rmSync(dir, { recursive: true });
  }

  // Damage 4: the volume record's placement pool does not exist (the volume cannot be opened); its chunks are where the index says.
  {
    const dir = copyDataDir(d.dataDir, path.join(scratchDir, 'noplacement'));
    const meta = MetaStore.open(dir);
    try {
      const rec = meta.volumes.get('v');
      assert.ok(rec);
      await meta.volumes.put('v', { ...rec, poolName: 'warm-9' });
      await meta.durable();
    } finally {
      await meta.close();
    }
    const f = fsckDataDir(dir);
    assert.equal(f.status, 1, `a volume placed on an unknown pool: exit status\n${f.stdout}`);
    assert.deepEqual(f.report.badVolumes, [{ volume: 'v', pool: 'warm-9', reason: 'placement pool warm-9 does not exist: the volume cannot be opened' }]);
    assert.equal(f.report.badChunkCount, 0);
    fs.rmSync(dir, { recursive: true });
  }
});
