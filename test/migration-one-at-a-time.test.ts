// One migration of a volume at a time: a second move of a volume while one
// runs (the API and the control loop, say) is refused with a clear error and
// a 409, and the volume ends where the first move put it; afterwards the next
// move runs normally.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { httpStatusFor } from '../src/control/api.js';
import { MigrationInProgress } from '../src/dataplane/errors.js';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume, migrationRunning } from '../src/dataplane/volumes/migration.js';
import { readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 32;

test('a second migration of a volume while one runs is refused (409); the first completes and the next one runs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-mig-once-'));
  const m = VolumeManager.open(path.join(dir, 'meta'));
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 256 * MiB, labels: { tier: 'hot' } });
  await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 256 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(CHUNKS * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();

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
