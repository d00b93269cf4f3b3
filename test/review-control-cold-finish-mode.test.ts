// Review of 56f1fb8: the control loop finishing a move to cold a kill cut
// mid-COPY keeps the interrupted move's own preservation mode (recorded in
// keptFilePools by its tier switch), not the loop's. A preserving move (say
// `couchestor migrate v cold --preserve` beside a loop without --preserve)
// asked for the hot file to be kept: the finish must not truncate it. A plain
// one's destaged ranges were punched at the restart: the finish must not keep
// that file, holes and all, as a "preserved copy" because the loop preserves.
// The move runs in a child process (helpers/cold-move-kill-child)
// that SIGKILLs itself after 16 of 24 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ControlLoop } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { policyYaml } from './helpers/control-loop.js';
import { COLD_MOVE_KILL_CHUNKS as CHUNKS, COLD_MOVE_KILL_MOVED as MOVED, restartAfterKilledMove } from './helpers/cold-move-kill-child.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 2_000;
const SAMPLE_INTERVAL_MS = 1_000;

for (const movePreserved of [true, false]) {
  const loopPreserves = !movePreserved;
  test(`a ${movePreserved ? 'preserving' : 'plain'} move to cold killed mid-COPY, finished by a loop ${loopPreserves ? 'in' : 'without'} preservation mode, keeps the move's own mode`, async (t) => {
    let loop: ControlLoop | null = null;
    const want = crypto.randomBytes(CHUNKS * MiB);
    // The restart as the daemon does it: open, then finish interrupted releases (a plain move's punch).
    const { dir, hotFile: file, m: mgr, vol } = await restartAfterKilledMove(t, 'couchestor-review-cold-finish-', want, movePreserved, 'cold', () => loop);
    assert.equal(vol.rec.tier, 'cold');
    assert.equal(vol.chunksOnFile().length, CHUNKS - MOVED);
    assert.deepEqual(vol.rec.keptFilePools, movePreserved ? ['hot-0'] : [], 'the mode the move recorded');
    const before = fs.readFileSync(file);
    // A preserving move's file is whole; a plain one's destaged chunks were punched at the restart.
    assert.equal(before.subarray(0, MOVED * MiB).equals(want.subarray(0, MOVED * MiB)), movePreserved);

    const policiesDir = path.join(dir, 'policies');
    fs.mkdirSync(policiesDir);
    fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { ecPolicyRef: mgr.cold!.policy.name, samplingWindow: `${WINDOW_MS / 1000}s`, dryRun: false }));
    const heat = new HeatTracker(mgr, 60_000, SAMPLE_INTERVAL_MS);
    heat.sample(Date.now() - WINDOW_MS - SAMPLE_INTERVAL_MS);
    loop = new ControlLoop(mgr, { policiesDir, intervalMs: 3_600_000, preservationMode: loopPreserves, heat, ecPolicyNames: () => [mgr.cold!.policy.name] });
    await loop.reconcile();
    await loop.settle();
    const hist = loop.status()[0]!.migrationHistory.find((h) => h.volume === 'v');
    assert.ok(hist, JSON.stringify(loop.status()[0]));
    assert.equal(hist.result, 'succeeded', hist.error);
    assert.deepEqual(vol.chunksOnFile(), [], 'chunks left in the hot file');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from cold');

    if (movePreserved) {
      assert.deepEqual(vol.rec.keptFilePools, ['hot-0'], 'the file the preserving move kept is no longer kept');
      assert.ok(fs.existsSync(file) && fs.readFileSync(file).equals(want), 'the kept file was truncated or changed');
    } else {
      assert.deepEqual(vol.rec.keptFilePools, [], 'a file with 16 punched chunks is kept as a preserved copy');
      assert.equal(fs.existsSync(file) ? fs.statSync(file).size : 0, 0, 'the plain move\'s file was not released');
    }
  });
}
