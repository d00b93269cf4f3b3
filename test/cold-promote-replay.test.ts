// Journal records merged into a volume file (a cold volume migrated to hot,
// or its chunk later trimmed) must never be replayed over newer bytes after
// a SIGKILL: the chunk's index entry records how far the journal was merged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { MiB, api, createVolume, startColdDaemon } from './helpers/cold.js';

/** Bytes at [offset, offset+n) as runs, e.g. "C*4096 A*4096" (short messages on failure). */
function readRuns(d: TestDaemon, offsetBytes: number, n: number): string {
  return nbdsh(
    `import sys, itertools\nh.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n` +
      `b = h.pread(${n}, ${offsetBytes})\n` +
      `sys.stdout.write(' '.join('%s*%d' % (chr(k) if k else '0', len(list(g))) for k, g in itertools.groupby(b)))`,
  );
}

// Regression: promote() wrote the chunk entry without destagedSeq, so the
// journal records it had merged into the file were replayed after SIGKILL
// and a flushed overwrite read back as the old journaled bytes.
test('a cold volume migrated to hot keeps flushed overwrites and trims across SIGKILL (merged journal records are not replayed)', async () => {
  let d = await startColdDaemon();
  const dataDir = d.dataDir;
  try {
    await createVolume(d, 'c1', 8 * MiB, 'cold');
    // Journaled (never destaged): chunk 0 and chunk 5.
    nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nh.pwrite(b"A" * 8192, 0)\nh.pwrite(b"B" * 4096, ${5 * MiB})\nh.flush()`);
    const m = await api<{ phase: string; to: string }>(d, 'POST', '/v1/volumes/c1/migrate', { tier: 'hot' });
    assert.equal(m.phase, 'Done');
    assert.equal(m.to, 'hot');
    // Hot now: an overwrite goes to the file, a whole-chunk trim discards chunk 5.
    nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nh.pwrite(b"C" * 4096, 0)\nh.trim(${MiB}, ${5 * MiB})\nh.flush()`);
    assert.equal(readRuns(d, 0, 8192), 'C*4096 A*4096');
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    assert.equal(readRuns(d, 0, 8192), 'C*4096 A*4096', 'chunk 0 after SIGKILL');
    assert.equal(readRuns(d, 5 * MiB, 4096), '0*4096', 'trimmed chunk 5 after SIGKILL');
  } finally {
    await d.cleanup();
  }
});
