// The kept heat samples of volumes deleted while the daemon was down go from
// the index a bounded number per write (GONE_REMOVALS_PER_WRITE), not all in
// the first write after the start: that write runs on the event loop inside
// the index's write transaction, and removing 10,000 deleted busy volumes'
// samples (1.28 M) at once held every NBD and S3 request for 2.6 s. The live
// volume's samples are untouched and read as before. Real VolumeManager; the
// deleted volumes' samples are put in the index as a daemon kept them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { GONE_REMOVALS_PER_WRITE, HEAT_SAMPLES_DB, MAX_PERSISTED_SAMPLES_PER_VOLUME, HeatTracker } from '../src/control/heat.js';
import { tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('samples of volumes deleted while down go a bounded number per write, all of them within a few writes', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'heat-gone-bounded-', () => m ?? { close: async () => undefined });
  m = VolumeManager.open(path.join(dir, 'meta'));
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  const live = await m.createVolume({ name: 'v', sizeBytes: MiB });
  const t0 = Date.now() - 3_600_000;
  const heat = new HeatTracker(m, 3_600_000, 1_000);
  heat.sample(t0);
  await heat.persist(t0);
  // 1.5 writes' worth of deleted volumes' samples, each a full volume's (ids above any volume's).
  const deleted = Math.ceil((1.5 * GONE_REMOVALS_PER_WRITE) / MAX_PERSISTED_SAMPLES_PER_VOLUME);
  const db = m.meta.openDB<[number, number], [number, number]>(HEAT_SAMPLES_DB);
  await m.meta.transaction(() => {
    for (let id = 1_000; id < 1_000 + deleted; id++) for (let k = 0; k < MAX_PERSISTED_SAMPLES_PER_VOLUME; k++) db.put([id, t0 + k * 1_000], [k, 0]);
  });
  const total = deleted * MAX_PERSISTED_SAMPLES_PER_VOLUME;
  const gone = () => db.getKeysCount({ start: [1_000, 0], end: [1_000 + deleted, 0] });
  assert.equal(gone(), total);
  const liveKeys = () => [...db.getKeys({ start: [live.id, 0], end: [live.id + 1, 0] })];
  const before = liveKeys();
  await m.close();

  m = VolumeManager.open(path.join(dir, 'meta'));
  const after = new HeatTracker(m, 3_600_000, 1_000);
  after.sample(t0 + 60_000);
  const db2 = m.meta.openDB<[number, number], [number, number]>(HEAT_SAMPLES_DB);
  const left = () => db2.getKeysCount({ start: [1_000, 0], end: [1_000 + deleted, 0] });
  await after.persist(t0 + 60_000);
  const removed = total - left();
  assert.ok(removed > 0 && removed <= GONE_REMOVALS_PER_WRITE, `the first write removed ${removed} of ${total} (bound ${GONE_REMOVALS_PER_WRITE})`);
  await after.persist(t0 + 90_000);
  assert.equal(left(), 0, 'the second write removed the rest');
  assert.deepEqual([...db2.getKeys({ start: [live.id, 0], end: [live.id + 1, 0] })], before, "the live volume's samples are untouched");
  assert.equal(after.read('v', 60_000, t0 + 60_000).iops, 0);
});
