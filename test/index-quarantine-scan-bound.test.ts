// quarantineDamagedRecords collects damaged keys KEYS_PER_SCAN (1024) at a
// time: with more damaged records than that, interleaved with good ones, a
// run moves every damaged one (raw bytes kept) and leaves every good one.
// Real LMDB in a temp dir, no daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { QUARANTINE_DB, quarantineDamagedRecords, type QuarantinedRecord } from '../src/dataplane/objects/quarantine.js';
import { objectKey, putColdBucket9, tempMeta } from './helpers/damaged-record.js';

test('a quarantine run past one scan of damaged keys moves every damaged record and no good one', async (t) => {
  const meta = tempMeta(t, 'quarantine-scan-');
  await putColdBucket9(meta);
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const DAMAGED = 1500;
  await meta.transaction(() => {
    for (let i = 0; i < DAMAGED; i++) {
      const n = String(i).padStart(5, '0');
      void objects.put(objectKey(9, `bad-${n}`), { key: `bad-${n}`, segments: 'garbage' });
      void objects.put(objectKey(9, `bad-${n}-ok`), { key: `bad-${n}-ok`, segments: [] });
    }
  });
  await meta.durable();
  const names: string[] = [];
  const moved = await quarantineDamagedRecords(meta, (q) => names.push(q.record));
  assert.equal(moved, DAMAGED);
  assert.equal(new Set(names).size, DAMAGED);
  assert.equal(names[0], 'bkt/bad-00000');
  const left = [...objects.getRange({ start: Buffer.from([1]) })].map((e) => (e.value as { key: string }).key);
  assert.equal(left.length, DAMAGED);
  assert.ok(left.every((k) => k.endsWith('-ok')));
  const held = [...meta.openDB<QuarantinedRecord, string>(QUARANTINE_DB).getRange()].map((e) => e.value);
  assert.equal(held.length, DAMAGED);
  assert.match(held[0]!.problem, /segments is "garbage", not a list/);
  // A second run finds nothing.
  assert.equal(await quarantineDamagedRecords(meta), 0);
});
