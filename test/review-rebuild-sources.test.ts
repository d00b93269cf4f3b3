// Review of the pool-rebuild kernel (native rebuildReadAsync, 12907f3) with
// hostile sources, through the real daemon: a source segment cut short (the
// kernel's pread hits end of file inside a record) and a source record whose
// length field claims ~4 GiB. Neither may be decoded from nor read past; the
// stripes take the full-survivor path and read back byte-exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import {
  MiB,
  loseAndReplacePool,
  patternBytes,
  readBackWithPoolsLost,
  rebuildPoolAllHealthy,
  scrub,
  segmentFiles,
  startColdDaemon,
  writeColdVolume,
} from './helpers/cold.js';

const STRIPES = 20;
const VOLUME_BYTES = STRIPES * MiB;
/** shard-record.ts: payload length (u32 LE) at byte 44 of the 64-byte header. */
const PAYLOAD_LENGTH_OFFSET = 44;

test('pool rebuild with a truncated source segment and a source whose length field says 4 GiB: neither is decoded from, every stripe is rebuilt byte-exact', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-sources-'));
  let d = await startColdDaemon();
  try {
    const model = patternBytes(VOLUME_BYTES, 0x5e11);
    await writeColdVolume(d, 'c1', model, work);
    await d.kill();

    // Sources are ranked by pool name: cold-0, -1, -3, -4 feed the kernel when cold-2 is rebuilt.
    const [seg0] = segmentFiles(d, 0);
    const size0 = fs.statSync(seg0!).size;
    fs.truncateSync(seg0!, size0 - 100_000); // the last record of cold-0 ends 100,000 bytes early
    const [seg1] = segmentFiles(d, 1);
    const fd = fs.openSync(seg1!, 'r+');
    const huge = Buffer.alloc(4);
    huge.writeUInt32LE(0xfffffff0);
    fs.writeSync(fd, huge, 0, 4, PAYLOAD_LENGTH_OFFSET); // the first record of cold-1
    fs.closeSync(fd);

    d = await TestDaemon.start({ dataDir: d.dataDir });
    loseAndReplacePool(d, 2);
    const report = await rebuildPoolAllHealthy(d, 2, STRIPES);
    assert.equal(report.stripesChecked, STRIPES);
    assert.equal(report.stripesRebuilt, STRIPES, JSON.stringify(report));
    assert.equal(report.slowPathStripes, 2, 'exactly the two stripes with a bad source left the kernel path');
    assert.match(d.stderr, /another survivor is used pool=cold-0 /);
    assert.match(d.stderr, /another survivor is used pool=cold-1 /);
    assert.equal((await scrub(d)).badStripes, 0, 'the slow path rebuilt the truncated and the corrupt shard too');
    // Two pools lost: the rebuilt shards (cold-2, and the replaced cold-0/cold-1 ones) carry the reads.
    const after = await readBackWithPoolsLost(d, [3, 4], 'c1', model, path.join(work, 'out.bin'), 'after a rebuild around hostile sources');
    assert.equal(after.failedReads, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
