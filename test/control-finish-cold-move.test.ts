// The control loop finishes a move to cold that a kill cut mid-COPY: the
// record already says cold (the tier flips before the copy) while chunks are
// still Allocated in the hot file. Heat says cold, where the record is; the
// loop must still move those chunks (plain: into stripes, the file released;
// preserving: into stripes, the kept file untouched), and in dry run only say
// it would. The move runs in a child process (the module
// helpers/cold-move-kill-child) that SIGKILLs itself after 16 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { ControlLoop } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { policyYaml } from './helpers/control-loop.js';
import { COLD_MOVE_KILL_CHUNKS as CHUNKS, COLD_MOVE_KILL_MOVED as MOVED, runColdMoveKillChild } from './helpers/cold-move-kill-child.js';
import { openColdTierManager, readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 2_000;
const SAMPLE_INTERVAL_MS = 1_000;

for (const preserve of [false, true]) {
  test(`a ${preserve ? 'preserving' : 'plain'} move to cold killed mid-COPY: dry run only reports it, then a control-loop pass finishes it; no chunk left in the hot file, the data reads back`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-control-cold-move-'));
    let m: VolumeManager | null = null;
    let loop: ControlLoop | null = null;
    t.after(async () => {
      loop?.stop();
      await m?.close().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const want = crypto.randomBytes(CHUNKS * MiB);
    const file = await runColdMoveKillChild(dir, want, preserve);
    const before = fs.readFileSync(file);

    // The restart as the daemon does it: open, then finish interrupted releases.
    m = await openColdTierManager(dir, false);
    const mgr = m;
    await mgr.finishInterruptedReleases();
    const vol = mgr.openVolume('v');
    const live = Array.from({ length: CHUNKS - MOVED }, (_, i) => MOVED + i);
    assert.equal(vol.rec.tier, 'cold', 'the record as the move wrote it');
    assert.deepEqual(vol.chunksOnFile(), live, 'the chunks the kill left in the hot file');

    const policiesDir = path.join(dir, 'policies');
    fs.mkdirSync(policiesDir);
    const writePolicy = (dryRun: boolean) =>
      fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { ecPolicyRef: mgr.cold!.policy.name, samplingWindow: `${WINDOW_MS / 1000}s`, dryRun }));
    writePolicy(true);
    // Idle, measured over a whole window: 0 IOPS, below the low watermark (cold, where the record is).
    const heat = new HeatTracker(mgr, 60_000, SAMPLE_INTERVAL_MS);
    heat.sample(Date.now() - WINDOW_MS - SAMPLE_INTERVAL_MS);
    loop = new ControlLoop(mgr, { policiesDir, intervalMs: 3_600_000, preservationMode: preserve, heat, ecPolicyNames: () => [mgr.cold!.policy.name] });
    const decision = () => {
      const d = loop!.status()[0]?.decisions.find((x) => x.volume === 'v');
      if (!d) throw new Error(`no decision for v: ${JSON.stringify(loop!.status())}`);
      return d;
    };

    await loop.reconcile();
    await loop.settle();
    assert.equal(decision().action, 'would-migrate', decision().reason);
    assert.equal(decision().targetTier, 'cold');
    assert.match(decision().reason, new RegExp(`already cold, but an interrupted move left ${live.length} chunks in its file: finishing it; dry run`));
    assert.deepEqual(vol.chunksOnFile(), live, 'a dry run moved chunks');
    assert.equal(loop.status()[0]!.migrationHistory.length, 0, 'a dry run started a move');

    writePolicy(false);
    await loop.reconcile();
    await loop.settle();
    assert.equal(decision().action, 'migrate', decision().reason);
    const hist = loop.status()[0]!.migrationHistory.find((h) => h.volume === 'v');
    assert.ok(hist, JSON.stringify(loop.status()[0]));
    assert.equal(hist.result, 'succeeded', hist.error);
    assert.equal(hist.from, 'cold');
    assert.equal(hist.to, 'cold');
    assert.deepEqual(vol.chunksOnFile(), [], 'chunks left in the hot file');
    assert.deepEqual([...vol.stripes.keys()].sort((a, b) => a - b), Array.from({ length: CHUNKS }, (_, c) => c), 'every chunk in stripes');
    assert.deepEqual(vol.rec.keptFilePools, preserve ? ['hot-0'] : []);
    if (preserve) assert.ok(fs.readFileSync(file).equals(before), 'a byte of the kept file changed');
    else assert.equal(fs.existsSync(file) ? fs.statSync(file).size : 0, 0, 'the hot file was not released');
    assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from cold');

    // Finished: the next pass leaves it alone.
    await loop.reconcile();
    await loop.settle();
    assert.equal(decision().action, 'stay', decision().reason);
  });
}
