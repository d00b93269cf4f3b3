// A read-cache L2 file damaged while the daemon was stopped (a failing hot
// disk): the daemon starts, drops the records failing their CRC32C, counts
// them in couchestor_cache_corruptions_total and logs it (before, they were
// dropped silently: metric 0, no log line); the other records serve reads
// from L2, the dropped ones are read from the stripes, byte-exact; the next
// start does not count them again. Real daemon, real libnbd client (nbdsh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { MiB, createVolume, destage, startColdDaemon } from './helpers/cold.js';
import { metric } from './helpers/control-loop.js';

const STRIPES = 6;
const CONFIG = 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\ncache:\n  l1CapacityBytes: 1048576\n  l2CapacityBytes: 16777216\n';
// Each stripe's bytes differ: stripe i is the byte i+1, repeated.
const sameAsWritten = (uri: string) =>
  nbdsh(`import hashlib; h.connect_uri(${JSON.stringify(uri)}); print(hashlib.sha256(h.pread(${STRIPES * MiB}, 0)).hexdigest() == hashlib.sha256(b''.join(bytes([i + 1]) * ${MiB} for i in range(${STRIPES}))).hexdigest())`).trim();

async function cacheMetrics(d: TestDaemon): Promise<{ corruptions: number; entries: number; hits: number }> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  const l2 = { tier: 'l2' };
  return { corruptions: metric(text, 'couchestor_cache_corruptions_total', l2)!, entries: metric(text, 'couchestor_cache_entries', l2)!, hits: metric(text, 'couchestor_cache_hits_total', l2)! };
}

test('an L2 file damaged while stopped: the daemon starts, drops and counts the bad records and logs it; reads stay byte-exact; the next start counts nothing', async (t) => {
  let d = await startColdDaemon(CONFIG);
  t.after(() => d.cleanup());
  await createVolume(d, 'c1', STRIPES * MiB, 'cold');
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nfor i in range(${STRIPES}): h.pwrite(bytes([i + 1]) * ${MiB}, i * ${MiB})\nh.flush()`);
  await destage(d);
  assert.equal(sameAsWritten(d.exportUri('c1')), 'True');
  assert.equal((await cacheMetrics(d)).entries, STRIPES, 'each stripe read went into L2');
  assert.equal(await d.stop(), 0);

  // Records are 1 MiB + 512 bytes each, from byte 4096 (the superblock): damage the middle of the first and the third.
  const l2 = path.join(d.dataDir, 'pools', 'hot-0', 'cache', 'l2.cache');
  const fd = fs.openSync(l2, 'r+');
  for (const at of [MiB / 2, 2.5 * MiB]) fs.writeSync(fd, Buffer.alloc(64, 0xa5), 0, 64, at);
  fs.closeSync(fd);

  const dataDir = d.dataDir;
  d = await TestDaemon.start({ dataDir });
  assert.match(d.stderr, /WARN read cache: L2 records failing their checksum dropped at start .*dropped=2 kept=4/);
  assert.deepEqual(await cacheMetrics(d), { corruptions: 2, entries: STRIPES - 2, hits: 0 });
  assert.equal(sameAsWritten(d.exportUri('c1')), 'True', 'the damaged records are read from the stripes');
  assert.equal((await cacheMetrics(d)).hits, STRIPES - 2, 'the others from L2');
  assert.equal(await d.stop(), 0);

  d = await TestDaemon.start({ dataDir });
  assert.doesNotMatch(d.stderr, /failing their checksum/);
  assert.equal((await cacheMetrics(d)).corruptions, 0, 'the dropped records are not counted again');
});
