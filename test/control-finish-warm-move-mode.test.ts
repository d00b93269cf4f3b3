// The control loop finishing a hot -> warm move a kill cut mid-COPY keeps the
// interrupted move's own preservation mode (recorded in keptFilePools by its
// tier switch, before the first chunk was copied), not the loop's: a
// preserving move (`migrate v warm --preserve` beside a loop without
// --preserve) asked for the hot file to be kept, so the finish must not delete
// it; a plain one's finish by a preserving loop must not keep it. The move
// runs in a child process (helpers/cold-move-kill-child, to warm) that
// SIGKILLs itself after 16 of 24 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ControlLoop, type HeatSource } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { HIGH_IOPS, LOW_IOPS, policyYaml } from './helpers/control-loop.js';
import { COLD_MOVE_KILL_CHUNKS as CHUNKS, restartAfterKilledMove } from './helpers/cold-move-kill-child.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 2_000;
const SAMPLE_INTERVAL_MS = 100;

for (const movePreserved of [true, false]) {
  const loopPreserves = !movePreserved;
  test(`a ${movePreserved ? 'preserving' : 'plain'} hot -> warm move killed mid-COPY, finished by a loop ${loopPreserves ? 'in' : 'without'} preservation mode, keeps the move's own mode`, async (t) => {
    let loop: ControlLoop | null = null;
    const want = crypto.randomBytes(CHUNKS * MiB);
    // The restart as the daemon does it: open, then finish interrupted releases (nothing to do here).
    const { dir, hotFile, m: mgr, vol } = await restartAfterKilledMove(t, 'couchestor-finish-warm-mode-', want, movePreserved, 'warm', () => loop);
    assert.equal(vol.rec.tier, 'warm');
    assert.equal(vol.rec.poolName, 'warm-0');
    const left = vol.chunksOffFile().length;
    assert.ok(left > 0 && left < CHUNKS, `the kill left ${left} of ${CHUNKS} chunks on hot-0`);
    assert.deepEqual(vol.rec.keptFilePools, movePreserved ? ['hot-0'] : [], 'the mode the move recorded');
    assert.ok(fs.readFileSync(hotFile).equals(want), 'the hot file changed before the finish');

    const policiesDir = path.join(dir, 'policies');
    fs.mkdirSync(policiesDir);
    fs.writeFileSync(
      path.join(policiesDir, 'p.yaml'),
      policyYaml('p', { ecPolicyRef: mgr.cold!.policy.name, warmPoolSelector: { matchLabels: { tier: 'warm' } }, samplingWindow: `${WINDOW_MS / 1000}s`, dryRun: false }),
    );
    // Heat between the watermarks over the window: warm, where the record already is.
    const tracker = new HeatTracker(mgr, 60_000, SAMPLE_INTERVAL_MS);
    tracker.sample(Date.now() - WINDOW_MS - 1);
    for (let i = 0; i < Math.ceil((((LOW_IOPS + HIGH_IOPS) / 2) * WINDOW_MS) / 1000); i++) await readVolume(vol, crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, 4096);
    tracker.sample();
    const heat: HeatSource = { refresh: () => tracker.refresh(), read: (volume, windowMs) => tracker.read(volume, windowMs) };
    loop = new ControlLoop(mgr, { policiesDir, intervalMs: 3_600_000, preservationMode: loopPreserves, heat, ecPolicyNames: () => [mgr.cold!.policy.name] });
    await loop.reconcile();
    await loop.settle();
    const d = loop.status()[0]!.decisions.find((x) => x.volume === 'v');
    assert.equal(d?.action, 'migrate', JSON.stringify(d));
    assert.match(d.reason, /already warm, but an interrupted move left chunks on other pools: finishing it/);
    const hist = loop.status()[0]!.migrationHistory.find((h) => h.volume === 'v');
    assert.ok(hist, JSON.stringify(loop.status()[0]));
    assert.equal(hist.result, 'succeeded', hist.error);
    assert.deepEqual(vol.chunksOffFile(), [], 'chunks left on hot-0');
    assert.deepEqual(vol.poolsInUse().map((p) => p.name), ['warm-0']);
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from warm');

    if (movePreserved) {
      assert.deepEqual(vol.rec.keptFilePools, ['hot-0'], 'the file the preserving move kept is no longer kept');
      assert.ok(fs.existsSync(hotFile), 'the kept hot file was deleted');
      assert.ok(fs.readFileSync(hotFile).equals(want), 'the kept hot file changed');
    } else {
      assert.deepEqual(vol.rec.keptFilePools, [], 'the plain move\'s hot file is kept as a preserved copy');
      assert.equal(fs.existsSync(hotFile), false, 'the plain move\'s hot file was not released');
    }
  });
}
