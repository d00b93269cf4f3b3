// StripeStore.inspectMany (the scrub's batched read): records stored back to
// back are read in runs, yet every shard is still verified on its own. A
// corrupt record costs only that shard, a record whose identity is another
// stripe's is lost, and a pool whose segments are gone loses exactly its shards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Pool } from '../src/dataplane/pools/pool.js';
import { validatePolicy } from '../src/dataplane/ec/policy.js';
import { StripeStore, type StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { SHARD_HEADER_BYTES } from '../src/dataplane/ec/shard-record.js';

const SHARD_BYTES = 16 * 1024;
const STRIPES = 12;

test('inspectMany verifies every shard of a run on its own: one corrupt record, one foreign record and one lost pool cost exactly their shards', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ec-stripe-scan-'));
  const pools = Array.from({ length: 6 }, (_, i) => {
    const dir = path.join(root, `cold-${i}`);
    fs.mkdirSync(dir);
    return new Pool({ name: `cold-${i}`, path: dir, tier: 'cold', capacityBytes: 1 << 30, labels: {} });
  });
  const policy = validatePolicy('scan', { dataShards: 4, parityShards: 2, stripeSizeBytes: 4 * SHARD_BYTES }, 6);
  const store = new StripeStore(() => pools, policy);
  try {
    const owner = randomBytes(16);
    const data = Array.from({ length: STRIPES }, () => randomBytes(4 * SHARD_BYTES));
    const refs: StripeRef[] = [];
    // One at a time: each pool then holds the stripes' records back to back, in order.
    for (let c = 0; c < STRIPES; c++) refs.push(await store.writeStripe(owner, c, 1, data[c]!));

    // Placement rotates, so find which shard of stripe 5 sits on cold-2 and flip a payload byte of it.
    const corruptShard = refs[5]!.shards.findIndex((s) => s.pool === 'cold-2');
    const cs = refs[5]!.shards[corruptShard]!;
    const segFile = (pool: string, segment: number) => path.join(root, pool, 'segments', `seg-${String(segment).padStart(12, '0')}.cseg`);
    const fd = fs.openSync(segFile(cs.pool, cs.segment), 'r+');
    const at = cs.offsetBytes + SHARD_HEADER_BYTES + 100;
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
    // Stripe 7's index entry for its cold-3 shard points at stripe 8's record on cold-3: valid CRC, wrong identity.
    const foreignShard = refs[7]!.shards.findIndex((s) => s.pool === 'cold-3');
    const foreignRecord = refs[8]!.shards.find((t) => t.pool === 'cold-3')!;
    const refs7 = { ...refs[7]!, shards: refs[7]!.shards.map((s, i) => (i === foreignShard ? foreignRecord : s)) };
    // cold-4 lost and replaced by an empty directory.
    fs.rmSync(path.join(root, 'cold-4'), { recursive: true });
    fs.mkdirSync(path.join(root, 'cold-4'));

    const scan = [...refs.slice(0, 7), refs7, ...refs.slice(8)];
    const scratch = Buffer.alloc(StripeStore.scanScratchBytes(refs[0]!, STRIPES));
    const inspected = await store.inspectMany(scan, scratch);
    assert.equal(inspected.length, STRIPES);
    for (let c = 0; c < STRIPES; c++) {
      const lostOn4 = scan[c]!.shards.findIndex((s) => s.pool === 'cold-4');
      const expectBad = [lostOn4];
      if (c === 5) expectBad.push(corruptShard);
      if (c === 7) expectBad.push(foreignShard);
      expectBad.sort((x, y) => x - y);
      assert.deepEqual(inspected[c]!.bad, expectBad, `stripe ${c}`);
      // Good shards are the stripe's bytes (data shards are slices of the source).
      for (let i = 0; i < 4; i++) {
        if (expectBad.includes(i)) continue;
        assert.ok(inspected[c]!.shards[i]!.equals(data[c]!.subarray(i * SHARD_BYTES, (i + 1) * SHARD_BYTES)), `stripe ${c} shard ${i}`);
      }
      // And the per-stripe inspect() agrees with the batched one.
      assert.deepEqual((await store.inspect(scan[c]!)).bad, expectBad, `stripe ${c}, inspect()`);
    }

    // A rebuild from the batched read lands shards that read back as the originals.
    const next = await store.rebuild(refs[5]!, inspected[5]!);
    assert.ok(next !== null);
    assert.deepEqual((await store.inspect(next)).bad, []);
  } finally {
    await store.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
