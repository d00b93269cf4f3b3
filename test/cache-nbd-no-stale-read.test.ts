// The read cache in front of the cold tier never serves old bytes: data read
// (and so cached) from stripes, then overwritten through NBD, reads back new
// before destage (journal over cached stripe), after destage (new stripe
// generation, new cache key) and after a restart (L2 persists).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nbdsh, run, TestDaemon } from './helpers/daemon.js';
import { api, assertSameBytes, createVolume, destage, MiB, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';

interface CacheStats {
  l1: { hits: number; misses: number; entries: number };
  l2?: { hits: number; entries: number; recoveredEntries: number };
  l3: { hits: number; misses: number };
}

const VOLUME_BYTES = 8 * MiB;

test('cached cold data overwritten through NBD never reads back stale, before or after destage and restart', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cache-nbd-'));
  let d: TestDaemon = await startColdDaemon();
  try {
    await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
    const model = patternBytes(VOLUME_BYTES, 0xcace);
    fs.writeFileSync(path.join(work, 'src.bin'), model);
    run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('c1')]);
    await destage(d);

    // Two full reads: the first fills the cache from the stripes, the second is served by it.
    assertSameBytes(readExport(d, 'c1', path.join(work, 'a.bin')), model, 'first read');
    const warm = await api<CacheStats>(d, 'GET', '/v1/cache');
    assertSameBytes(readExport(d, 'c1', path.join(work, 'a.bin')), model, 'second read');
    const hot = await api<CacheStats>(d, 'GET', '/v1/cache');
    assert.ok(hot.l1.hits > warm.l1.hits, `the second read was served from L1 (${warm.l1.hits} -> ${hot.l1.hits} hits)`);
    assert.equal(hot.l3.hits, warm.l3.hits, 'the second read did not go to the stripes');

    // Overwrite inside cached chunks: unaligned, crossing a chunk boundary, plus a zeroed range.
    const patch = patternBytes(300_000, 0xbeef);
    const patchAt = 3 * MiB - 100_000;
    patch.copy(model, patchAt);
    model.fill(0, 5 * MiB + 4096, 5 * MiB + 4096 + 65536);
    fs.writeFileSync(path.join(work, 'patch.bin'), patch);
    nbdsh(
      `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n` +
        `h.pwrite(open(${JSON.stringify(path.join(work, 'patch.bin'))}, 'rb').read(), ${patchAt})\n` +
        `h.zero(65536, ${5 * MiB + 4096})\n` +
        'h.flush()\n',
    );
    assertSameBytes(readExport(d, 'c1', path.join(work, 'b.bin')), model, 'after overwrite, before destage');

    await destage(d);
    assertSameBytes(readExport(d, 'c1', path.join(work, 'c.bin')), model, 'after destage');

    // L2 is found again after a clean restart; its entries must still never be stale.
    const dataDir = d.dataDir;
    assert.equal(await d.stop(), 0);
    d = await TestDaemon.start({ dataDir });
    assertSameBytes(readExport(d, 'c1', path.join(work, 'd.bin')), model, 'after restart');
    const after = await api<CacheStats>(d, 'GET', '/v1/cache');
    assert.ok((after.l2?.recoveredEntries ?? 0) > 0, 'L2 entries were recovered at restart');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
