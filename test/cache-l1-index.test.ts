// Proves the L1 policy's own key -> slot index (open addressing, backward-shift deletion):
// lookups, updates, deletes and evictions stay exact under churn, also when many keys share
// one home position or one full hash, and while the index doubles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { hashKey } from '../src/dataplane/cache/frequency-sketch.js';
import { S3Lfu } from '../src/dataplane/cache/s3-lfu.js';

// 40 keys whose hashes share their low 6 bits: one home position in an index of 64 positions
// (the index's size while it holds at most 32 entries), so they form one long probe run.
const colliding: string[] = [];
for (let i = 0; colliding.length < 40; i++) if ((hashKey(`k/${i}`) & 63) === 0) colliding.push(`k/${i}`);
// Two keys with one full 32-bit hash (a birthday search), so the index must compare keys.
const sameHash: string[] = (() => {
  const seen = new Map<number, string>();
  for (let i = 0; i < 1_000_000; i++) {
    const k = `h/${i}`;
    const other = seen.get(hashKey(k));
    if (other !== undefined) return [other, k];
    seen.set(hashKey(k), k);
  }
  return [];
})();
// 200 ordinary keys.
const ordinary = Array.from({ length: 200 }, (_, i) => `vol/v${i % 7}/${i}`);
const allKeys = [...colliding, ...sameHash, ...ordinary];

test('the key sets below collide as intended (one home position; one full hash)', () => {
  for (const k of colliding) assert.equal(hashKey(k) & 63, 0);
  assert.equal(sameHash.length, 2);
  assert.notEqual(sameHash[0], sameHash[1]);
  assert.equal(hashKey(sameHash[0]!), hashKey(sameHash[1]!));
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

test('the index survives a long churn of keys that share one home position, and of two keys of one hash', () => {
  // 40 keys of one home position plus the same-hash pair, cache of 25: inserts evict, probes walk one run.
  const model = new Map<string, number>();
  const policy = new S3Lfu<string, number>({
    maximumWeight: 25,
    expectedEntries: 25,
    onEvict: (key) => model.delete(key),
  });
  let x = 12345;
  for (let i = 0; i < 20_000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const pick = x % (colliding.length + 2);
    const key = pick < colliding.length ? colliding[pick]! : sameHash[pick - colliding.length]!;
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
  for (const key of [...colliding, ...sameHash]) assert.equal(policy.peek(key), model.get(key));
});
