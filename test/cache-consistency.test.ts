// Proves the cache never returns stale bytes: random interleavings of put/get/delete/
// invalidate(-prefix, -range)/restart, and of L3 fetches racing writes, checked against a model.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { CacheManager, chunkKey, type L3Backend } from '../src/dataplane/cache/index.js';

const dir = mkdtempSync(join(tmpdir(), 'cache-consistency-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const VOLUME = 'v1';
const keyArb = fc.oneof(
  fc.integer({ min: 0, max: 15 }).map((i) => chunkKey(VOLUME, i)),
  fc.integer({ min: 0, max: 3 }).map((i) => chunkKey('v2', i)),
  fc.constantFrom('obj/a', 'obj/b', 'obj/c'),
);
// Mix tiny, incompressible and half-compressible values so the raw, LZ4, L1-only and
// L2-demoted paths all run.
const valueArb = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 300, size: 'max' }).map((a) => Buffer.from(a)),
  fc.uint8Array({ minLength: 200, maxLength: 2500, size: 'max' }).map((a) => Buffer.from(a)),
  fc
    .uint8Array({ minLength: 300, maxLength: 1500, size: 'max' })
    .map((a) => Buffer.concat([Buffer.from(a), Buffer.alloc(a.length, 7)])),
);

type Op =
  | { kind: 'write'; key: string; value: Buffer }
  | { kind: 'remove'; key: string }
  | { kind: 'get'; key: string }
  | { kind: 'prefix'; prefix: string }
  | { kind: 'range'; first: number; end: number }
  | { kind: 'restart' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ kind: fc.constant('write' as const), key: keyArb, value: valueArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), key: keyArb }) },
  { weight: 14, arbitrary: fc.record({ kind: fc.constant('get' as const), key: keyArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('prefix' as const), prefix: fc.constantFrom('vol/v2/', 'obj/', 'vol/v1/1', 'vol/') }) },
  {
    weight: 1,
    arbitrary: fc
      // Narrow ranges take the per-key path, wide ones (> 256) the scan path.
      .tuple(fc.integer({ min: 0, max: 16 }), fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 257, max: 400 })))
      .map(([first, width]) => ({ kind: 'range' as const, first, end: first + width })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'restart' as const }) },
);

/** The backing store the front ends write through: L3 serves whatever it holds now. */
class StoreBackend implements L3Backend {
  readonly data = new Map<string, Buffer>();
  reads = 0;
  async get(key: string): Promise<Buffer | undefined> {
    this.reads++;
    return this.data.get(key);
  }
}

const allKeys = [
  ...Array.from({ length: 16 }, (_, i) => chunkKey(VOLUME, i)),
  ...Array.from({ length: 4 }, (_, i) => chunkKey('v2', i)),
  'obj/a',
  'obj/b',
  'obj/c',
];

const wrapsL2: Op[] = [
  ...allKeys.map((key, i) => ({ kind: 'write' as const, key, value: Buffer.from(Buffer.alloc(2000, i + 1).map((b, j) => (b * 31 + j * 17) & 0xff)) })),
  ...allKeys.map((key) => ({ kind: 'get' as const, key })),
];

let run = 0;
let l2Hits = 0;
let l2Evictions = 0;
let recovered = 0;
function tally(cm: CacheManager): void {
  const s = cm.stats();
  l2Hits += s.l2!.hits;
  l2Evictions += s.l2!.evictions;
}
function newCache(path: string, l3: L3Backend | undefined): CacheManager {
  // Tiny tiers so every run evicts from L1, wraps the L2 ring and demotes/promotes.
  return new CacheManager({
    l1CapacityBytes: 6 * 1024,
    l2: { path, capacityBytes: 16 * 1024, minEntryBytes: 200 },
    l3,
    lz4ThresholdBytes: 512,
  });
}

test('reads through the cache always equal the store under random put/get/delete/invalidate/restart', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 150, size: 'max' }), async (ops) => {
      const path = join(dir, `model-${run++}.l2`);
      const store = new StoreBackend();
      let cm = newCache(path, store);
      await cm.open();
      try {
        for (const op of ops) {
          switch (op.kind) {
            case 'write':
              // Write-through, as the block front end does: store first, then the cache.
              store.data.set(op.key, op.value);
              cm.put(op.key, op.value);
              break;
            case 'remove':
              store.data.delete(op.key);
              cm.invalidate(op.key);
              break;
            case 'get': {
              const got = await cm.get(op.key);
              assert.deepEqual(got, store.data.get(op.key), `get(${op.key})`);
              break;
            }
            case 'prefix':
              for (const k of [...store.data.keys()]) if (k.startsWith(op.prefix)) store.data.delete(k);
              cm.invalidatePrefix(op.prefix);
              break;
            case 'range':
              for (let i = op.first; i < op.end; i++) store.data.delete(chunkKey(VOLUME, i));
              cm.invalidateChunkRange(VOLUME, op.first, op.end);
              break;
            case 'restart':
              await cm.close();
              cm = newCache(path, store);
              await cm.open();
              break;
          }
          const s = cm.stats();
          assert.ok(s.l1.bytes <= s.l1.capacityBytes, `L1 holds ${s.l1.bytes} > ${s.l1.capacityBytes} bytes`);
          assert.ok(s.l1.bytes >= 0);
          assert.equal(s.l2?.corruptions, 0);
        }
        for (const [k, v] of store.data) assert.deepEqual(await cm.get(k), v);
      } finally {
        await cm.close();
        rmSync(path, { force: true });
      }
    }),
    { numRuns: 60 },
  );
});

