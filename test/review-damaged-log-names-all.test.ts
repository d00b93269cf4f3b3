// Review of 1a1b25a: count() names each damaged S3 index record in the log
// once per process, at most MAX_DAMAGED_NAMED (16) a line, one line a count.
// With more than 16 found at once, the ones past the 16th were marked as
// logged without ever being named (the line said only notNamed: 4), so no
// later count named them either: the log never said which they were. Now
// each later count names the next ones, and each record exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ColdObjectHolders } from '../src/dataplane/objects/cold-holders.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { objectKey, putColdBucket9, tempMeta } from './helpers/damaged-record.js';
import { stderrLines } from './helpers/stderr.js';

const DAMAGED = 20;

test('more damaged records than one log line names: later counts name the rest, each record once', async (t) => {
  const meta = tempMeta(t, 'couchestor-review-damaged-log-');
  await putColdBucket9(meta);
  const objects = meta.openDB<unknown, Buffer>(OBJECTS_DB);
  const names = Array.from({ length: DAMAGED }, (_, i) => `bad-${String(i).padStart(2, '0')}`);
  for (const [i, key] of names.entries()) await objects.put(objectKey(9, key), { key, versionId: i, segments: 7 });
  const holders = new ColdObjectHolders(meta, { releaseReplaced: () => undefined });

  const named = new Map<string, number>();
  for (let scan = 0; scan < 3; scan++) {
    const { lines } = await stderrLines(async () => holders.count());
    const found = lines.filter((l) => l.includes('damaged S3 index records'));
    assert.ok(found.length <= 1, `one line per count at most: ${found.join('\n')}`);
    for (const line of found) for (const m of line.matchAll(/bkt\/(bad-\d\d): segments is 7/g)) named.set(m[1]!, (named.get(m[1]!) ?? 0) + 1);
  }
  assert.deepEqual(holders.damaged(), { objects: DAMAGED, parts: 0 });
  assert.deepEqual([...named.keys()].sort(), names, 'every damaged record named');
  for (const [key, n] of named) assert.equal(n, 1, `${key} named once`);
});
