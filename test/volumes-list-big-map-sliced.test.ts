// The volume listing and the stripe counts (each /metrics scrape) with a
// big volume whose chunk map cannot be read (damaged), then repaired. A
// sliced open that failed reading the map was not recorded as failed (only
// one-go opens were): nothing named it. The listing was the records alone
// (no error), and the stripe counts opened a volume whose last open failed in
// one go: a map of 1M entries held the event loop for seconds at a scrape.
// The slowest event-loop gap is measured against one synchronous read of the
// same map in this process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { assertNoLongHold, closedBigColdVolume, countWholeMapReads, oneGoReadMs, watchGaps } from './helpers/big-chunk-map.js';

const MiB = 1024 * 1024;
/** Chunk entries of the big cold volume: one go ~0.15-0.4 s here. */
const CHUNKS = 150_000;

test('a volume whose map cannot be read is listed with its error, the others still are; once repaired the listing and the stripe counts try it a slice at a time', async (t) => {
  const { m, id } = await closedBigColdVolume(t, false, CHUNKS);
  await m.createVolume({ name: 'small', sizeBytes: 4 * MiB, tier: 'hot' });
  // Damaged: its last entry names a pool the index does not have (its open fails after reading the whole map).
  const good = m.meta.chunks.get([id, CHUNKS - 1])!;
  await m.meta.chunks.put([id, CHUNKS - 1], { ...good, state: ChunkState.Allocated, pool: 'gone-pool' });
  await assert.rejects(m.borrowVolumeAsync('big'), /gone-pool/);
  assert.match(m.openFailure('big')?.error ?? '', /gone-pool/, 'a sliced open that fails reading the map is recorded as failed');

  const listed = await m.listVolumesWithErrors();
  assert.deepEqual(listed.map((v) => [v.name, v.error !== undefined]), [['big', true], ['small', false]]);
  assert.match(listed[0]!.error!, /gone-pool/);
  assert.equal(listed[0]!.errorPool, 'gone-pool');
  assert.equal(listed[1]!.error, undefined);

  // Repaired: the stripe counts (a /metrics scrape) and the listing try it again, a slice at a time.
  await m.meta.chunks.put([id, CHUNKS - 1], good);
  const oneGoMs = oneGoReadMs(m, id, CHUNKS);
  const wholeMapReads = countWholeMapReads(t, m, id);
  const gaps = watchGaps();
  const before = m.cold!.reconstructor.counts();
  const relisted = await m.listVolumesWithErrors();
  const slowest = gaps.stop();
  assertNoLongHold(t, slowest, oneGoMs, 'stripe counts and listing', wholeMapReads);
  assert.deepEqual(relisted.map((v) => [v.name, v.error]), [['big', undefined], ['small', undefined]]);
  assert.equal(m.openFailure('big'), undefined);
  assert.equal(before.Healthy, 0, 'left out of the counts while its try was under way');
  assert.equal(m.cold!.reconstructor.counts().Healthy, 1, "chunk 0's stripe counted once it opens");
  assert.deepEqual(m.unavailableVolumes(), []);
  assert.ok(!m.isOpen('big'), 'closed again after the tries');
});
