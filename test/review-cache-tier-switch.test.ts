// Review (the read cache across tier switches, real daemon, nbdsh): a cold
// volume's stripes are read (and so cached in L1/L2), the volume moves to
// hot, is overwritten there (pwrite, WRITE_ZEROES with and without NO_HOLE,
// TRIM, with FUA or a FLUSH), moves back to cold (new stripe generations)
// and is overwritten again through the journal; then it moves to hot in
// preservation mode (the old stripes stay referenced) and back. After every
// step, and after a SIGKILL with L2 on disk, every read returns the newest
// acknowledged bytes: no cached stripe of an older generation is served.
// Coverage: passed at 6bb5a97.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nbdsh, run, TestDaemon } from './helpers/daemon.js';
import { api, assertSameBytes, createVolume, destage, MiB, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';
import { migrate } from './helpers/hot-warm.js';

const VOLUME_BYTES = 8 * MiB;

interface CacheStats {
  l1: { hits: number };
}

test('cached cold stripes are never served after the volume moved to hot, was overwritten, and moved back (also across preservation mode and SIGKILL)', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-cache-tier-'));
  let d: TestDaemon = await startColdDaemon();
  const model = patternBytes(VOLUME_BYTES, 0x7a11);
  const uri = () => JSON.stringify(d.exportUri('c'));
  let step = 0;
  /** pwrite + zeroes + a trim at distinct places through nbdsh, mirrored in the model (a trim's result is what reads back). */
  const overwrite = async (what: string, fua: boolean) => {
    step++;
    const patch = patternBytes(200_000, 0x100 + step);
    const patchAt = (step % 5) * MiB + 123_456;
    patch.copy(model, patchAt);
    const zeroAt = ((step + 2) % 8) * MiB; // a whole chunk, may be discarded
    model.fill(0, zeroAt, zeroAt + MiB);
    const zeroNoHoleAt = ((step + 5) % 8) * MiB + 8192;
    model.fill(0, zeroNoHoleAt, zeroNoHoleAt + 40_960);
    const trimAt = ((step + 7) % 8) * MiB;
    fs.writeFileSync(path.join(work, 'patch.bin'), patch);
    const flags = fua ? 'nbd.CMD_FLAG_FUA' : '0';
    nbdsh(
      `h.connect_uri(${uri()})\n` +
        `h.pwrite(open(${JSON.stringify(path.join(work, 'patch.bin'))}, 'rb').read(), ${patchAt}, ${flags})\n` +
        `h.zero(${MiB}, ${zeroAt}, ${flags})\n` +
        `h.zero(40960, ${zeroNoHoleAt}, nbd.CMD_FLAG_NO_HOLE | ${flags})\n` +
        `h.trim(${MiB}, ${trimAt}, ${flags})\n` +
        (fua ? '' : 'h.flush()\n'),
    );
    // TRIM is advisory: the model takes what the chunk reads now, and it must keep reading that.
    const now = readExport(d, 'c', path.join(work, 'now.bin'));
    now.copy(model, trimAt, trimAt, trimAt + MiB);
    assertSameBytes(now, model, `${what}: right after the overwrite`);
  };
  const check = (what: string) => assertSameBytes(readExport(d, 'c', path.join(work, 'r.bin')), model, what);
  try {
    await createVolume(d, 'c', VOLUME_BYTES, 'cold');
    fs.writeFileSync(path.join(work, 'src.bin'), model);
    run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('c')]);
    await destage(d);
    check('cold, first read (fills the cache)');
    check('cold, second read');
    const cached = await api<CacheStats>(d, 'GET', '/v1/cache');
    assert.ok(cached.l1.hits > 0, 'the second read was served by the cache');

    await migrate(d, 'c', 'hot');
    check('hot, after the move');
    await overwrite('hot', false);
    await overwrite('hot, FUA', true);
    await migrate(d, 'c', 'cold');
    check('cold again, after the move');
    check('cold again, cached');
    await overwrite('cold, journaled', false);
    check('cold, journal over cached stripes');
    await destage(d);
    check('cold, destaged');

    await migrate(d, 'c', 'hot', true);
    check('hot (preservation mode)');
    await overwrite('hot (preserving)', true);
    await migrate(d, 'c', 'cold');
    check('cold after a preserving move');
    await overwrite('cold after a preserving move', false);

    const dataDir = d.dataDir;
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    check('after SIGKILL and restart');
    await destage(d);
    check('after SIGKILL, destaged');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
