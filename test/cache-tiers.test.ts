// Proves the tier movements (L3 -> L2 + L1 promotion, L1 -> L2 demotion by size), LZ4 in L1,
// invalidation by prefix and chunk range, typed errors, Prometheus export, scan resistance and
// the L1 policy's adaptive switches (LRU mode, promotion threshold).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Registry } from 'prom-client';
import {
  CacheClosedError,
  CacheManager,
  InvalidCacheConfigError,
  InvalidCacheKeyError,
  chunkKey,
  registerCacheMetrics,
  type L3Backend,
} from '../src/dataplane/cache/index.js';
import { S3Lfu } from '../src/dataplane/cache/s3-lfu.js';

const dir = mkdtempSync(join(tmpdir(), 'cache-tiers-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const l2Path = () => join(dir, `t${n++}.l2`);

class MapL3 implements L3Backend {
  readonly data = new Map<string, Buffer>();
  calls = 0;
  failWith: Error | undefined;
  async get(key: string): Promise<Buffer | undefined> {
    this.calls++;
    if (this.failWith) throw this.failWith;
    return this.data.get(key);
  }
}

const random = (len: number, seed: number) => {
  const b = Buffer.alloc(len);
  let x = seed | 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
};

test('an L3 hit is promoted to L2 and L1; the next read is an L1 hit', async () => {
  const l3 = new MapL3();
  l3.data.set('vol/x/0', random(8192, 1));
  const cm = new CacheManager({ l1CapacityBytes: 1 << 20, l2: { path: l2Path(), capacityBytes: 1 << 20, minEntryBytes: 4096 }, l3 });
  await cm.open();
  assert.deepEqual(await cm.get('vol/x/0'), random(8192, 1));
  let s = cm.stats();
  assert.equal(s.l3.hits, 1);
  assert.equal(s.l1.entries, 1);
  assert.equal(s.l2!.entries, 1);
  assert.deepEqual(await cm.get('vol/x/0'), random(8192, 1));
  s = cm.stats();
  assert.equal(l3.calls, 1);
  assert.equal(s.l1.hits, 1);
  assert.equal(await cm.get('vol/x/missing'), undefined);
  assert.equal(cm.stats().l3.misses, 1);
  await cm.close();
});

test('concurrent reads of one key make one L3 call', async () => {
  const l3 = new MapL3();
  l3.data.set('k', random(100, 2));
  const cm = new CacheManager({ l1CapacityBytes: 1 << 16, l2: undefined, l3 });
  await cm.open();
  const results = await Promise.all([cm.get('k'), cm.get('k'), cm.get('k')]);
  for (const r of results) assert.deepEqual(r, random(100, 2));
  assert.equal(l3.calls, 1);
  await cm.close();
});

test('an L3 failure reaches the caller, is counted and caches nothing', async () => {
  const l3 = new MapL3();
  l3.data.set('k', random(100, 3));
  l3.failWith = new Error('InsufficientShards');
  const cm = new CacheManager({ l1CapacityBytes: 1 << 16, l2: undefined, l3 });
  await cm.open();
  await assert.rejects(cm.get('k'), /InsufficientShards/);
  assert.equal(cm.stats().l3.errors, 1);
  l3.failWith = undefined;
  assert.deepEqual(await cm.get('k'), random(100, 3));
  assert.equal(l3.calls, 2);
  await cm.close();
});

test('L1 evictions go to L2 only at or above minEntryBytes', async () => {
  const cm = new CacheManager({ l1CapacityBytes: 3000, l2: { path: l2Path(), capacityBytes: 1 << 20, minEntryBytes: 1000 } });
  await cm.open();
  for (let i = 0; i < 10; i++) cm.put(`big/${i}`, random(1000, i));
  for (let i = 0; i < 10; i++) cm.put(`small/${i}`, random(999, i));
  const s = cm.stats();
  assert.ok(s.l1.evictions >= 17, `${s.l1.evictions} L1 evictions`);
  const l2Keys = s.l2!.entries;
  assert.ok(l2Keys >= 8 && l2Keys <= 10, `${l2Keys} entries in L2`);
  for (let i = 0; i < 8; i++) assert.deepEqual(await cm.get(`big/${i}`), random(1000, i));
  let smallHits = 0;
  for (let i = 0; i < 10; i++) if ((await cm.get(`small/${i}`)) !== undefined) smallHits++;
  assert.ok(smallHits <= 3, `small entries survived L1 eviction: ${smallHits}`);
  await cm.close();
});

test('a value larger than all of L1 is kept in L2 and read back', async () => {
  const cm = new CacheManager({ l1CapacityBytes: 4096, l2: { path: l2Path(), capacityBytes: 1 << 20, minEntryBytes: 0 } });
  await cm.open();
  cm.put('huge', random(64 * 1024, 9));
  assert.equal(cm.stats().l1.entries, 0);
  assert.deepEqual(await cm.get('huge'), random(64 * 1024, 9));
  await cm.close();
});

test('LZ4 shrinks compressible L1 entries above the threshold and returns the exact bytes', async () => {
  const cm = new CacheManager({ l1CapacityBytes: 1 << 20, l2: undefined, lz4ThresholdBytes: 1024 });
  await cm.open();
  const zeros = Buffer.alloc(64 * 1024);
  zeros.write('header', 0);
  cm.put('compressible', zeros);
  const compressedBytes = cm.stats().l1.bytes;
  assert.ok(compressedBytes < 2048, `64 KiB of zeros took ${compressedBytes} bytes`);
  assert.deepEqual(await cm.get('compressible'), zeros);
  cm.put('noise', random(4096, 5));
  assert.ok(cm.stats().l1.bytes - compressedBytes >= 4096, 'incompressible data is stored raw');
  assert.deepEqual(await cm.get('noise'), random(4096, 5));
  cm.put('small', Buffer.alloc(512));
  assert.ok(cm.stats().l1.bytes - compressedBytes >= 4096 + 512, 'below the threshold is stored raw');
  await cm.close();
});

test('invalidatePrefix and invalidateChunkRange remove exactly the matching keys from L1 and L2', async () => {
  const cm = new CacheManager({ l1CapacityBytes: 8 * 1024, l2: { path: l2Path(), capacityBytes: 1 << 20, minEntryBytes: 0 } });
  await cm.open();
  for (let i = 0; i < 600; i++) cm.put(chunkKey('7', i), random(64, i));
  cm.put(chunkKey('70', 5), random(64, 70));
  cm.put('obj/b/k', random(64, 71));
  assert.ok(cm.stats().l2!.entries > 0 && cm.stats().l1.entries > 0);
  // Narrow range: per-key path.
  assert.equal(cm.invalidateChunkRange('7', 10, 20), 10);
  // Wide range: scan path; must not touch volume "70".
  assert.equal(cm.invalidateChunkRange('7', 100, 1000), 500);
  for (const i of [9, 20, 99]) assert.deepEqual(await cm.get(chunkKey('7', i)), random(64, i));
  for (const i of [10, 19, 100, 599]) assert.equal(await cm.get(chunkKey('7', i)), undefined);
  assert.deepEqual(await cm.get(chunkKey('70', 5)), random(64, 70));
  assert.equal(cm.invalidatePrefix('vol/7/'), 90);
  assert.deepEqual(await cm.get(chunkKey('70', 5)), random(64, 70));
  assert.deepEqual(await cm.get('obj/b/k'), random(64, 71));
  await cm.close();
});

test('typed errors: closed cache, bad key, bad configuration', async () => {
  const cm = new CacheManager({ l1CapacityBytes: 1024, l2: undefined });
  assert.throws(() => cm.put('k', Buffer.alloc(1)), CacheClosedError);
  await cm.open();
  assert.throws(() => cm.put('', Buffer.alloc(1)), InvalidCacheKeyError);
  assert.throws(() => cm.put('k'.repeat(2000), Buffer.alloc(1)), InvalidCacheKeyError);
  await cm.close();
  await assert.rejects(cm.get('k'), CacheClosedError);
  assert.throws(() => new CacheManager({ l1CapacityBytes: 0, l2: undefined }), InvalidCacheConfigError);
  assert.throws(
    () => new CacheManager({ l1CapacityBytes: 1024, l2: { path: l2Path(), capacityBytes: 100, minEntryBytes: 0 } }),
    InvalidCacheConfigError,
  );
});

test('registerCacheMetrics exports per-tier counters named couchestor_cache_*', async () => {
  const l3 = new MapL3();
  l3.data.set('a', random(2048, 1));
  const cm = new CacheManager({ l1CapacityBytes: 1 << 16, l2: { path: l2Path(), capacityBytes: 1 << 20, minEntryBytes: 1024 }, l3 });
  await cm.open();
  const registry = new Registry();
  registerCacheMetrics(cm, registry);
  await cm.get('a'); // L1 miss, L2 miss, L3 hit
  await cm.get('a'); // L1 hit
  await cm.get('b'); // misses everywhere
  const text = await registry.metrics();
  assert.match(text, /^couchestor_cache_hits_total\{tier="l1"\} 1$/m);
  assert.match(text, /^couchestor_cache_hits_total\{tier="l3"\} 1$/m);
  assert.match(text, /^couchestor_cache_misses_total\{tier="l1"\} 2$/m);
  assert.match(text, /^couchestor_cache_misses_total\{tier="l2"\} 2$/m);
  assert.match(text, /^couchestor_cache_misses_total\{tier="l3"\} 1$/m);
  assert.match(text, /^couchestor_cache_entries\{tier="l2"\} 1$/m);
  assert.match(text, /^couchestor_cache_bytes\{tier="l2"\} 2048$/m);
  assert.match(text, /^# TYPE couchestor_cache_evictions_total counter$/m);
  // Counters follow the cache between scrapes.
  await cm.get('a');
  assert.match(await registry.metrics(), /^couchestor_cache_hits_total\{tier="l1"\} 2$/m);
  await cm.close();
});

test('the L1 policy keeps a hot set through a one-pass scan that flushes an LRU', () => {
  const capacity = 100;
  const policy = new S3Lfu<number, number>({ maximumWeight: capacity, expectedEntries: capacity });
  const lruOrder: number[] = [];
  const lruTouch = (k: number) => {
    const i = lruOrder.indexOf(k);
    if (i >= 0) lruOrder.splice(i, 1);
    lruOrder.push(k);
    if (lruOrder.length > capacity) lruOrder.shift();
    return i >= 0;
  };
  for (let round = 0; round < 20; round++) {
    for (let k = 0; k < 80; k++) {
      if (policy.get(k) === undefined) policy.set(k, k, 1, false);
      lruTouch(k);
    }
  }
  for (let k = 1000; k < 1500; k++) {
    if (policy.get(k) === undefined) policy.set(k, k, 1, false);
    lruTouch(k);
  }
  let ours = 0;
  let lru = 0;
  for (let k = 0; k < 80; k++) {
    if (policy.peek(k) !== undefined) ours++;
    if (lruOrder.includes(k)) lru++;
  }
  assert.equal(lru, 0);
  assert.ok(ours >= 70, `only ${ours} of 80 hot keys survived the scan`);
  assert.ok(policy.weightedSize <= capacity);
});

test('the L1 policy switches to LRU where its sampled shadows show LRU winning, and keeps up with it', () => {
  // Every key is read twice, 400 steps apart (800 other keys touched in between): within an
  // LRU of 1000 entries (a hit), far beyond the small queue of 100 (S3-LFU alone would miss
  // each second read).
  const capacity = 1000;
  const policy = new S3Lfu<number, number>({ maximumWeight: capacity, expectedEntries: capacity });
  assert.equal(policy.lruMode, false);
  const keyCount = 60_000;
  const gap = 400;
  let hits = 0;
  let lateHits = 0;
  let lateReads = 0;
  for (let step = 0; step < keyCount + gap; step++) {
    for (const k of [step, step - gap]) {
      if (k < 0 || k >= keyCount) continue;
      const hit = policy.get(k) !== undefined;
      if (!hit) policy.set(k, k, 1, false);
      if (hit) hits++;
      if (step >= keyCount / 2) {
        lateReads++;
        if (hit) lateHits++;
      }
    }
  }
  assert.equal(policy.lruMode, true);
  assert.ok(policy.modeSwitches >= 1);
  // An LRU hits every second read: half of all reads.
  assert.ok(lateHits / lateReads > 0.49, `late hit ratio ${lateHits / lateReads}`);
  assert.ok(hits > 0.45 * 2 * keyCount, `hit ratio ${hits / (2 * keyCount)}`);
  assert.ok(policy.weightedSize <= capacity);
});

test('after a long S3-LFU lead, a short burst in which LRU wins switches the L1 policy to LRU within the burst', () => {
  const capacity = 1000;
  const policy = new S3Lfu<number, number>({ maximumWeight: capacity, expectedEntries: capacity });
  const access = (k: number): boolean => {
    const hit = policy.get(k) !== undefined;
    if (!hit) policy.set(k, k, 1, false);
    return hit;
  };
  // Phase 1, 300,000 accesses: 900 hot keys read at random (a fixed LCG), and every 10th access
  // a key read once (a scan). S3-LFU keeps the hot set in main; an LRU of 1000 loses part of
  // it to the scan. That long lead is what a burst has to overcome.
  let x = 12345;
  let scanKey = 1_000_000;
  for (let i = 0; i < 300_000; i++) {
    if (i % 10 === 0) {
      access(scanKey++);
    } else {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      access((x >>> 8) % 900);
    }
  }
  assert.equal(policy.lruMode, false);
  // Phase 2, a burst of 8,000 reads: every key read twice, 400 steps apart (as in the test
  // above): LRU hits every second read, S3-LFU's small queue of 100 misses them. The slow
  // score alone (100,000-access window) did not switch within the burst at all; the fast one
  // must, and the burst's last quarter must then run near LRU's 50%.
  let switchedAt = -1;
  let reads = 0;
  let lateHits = 0;
  for (let step = 0; step < 4000; step++) {
    for (const k of [2_000_000 + step, 2_000_000 + step - 400]) {
      if (k < 2_000_000) continue;
      const hit = access(k);
      reads++;
      if (switchedAt < 0 && policy.lruMode) switchedAt = reads;
      if (reads > 6000 && hit) lateHits++;
    }
  }
  assert.ok(switchedAt > 0 && switchedAt < 4000, `switched to LRU after ${switchedAt} of ${reads} burst reads`);
  assert.ok(lateHits / (reads - 6000) > 0.45, `late burst hit ratio ${lateHits / (reads - 6000)}`);
  assert.ok(policy.weightedSize <= capacity);
});

test('the L1 policy promotes after 2 hits in small where its third shadow shows that winning (re-reads in quick succession)', () => {
  const capacity = 1000;
  const policy = new S3Lfu<number, number>({ maximumWeight: capacity, expectedEntries: capacity });
  assert.equal(policy.promotionHits, 1);
  // 950 hot keys read at random (a fixed LCG); every 3rd access reads a new key that is read
  // once more 5 accesses later and never again. Promoted after 1 hit, every such pair goes to
  // main and pushes hot keys out of it (measured: 48% of the second half's reads hit); promoted
  // after 2 hits, pairs leave through small and main keeps the hot set (57%).
  const accesses = 120_000;
  let x = 12345;
  let nextKey = 1_000_000;
  const pending: { key: number; at: number }[] = [];
  let lateHits = 0;
  let lateReads = 0;
  for (let i = 0; i < accesses; i++) {
    let k: number;
    if (pending.length > 0 && pending[0]!.at <= i) {
      k = pending.shift()!.key;
    } else if (i % 3 === 0) {
      k = nextKey++;
      pending.push({ key: k, at: i + 5 });
    } else {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      k = (x >>> 8) % 950;
    }
    const hit = policy.get(k) !== undefined;
    if (!hit) policy.set(k, k, 1, false);
    if (i >= accesses / 2) {
      lateReads++;
      if (hit) lateHits++;
    }
  }
  assert.equal(policy.lruMode, false);
  assert.equal(policy.promotionHits, 2);
  assert.ok(policy.promoteSwitches >= 1);
  assert.ok(lateHits / lateReads > 0.54, `late hit ratio ${lateHits / lateReads}`);
  assert.ok(policy.weightedSize <= capacity);
});
