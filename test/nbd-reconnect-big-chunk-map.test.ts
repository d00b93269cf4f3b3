// Since NBD connections give their volume back (0dfeee5), a volume closes
// once its last client leaves, and the next connection opens it again: its
// whole chunk map read from the index, on the event loop. For a volume with
// 100,000 chunk entries (a 100 GiB disk written through at 1 MiB chunks) that
// is ~110 ms a connect, every client stalled meanwhile (3.8 ms before that
// change, when the volume stayed open): clients that reconnect in a row
// (qemu-img info then convert, nbdinfo then nbdcopy, a backup tool per
// extent) paid it every time. The server now keeps a closed connection's
// loan a while, in proportion to what the volume's open cost (capped), so a
// reconnect within it finds the volume open; a cheap volume closes at once,
// and this one too once the while is over (2 s at most; ~1 s for this
// test's 50,000 entries).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';

const CHUNKS = 50_000;
const CHUNK_BYTES = 4096;
const RECONNECTS = 20;

const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;

/** Gives the stopped daemon's volume `name` CHUNKS chunk entries of CHUNK_BYTES, all Allocated (its file holds zeros). */
async function bigChunkMap(dataDir: string, name: string): Promise<void> {
  const meta = MetaStore.open(dataDir);
  try {
    const rec = meta.volumes.get(name)!;
    await meta.transaction(() => {
      meta.volumes.put(name, { ...rec, chunkSizeBytes: CHUNK_BYTES, sizeBytes: CHUNKS * CHUNK_BYTES });
      for (let i = 0; i < CHUNKS; i++) meta.chunks.put([rec.id, i], { state: ChunkState.Allocated, pool: rec.poolName });
    });
    await meta.durable();
    const pool = meta.pools.get(rec.poolName)!;
    fs.truncateSync(path.join(path.resolve(dataDir, pool.path), 'volumes', `${rec.id}.dat`), CHUNKS * CHUNK_BYTES);
  } finally {
    await meta.close();
  }
}

test(`a volume with ${CHUNKS} chunk entries, connected ${RECONNECTS} times in a row, is opened once, not once a connection; it closes once its clients have gone`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-nbd-reconnect-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // In the daemon (a preload through NODE_OPTIONS): every open of a volume file is logged to `opens`.
  const opens = path.join(dir, 'opens');
  const preload = path.join(dir, 'count-opens.mjs');
  fs.writeFileSync(
    preload,
    `import fs from 'node:fs';
const real = fs.openSync;
fs.openSync = (p, ...rest) => {
  if (/\\/volumes\\/\\d+\\.dat$/.test(String(p))) fs.appendFileSync(${JSON.stringify(opens)}, String(p) + '\\n');
  return real(p, ...rest);
};
`,
  );
  let d = await TestDaemon.start({ config: CONFIG });
  t.after(() => d.cleanup());
  d.createVolume('big', '4M', '--tier', 'hot');
  assert.equal(await d.stop(), 0);
  await bigChunkMap(d.dataDir, 'big');
  d = await TestDaemon.start({ dataDir: d.dataDir, env: { NODE_OPTIONS: `--import ${preload}` } });
  const out = nbdsh(`
import nbd
for i in range(${RECONNECTS}):
    h = nbd.NBD()
    h.connect_uri(${JSON.stringify(d.unixUri('big'))})
    assert h.get_size() == ${CHUNKS * CHUNK_BYTES}
    h.pwrite(bytes([i + 1]) * 4096, i * 4096)
    assert h.pread(4096, i * 4096) == bytes([i + 1]) * 4096
    if i % 2:
        h.flush()
    h.shutdown()
print('done')
`);
  assert.match(out, /done/);
  const opened = fs.readFileSync(opens, 'utf8').split('\n').filter((l) => l !== '').length;
  // One open; a few if the machine stalled the client past the while between two of its connects.
  assert.ok(opened <= 3, `the volume file was opened ${opened} times for ${RECONNECTS} connections`);

  // Kept only a while: closed once its clients have gone (its file no longer open).
  const pid = d.info.pid;
  const volumeFiles = () =>
    fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return /\/volumes\/\d+\.dat$/.test(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    }).length;
  const deadline = Date.now() + 10_000;
  while (volumeFiles() !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(volumeFiles(), 0, 'the volume stayed open after its clients left');

  // What they wrote is there, read from the volume opened again.
  assert.match(
    nbdsh(`
import nbd
h = nbd.NBD(); h.connect_uri(${JSON.stringify(d.unixUri('big'))})
for i in range(${RECONNECTS}):
    assert h.pread(4096, i * 4096) == bytes([i + 1]) * 4096, i
h.shutdown()
print('read back')
`),
    /read back/,
  );
});
