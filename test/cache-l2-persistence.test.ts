// Proves L2 survives a daemon restart (close + reopen of the real mmap'd file), drops corrupt
// records instead of returning them, keeps invalidations across restarts and discards an unclean file.
import assert from 'node:assert/strict';
import { copyFileSync, closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CacheManager, type L3Backend } from '../src/dataplane/cache/index.js';
import { L2File, L2_HEADER_BYTES, L2_SUPERBLOCK_BYTES } from '../src/dataplane/cache/l2-file.js';

const dir = mkdtempSync(join(tmpdir(), 'cache-l2-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const BLOCK_BYTES = 4096;
const block = (seed: number) => {
  const b = Buffer.alloc(BLOCK_BYTES);
  for (let i = 0; i < b.length; i++) b[i] = (seed * 131 + i * 7 + (i >> 5)) & 0xff;
  return b;
};

/** Counts calls, so a test can prove a read was served without going to L3. */
class CountingL3 implements L3Backend {
  calls = 0;
  async get(_key: string): Promise<Buffer | undefined> {
    this.calls++;
    return undefined;
  }
}

// L1 holds about two blocks, so most of the 20 written go to L2.
const cacheAt = (path: string, l3?: L3Backend) =>
  new CacheManager({ l1CapacityBytes: 2 * BLOCK_BYTES + 512, l2: { path, capacityBytes: 1 << 20, minEntryBytes: 1024 }, l3 });

async function fill(path: string, count: number): Promise<CacheManager> {
  const cm = cacheAt(path);
  await cm.open();
  for (let i = 0; i < count; i++) cm.put(`vol/a/${i}`, block(i));
  return cm;
}

/** Offset of the first record in the file whose key is `key` (header is 40 bytes before it). */
function recordOffset(path: string, key: string): number {
  const file = readFileSync(path);
  const at = file.indexOf(Buffer.from(key, 'utf8'));
  assert.ok(at > 40, `record for ${key} not found in ${path}`);
  return at - 40;
}

function flipByte(path: string, position: number): void {
  const fd = openSync(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, position);
    one[0] = one[0]! ^ 0xff;
    writeSync(fd, one, 0, 1, position);
  } finally {
    closeSync(fd);
  }
}

test('entries demoted to L2 are served after close and reopen, without asking L3', async () => {
  const path = join(dir, 'restart.l2');
  const cm = await fill(path, 20);
  const before = cm.stats();
  assert.ok(before.l2!.entries >= 15, `only ${before.l2!.entries} entries reached L2`);
  await cm.close();

  const l3 = new CountingL3();
  const reopened = cacheAt(path, l3);
  await reopened.open();
  const after = reopened.stats().l2!;
  assert.equal(after.recoveredEntries, before.l2!.entries);
  let served = 0;
  for (let i = 0; i < 20; i++) {
    const got = await reopened.get(`vol/a/${i}`);
    if (got !== undefined) {
      assert.deepEqual(got, block(i), `vol/a/${i} came back with other bytes`);
      served++;
    }
  }
  // Everything that was in L2 is served from L2; only what lived in L1 alone went to L3.
  assert.ok(served >= before.l2!.entries, `served ${served} of ${before.l2!.entries} L2 entries`);
  assert.equal(l3.calls, 20 - served);
  assert.equal(reopened.stats().l2!.hits, served);
  await reopened.close();
});

test('a corrupt record found by the restart scan is dropped, never returned', async () => {
  const path = join(dir, 'corrupt-scan.l2');
  const cm = await fill(path, 20);
  const entriesBefore = cm.stats().l2!.entries;
  await cm.close();
  const victim = 'vol/a/3';
  const at = recordOffset(path, victim);
  flipByte(path, at + 40 + victim.length + 100); // a payload byte

  const reopened = cacheAt(path);
  await reopened.open();
  // The scan itself rejects it (so no read ever sees it): one entry fewer, counted as a corruption
  // once (the daemon logs it), and the read that misses it counts none.
  assert.equal(reopened.stats().l2!.recoveredEntries, entriesBefore - 1);
  assert.equal(reopened.stats().l2!.corruptions, 1);
  assert.equal(await reopened.get(victim), undefined);
  assert.equal(reopened.stats().l2!.corruptions, 1);
  assert.deepEqual(await reopened.get('vol/a/4'), block(4), 'a neighbour of the corrupt record must survive');
  await reopened.close();
});

test('a record corrupted while open is detected on read, counted and dropped', async () => {
  const path = join(dir, 'corrupt-read.l2');
  const cm = await fill(path, 20);
  const victim = 'vol/a/5';
  // The file is mmap'd MAP_SHARED: a write through the fd is what the mapping sees.
  flipByte(path, recordOffset(path, victim) + 40 + victim.length + 7);
  assert.equal(await cm.get(victim), undefined);
  const s = cm.stats().l2!;
  assert.equal(s.corruptions, 1);
  assert.equal(await cm.get(victim), undefined, 'the dropped record stays dropped');
  assert.equal(cm.stats().l2!.corruptions, 1);
  assert.deepEqual(await cm.get('vol/a/6'), block(6));
  await cm.close();
});

test('a corrupt header (key bytes) is detected: the record is not served under any key', async () => {
  const path = join(dir, 'corrupt-key.l2');
  const cm = await fill(path, 20);
  const victim = 'vol/a/7';
  flipByte(path, recordOffset(path, victim) + 40 + 2); // inside the key
  assert.equal(await cm.get(victim), undefined);
  assert.equal(cm.stats().l2!.corruptions, 1);
  await cm.close();
});

test('an invalidation is persisted: the old bytes do not come back after a restart', async () => {
  const path = join(dir, 'invalidate.l2');
  const cm = await fill(path, 20);
  assert.deepEqual(await cm.get('vol/a/1'), block(1));
  assert.equal(cm.invalidateChunkRange('a', 0, 4), 4);
  cm.put('vol/a/9', block(99));
  await cm.close();

  const reopened = cacheAt(path);
  await reopened.open();
  for (let i = 0; i < 4; i++) assert.equal(await reopened.get(`vol/a/${i}`), undefined, `vol/a/${i} resurrected`);
  const nine = await reopened.get('vol/a/9');
  assert.ok(nine === undefined || nine.equals(block(99)), 'vol/a/9 must be the new bytes or a miss');
  assert.deepEqual(await reopened.get('vol/a/12'), block(12));
  await reopened.close();
});

test('a file left by an unclean stop is discarded, not trusted', async () => {
  const path = join(dir, 'unclean.l2');
  const cm = await fill(path, 20);
  assert.ok(cm.stats().l2!.entries > 0);
  // A copy taken while the cache is open is what a crash leaves on disk: clean flag 0.
  const crashed = join(dir, 'unclean-copy.l2');
  copyFileSync(path, crashed);
  await cm.close();

  const reopened = cacheAt(crashed);
  await reopened.open();
  assert.equal(reopened.stats().l2!.recoveredEntries, 0);
  assert.equal(reopened.stats().l2!.entries, 0);
  assert.equal(await reopened.get('vol/a/10'), undefined);
  await reopened.close();
});

test('the L2 ring evicts the oldest records when it wraps, and the survivors stay correct across a restart', async () => {
  const path = join(dir, 'wrap.l2');
  // 64 KiB: 15 blocks of 4 KiB + headers fit, 60 are written.
  const cm = new CacheManager({ l1CapacityBytes: 1024, l2: { path, capacityBytes: 64 * 1024, minEntryBytes: 1024 } });
  await cm.open();
  for (let i = 0; i < 60; i++) cm.put(`vol/w/${i}`, block(i));
  const s = cm.stats().l2!;
  assert.ok(s.evictions >= 40, `only ${s.evictions} L2 evictions`);
  assert.ok(s.bytes <= 64 * 1024);
  await cm.close();
  const reopened = new CacheManager({ l1CapacityBytes: 1024, l2: { path, capacityBytes: 64 * 1024, minEntryBytes: 1024 } });
  await reopened.open();
  const recovered = reopened.stats().l2!.recoveredEntries;
  assert.equal(recovered, s.entries);
  // FIFO: the newest entries are the ones kept.
  for (let i = 60 - recovered; i < 60; i++) assert.deepEqual(await reopened.get(`vol/w/${i}`), block(i));
  assert.equal(await reopened.get(`vol/w/${60 - recovered - 1}`), undefined);
  // Writing after recovery continues the ring without corrupting what is there.
  for (let i = 60; i < 70; i++) reopened.put(`vol/w/${i}`, block(i));
  for (let i = 60; i < 70; i++) {
    const got = await reopened.get(`vol/w/${i}`);
    if (got !== undefined) assert.deepEqual(got, block(i));
  }
  assert.equal(reopened.stats().l2!.corruptions, 0);
  await reopened.close();
});

test('an entry the ring evicts without overwriting it (the tail a wrap skips) stays evicted across a restart', () => {
  // Ring of 8 KiB after the superblock; record sizes (header + 1-byte key + value, 512-aligned) chosen so
  // that `k` sits in the tail the fifth put skips when it wraps: evicted, never overwritten.
  const path = join(dir, 'skipped-tail.l2');
  const value = (recordBytes: number, fill: number) => Buffer.alloc(recordBytes - L2_HEADER_BYTES - 1, fill);
  const l2 = new L2File(path, L2_SUPERBLOCK_BYTES + 8192);
  l2.open();
  l2.put('a', value(3584, 1), 3584 - L2_HEADER_BYTES - 1, false); // 4096..7680
  l2.put('b', value(3584, 2), 3584 - L2_HEADER_BYTES - 1, false); // 7680..11264
  l2.put('k', value(512, 3), 512 - L2_HEADER_BYTES - 1, false); // 11264..11776
  l2.put('c', value(1024, 4), 1024 - L2_HEADER_BYTES - 1, false); // wraps: 4096..5120, evicts a
  l2.put('d', value(3584, 5), 3584 - L2_HEADER_BYTES - 1, false); // 5120..8704, evicts b
  l2.put('e', value(4096, 6), 4096 - L2_HEADER_BYTES - 1, false); // skips 8704..12288 (evicts k), wraps: 4096..8192
  assert.equal(l2.get('k'), undefined, 'k was evicted');
  l2.close();
  const again = new L2File(path, L2_SUPERBLOCK_BYTES + 8192);
  again.open();
  // Before the fix k came back: its record was still LIVE on disk, so a write or invalidation
  // of k made while it was evicted (found nothing in L2 to kill) was undone by the restart.
  assert.equal(again.get('k'), undefined, 'an evicted entry came back after a restart');
  assert.ok(again.get('e')?.stored.equals(value(4096, 6)), 'the newest entry is recovered');
  again.close();
});
