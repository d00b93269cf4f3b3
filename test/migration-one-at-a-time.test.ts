// One migration of a volume at a time: a second move of a volume while one
// runs (the API and the control loop, say) is refused with a clear error and
// a 409, and the volume ends where the first move put it; afterwards the next
// move runs normally.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { httpStatusFor } from '../src/control/api.js';
import { MigrationInProgress } from '../src/dataplane/errors.js';
import { migrateVolume, migrationRunning } from '../src/dataplane/volumes/migration.js';
import { hotWarmVolume } from './helpers/hot-warm.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 32;

test('a second migration of a volume while one runs is refused (409); the first completes and the next one runs', async (t) => {
  const { m, vol, want } = await hotWarmVolume(t, CHUNKS);

  const first = migrateVolume(m, 'v', 'warm', { preserve: false });
  assert.equal(migrationRunning(m, 'v'), true);
  let refused: unknown;
  await migrateVolume(m, 'v', 'hot', { preserve: false }).catch((err: unknown) => (refused = err));
  assert.ok(refused instanceof MigrationInProgress, `second move: ${String(refused)}`);
  assert.match((refused as Error).message, /a migration of volume v is already running/);
  assert.equal(httpStatusFor(refused), 409);
  const done = await first;
  assert.equal(done.phase, 'Done');
  assert.equal(migrationRunning(m, 'v'), false);
  assert.equal(vol.rec.tier, 'warm');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['warm-0']);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want));

  // A failed move releases the volume too: the next one runs.
  await assert.rejects(migrateVolume(m, 'v', 'warm', { preserve: false }), /already warm/);
  assert.equal(migrationRunning(m, 'v'), false);
  const back = await migrateVolume(m, 'v', 'hot', { preserve: false });
  assert.equal(back.phase, 'Done');
  assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['hot-0']);
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want));
});