test('without L3, a read returns the latest value or a miss, never an older value', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 150, size: 'max' }), async (ops) => {
      const path = join(dir, `nol3-${run++}.l2`);
      const model = new Map<string, Buffer>();
      let cm = newCache(path, undefined);
      await cm.open();
      try {
        for (const op of ops) {
          if (op.kind === 'write') {
            model.set(op.key, op.value);
            cm.put(op.key, op.value);
          } else if (op.kind === 'remove') {
            model.delete(op.key);
            cm.delete(op.key);
            assert.equal(await cm.get(op.key), undefined);
          } else if (op.kind === 'get') {
            const got = await cm.get(op.key);
            if (got !== undefined) assert.deepEqual(got, model.get(op.key), `get(${op.key}) returned bytes that are not the latest`);
          } else if (op.kind === 'prefix') {
            for (const k of [...model.keys()]) if (k.startsWith(op.prefix)) model.delete(k);
            cm.invalidatePrefix(op.prefix);
          } else if (op.kind === 'range') {
            for (let i = op.first; i < op.end; i++) model.delete(chunkKey(VOLUME, i));
            cm.invalidateChunkRange(VOLUME, op.first, op.end);
          } else {
            tally(cm);
            await cm.close();
            cm = newCache(path, undefined);
            await cm.open();
            recovered += cm.stats().l2!.recoveredEntries;
          }
        }
        tally(cm);
      } finally {
        await cm.close();
        rmSync(path, { force: true });
      }
    }),
    // Random runs wrap the L2 ring only most of the time (the coverage check
    // below failed about 1 run in 20): one fixed run that surely does — every
    // key written with an incompressible 2000-byte value (23 x 2000 bytes >
    // 6 KiB L1 + 16 KiB L2), then read back — comes first.
    { numRuns: 60, examples: [[wrapsL2]] },
  );
  // The property is only worth something if the runs went through every tier.
  assert.ok(l2Hits > 0, 'no run hit L2');
  assert.ok(l2Evictions > 0, 'no run wrapped the L2 ring');
  assert.ok(recovered > 0, 'no run recovered L2 entries after a restart');
});

test('an L3 fetch that races a write is never cached: later reads see the write', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      fc.array(
        fc.oneof(
          fc.record({ kind: fc.constant('get' as const), key: keyArb }),
          fc.record({ kind: fc.constant('write' as const), key: keyArb, value: valueArb }),
          fc.record({ kind: fc.constant('remove' as const), key: keyArb }),
          fc.record({ kind: fc.constant('range' as const), first: fc.integer({ min: 0, max: 15 }), end: fc.integer({ min: 0, max: 16 }) }),
        ),
        { minLength: 1, maxLength: 40, size: 'max' },
      ),
      async (s, ops) => {
        const path = join(dir, `race-${run++}.l2`);
        // The store starts full, so a first read has old bytes to race a write with.
        const data = new Map<string, Buffer>(allKeys.map((k) => [k, Buffer.from(`initial ${k}`)]));
        // L3 answers with the value at call time, delivered whenever the scheduler decides.
        const l3: L3Backend = { get: (key) => s.schedule(Promise.resolve(data.get(key)), `l3 ${key}`) };
        const cm = newCache(path, l3);
        await cm.open();
        try {
          const reads: Promise<unknown>[] = [];
          for (const op of ops) {
            if (op.kind === 'get') reads.push(cm.get(op.key));
            else if (op.kind === 'write') {
              data.set(op.key, op.value);
              cm.put(op.key, op.value);
            } else if (op.kind === 'remove') {
              data.delete(op.key);
              cm.invalidate(op.key);
            } else {
              for (let i = op.first; i < op.end; i++) data.delete(chunkKey(VOLUME, i));
              cm.invalidateChunkRange(VOLUME, op.first, op.end);
            }
          }
          await s.waitAll();
          await Promise.all(reads);
          for (const key of allKeys) {
            const pending = cm.get(key);
            await s.waitAll();
            assert.deepEqual(await pending, data.get(key), `after the race, get(${key})`);
          }
        } finally {
          await cm.close();
          rmSync(path, { force: true });
        }
      },
    ),
    { numRuns: 80 },
  );
});
