// Review of e85dfec / f7a5748: while a volume's pool is out, its open is
// tried again by every destager tick (once or twice), every metrics scrape
// and API call (Reconstructor.counts opens every volume), every scrub and
// every control-loop pass. Each attempt read the volume's whole chunk map
// before it looked at the pool: ~1.4 ms of event-loop time per 1,000 chunk
// entries (a 1 TiB volume: over a second per attempt), taken from every
// healthy volume's I/O for as long as the outage lasts. An offline
// placement pool must fail the open before that read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { tempDirClosing } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 64;

test('an open whose placement pool is offline fails without reading the chunk map', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rvoff-open-cost-', () => m!);
  const hot1 = path.join(dir, 'hot-1');
  m = VolumeManager.open(path.join(dir, 'meta'));
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  await m.putPool({ name: 'hot-1', path: hot1, tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
  const rec = await m.createVolume({ name: 'a', sizeBytes: CHUNKS * MiB, tier: 'hot', pool: 'hot-1' });
  const mgr0 = m;
  await mgr0.meta.transaction(() => {
    for (let c = 0; c < CHUNKS; c++) mgr0.meta.chunks.put([rec.id, c], { state: ChunkState.Allocated, pool: 'hot-1' });
  });
  // A restart (a not open), then hot-1 drops out.
  await m.close();
  m = VolumeManager.open(path.join(dir, 'meta'));
  const mgr = m;
  fs.renameSync(hot1, `${hot1}.gone`);
  let entriesRead = 0;
  const volumeChunks = mgr.meta.volumeChunks.bind(mgr.meta);
  mgr.meta.volumeChunks = function* (volumeId: number) {
    for (const e of volumeChunks(volumeId)) {
      entriesRead++;
      yield e;
    }
  };

  for (let i = 0; i < 3; i++) assert.throws(() => mgr.openVolume('a'), { name: 'PoolOffline', message: /pool hot-1/ });
  assert.equal(entriesRead, 0, 'the failed opens read no chunk entry');
  assert.deepEqual(mgr.unavailableVolumes().map((u) => `${u.volume}@${u.pool}`), ['a@hot-1']);

  // hot-1 is back: the open reads the map and the volume has its chunks.
  fs.renameSync(`${hot1}.gone`, hot1);
  const vol = mgr.openVolume('a');
  assert.equal(entriesRead, CHUNKS);
  assert.equal(vol.poolsInUse().map((p) => p.name).join(','), 'hot-1');
});
