// Space accounting of a volume stripe's rebuild that loses to an overwrite:
// the rebuilt shard record landed (durable, at a fresh place), then the chunk
// was rewritten and destaged before the flip, so Volume.replaceStripe finds
// its in-memory chunk map moved on and flips nothing. That record is never
// referenced and must be counted dead (once) for segment compaction; the
// chunk's current stripe must not be. In process, with the real stripe
// store, segment files, LMDB index and Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ShardRef, StripeRef } from '../src/dataplane/ec/stripe-store.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';
import { patternBytes } from './helpers/cold.js';
import { damageShardInPlace } from './helpers/rebuild.js';

const MiB = 1024 * 1024;
const at = (s: ShardRef) => `${s.pool}/${s.segment}/${s.offsetBytes}`;

test('a volume stripe rebuilt while its chunk is overwritten: the unflipped rebuilt record is counted dead once, the live stripe never', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-replace-superseded-'));
  const m = await openColdTierManager(dir);
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const cold = m.cold!;
  await m.createVolume({ name: 'v', sizeBytes: 2 * MiB });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, patternBytes(2 * MiB, 1));
  await vol.flush();
  await migrateVolume(m, 'v', 'cold', { preserve: false });
  const stale = vol.stripes.get(0)!;
  assert.ok(stale, 'chunk 0 is on a stripe');

  // Damage chunk 0's shard on cold-2 in place: the rebuild writes a new record for it (appended: another place).
  const bad = stale.shards.find((s) => s.pool === 'cold-2')!;
  damageShardInPlace(path.join(dir, 'cold-2'), bad);

  const dead: string[] = [];
  cold.stripes.onShardsDead = (shards) => dead.push(...shards.map(at));
  const overwrite = patternBytes(MiB, 2);
  let rebuilt: StripeRef | null = null;
  const land = cold.stripes.landRebuild.bind(cold.stripes);
  cold.stripes.landRebuild = async (ref, prepared) => {
    const next = await land(ref, prepared);
    if (ref.ownerId === stale.ownerId && ref.chunkIndex === 0 && rebuilt === null) {
      rebuilt = next;
      // The overwrite wins the race to the index: journaled, then destaged into a new stripe generation.
      await writeVolume(vol, 0, overwrite);
      await vol.flush();
      assert.equal(await vol.destageChunk(0), true, 'the overwrite destaged');
    }
    return next;
  };
  cold.reconstructor.enqueue({ volumeId: vol.rec.id, chunkIndex: 0 }, 'test: damaged shard on cold-2');
  await cold.reconstructor.process();
  cold.stripes.landRebuild = land;

  assert.ok(rebuilt !== null, 'the overwrite ran between landing and flip');
  const orphan = (rebuilt as StripeRef).shards.find((s) => s.pool === 'cold-2')!;
  assert.notEqual(at(orphan), at(bad), 'the rebuilt record is at a fresh place');
  const live = vol.stripes.get(0)!;
  assert.ok(live !== stale && live !== rebuilt && live.generation > stale.generation, 'the chunk is on the overwrite\'s stripe');
  // The rebuilt record, never referenced: dead exactly once.
  assert.equal(dead.filter((p) => p === at(orphan)).length, 1, `rebuilt record counted dead once; dead places: ${JSON.stringify(dead)}`);
  // The stale stripe's places: once each (the overwrite's free of the old stripe).
  for (const s of stale.shards) assert.equal(dead.filter((p) => p === at(s)).length, 1, `stale place ${at(s)}: ${JSON.stringify(dead)}`);
  // Nothing the index points at is counted dead.
  for (const s of live.shards) assert.ok(!dead.includes(at(s)), `live place ${at(s)} counted dead: ${JSON.stringify(dead)}`);
  assert.ok((await readVolume(vol, 0, MiB)).equals(overwrite), 'chunk 0 reads the overwrite');
  assert.ok((await readVolume(vol, MiB, MiB)).equals(patternBytes(2 * MiB, 1).subarray(MiB)), 'chunk 1 unchanged');
});
