// Review (volume grow concurrent with client I/O and a tier move, in
// process): a volume grows while it moves cold -> hot and hot -> cold, with
// writes, WRITE_ZEROES and TRIMs in flight on both sides of the old end and
// into the new range as soon as the grow is acknowledged. Every
// acknowledged byte reads back, after a FLUSH also after a restart, and the
// size persists. Shrinking stays refused. Coverage: passed at 321cf3a.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

for (const to of ['hot', 'cold'] as const) {
  test(`a volume grown while it moves to ${to}, under writes, zeroes and trims across the old end, keeps every acknowledged byte`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-resize-move-'));
    let m = await openColdTierManager(dir);
    t.after(async () => {
      await m.close().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const from = to === 'hot' ? 'cold' : 'hot';
    const oldBytes = 6 * MiB;
    const newBytes = 11 * MiB;
    await m.createVolume({ name: 'v', sizeBytes: oldBytes, tier: from });
    let vol: Volume = m.openVolume('v');
    const model = Buffer.alloc(newBytes);
    crypto.randomFillSync(model, 0, oldBytes);
    await writeVolume(vol, 0, model.subarray(0, oldBytes));
    if (from === 'cold') await m.cold!.destager.drain();
    // Journaled (cold) or file (hot) overwrites on top, unflushed.
    for (let c = 0; c < 6; c += 2) {
      const patch = crypto.randomBytes(100_000);
      patch.copy(model, c * MiB + 5000);
      await writeVolume(vol, c * MiB + 5000, patch);
    }

    const move = migrateVolume(m, 'v', to, { preserve: false });
    const ops: Promise<unknown>[] = [];
    // In flight while the move and the grow run: below the old end.
    const tail = crypto.randomBytes(MiB - 4096);
    tail.copy(model, oldBytes - MiB);
    ops.push(writeVolume(vol, oldBytes - MiB, tail));
    model.fill(0, 2 * MiB, 3 * MiB);
    ops.push(vol.writeZeroes(2 * MiB, MiB, { noHole: false, fua: false, fastZero: false }));
    model.fill(0, 4 * MiB + 4096, 4 * MiB + 12_288);
    ops.push(vol.writeZeroes(4 * MiB + 4096, 8192, { noHole: true, fua: true, fastZero: false }));
    const grown = m.resizeVolume('v', newBytes);
    await grown;
    assert.equal(vol.sizeBytes, newBytes);
    // Into the new range, and across the old end, once the grow is acknowledged
    // (the grow's quiesce point waited for the requests above: `across` lands after `tail`).
    const across = crypto.randomBytes(2 * MiB);
    across.copy(model, oldBytes - MiB);
    ops.push(writeVolume(vol, oldBytes - MiB, across));
    const fresh = crypto.randomBytes(3 * MiB + 512);
    fresh.copy(model, 7 * MiB);
    ops.push(writeVolume(vol, 7 * MiB, fresh));
    await Promise.all(ops);
    // A TRIM of the new last chunk, whole: what it leaves is what reads back (advisory).
    await vol.trim(10 * MiB, MiB, true);
    (await readVolume(vol, 10 * MiB, MiB)).copy(model, 10 * MiB);
    const done = await move;
    assert.equal(done.phase, 'Done', JSON.stringify(done));
    assert.equal(vol.rec.tier, to);
    assert.ok((await readVolume(vol, 0, newBytes)).equals(model), 'bytes after the move and the grow');
    assert.throws(() => vol.grow(oldBytes), /shrinking/);
    await assert.rejects(m.resizeVolume('v', oldBytes), /shrinking|refused/);

    await vol.flush();
    await m.close();
    m = await openColdTierManager(dir, false);
    vol = m.openVolume('v');
    assert.equal(vol.sizeBytes, newBytes, 'the grown size after a restart');
    assert.ok((await readVolume(vol, 0, newBytes)).equals(model), 'flushed bytes after a restart');
  });
}
