// Proves the L1 policy's own key -> slot index (open addressing, backward-shift deletion):
// lookups, updates, deletes and evictions stay exact under churn, also when many keys share
// one hash (keys that differ only before their last 16 code units hash alike) and while the
// index doubles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { hashKey } from '../src/dataplane/cache/frequency-sketch.js';
import { S3Lfu } from '../src/dataplane/cache/s3-lfu.js';

// 40 keys of one length whose last 16 code units are equal: one hash for all of them.
const SUFFIX = '/same-tail-16cu!';
const colliding = Array.from({ length: 40 }, (_, i) => `c${String(i).padStart(3, '0')}${SUFFIX}`);
// 200 ordinary keys.
const ordinary = Array.from({ length: 200 }, (_, i) => `vol/v${i % 7}/${i}`);
const allKeys = [...colliding, ...ordinary];

test('keys that differ only before their last 16 code units share one hash (the index must compare keys)', () => {
  const h = hashKey(colliding[0]!);
  for (const k of colliding) assert.equal(hashKey(k), h);
  assert.notEqual(hashKey(ordinary[0]!), hashKey(ordinary[1]!));
});

type Op = { kind: 'get' | 'set' | 'delete'; key: number; value: number };

test('the slot index agrees with a model of what the policy holds, under churn, collisions and growth', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 120 }),
      fc.array(
        fc.record({
          kind: fc.constantFrom<Op['kind']>('get', 'set', 'set', 'delete'),
          key: fc.integer({ min: 0, max: allKeys.length - 1 }),
          value: fc.integer({ min: 0, max: 1_000_000 }),
        }),
        { minLength: 1, maxLength: 600 },
      ),
      (capacity, ops) => {
        // Evictions are the model's only unknown: the listener reports them.
        const model = new Map<string, number>();
        const policy = new S3Lfu<string, number>({
          maximumWeight: capacity,
          expectedEntries: 8,
          onEvict: (key, value) => {
            assert.equal(model.get(key), value, `evicted ${key} with a value it did not hold`);
            model.delete(key);
          },
        });
        for (const op of ops) {
          const key = allKeys[op.key]!;
          if (op.kind === 'get') {
            assert.equal(policy.get(key), model.get(key), `get ${key}`);
          } else if (op.kind === 'set') {
            model.set(key, op.value);
            assert.equal(policy.set(key, op.value, 1), true);
          } else {
            assert.equal(policy.delete(key), model.get(key), `delete ${key}`);
            model.delete(key);
          }
          assert.equal(policy.size, model.size);
          assert.ok(policy.weightedSize <= capacity);
        }
        // Every key, present or not, is found exactly as the model says.
        for (const key of allKeys) assert.equal(policy.peek(key), model.get(key), `peek ${key}`);
        assert.deepEqual([...policy.keys()].sort(), [...model.keys()].sort());
      },
    ),
    { numRuns: 300 },
  );
});

test('the index survives a long churn with every key of one hash (probe runs across the wrap-around)', () => {
  // 40 colliding keys, cache of 25: every insert evicts, every probe walks the one run.
  const model = new Map<string, number>();
  const policy = new S3Lfu<string, number>({
    maximumWeight: 25,
    expectedEntries: 25,
    onEvict: (key) => model.delete(key),
  });
  let x = 12345;
  for (let i = 0; i < 20_000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const key = colliding[x % colliding.length]!;
    if (policy.get(key) === undefined) {
      assert.equal(model.has(key), false);
      policy.set(key, i, 1, false);
      model.set(key, i);
    } else {
      assert.equal(model.has(key), true);
    }
    if (i % 97 === 0) {
      const victim = colliding[(x >>> 8) % colliding.length]!;
      assert.equal(policy.delete(victim), model.get(victim));
      model.delete(victim);
    }
  }
  assert.equal(policy.size, model.size);
  for (const key of colliding) assert.equal(policy.peek(key), model.get(key));
});
