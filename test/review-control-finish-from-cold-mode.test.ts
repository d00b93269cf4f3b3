// Review of a23b548 (finishing an interrupted move keeps the move's recorded
// mode): keptFilePools records a move's mode only through the files it
// empties, and a move from cold empties stripes, not files. A preserving
// cold -> hot move (`migrate v hot --preserve`, or a loop in preservation
// mode) killed mid-COPY leaves keptFilePools [] and no kept file open, which
// the finish read as "a plain move": a loop in preservation mode then freed
// the old stripes of the chunks it copied, the old copy its own mode (and the
// move's) promised to keep. The move runs in a child process
// (helpers/cold-move-kill-child, to hot) that SIGKILLs itself after 16 of 24 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ControlLoop, type HeatSource } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { HIGH_IOPS, LOW_IOPS, policyYaml } from './helpers/control-loop.js';
import { COLD_MOVE_KILL_CHUNKS as CHUNKS, COLD_MOVE_KILL_MOVED as MOVED, restartAfterKilledMove } from './helpers/cold-move-kill-child.js';
import { readVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const WINDOW_MS = 2_000;

test('a preserving cold -> hot move killed mid-COPY, finished by a loop in preservation mode, keeps every old stripe', async (t) => {
  let loop: ControlLoop | null = null;
  const want = crypto.randomBytes(CHUNKS * MiB);
  const { dir, m: mgr, vol } = await restartAfterKilledMove(t, 'couchestor-review-from-cold-', want, true, 'hot', () => loop);
  const entries = () => [...mgr.meta.volumeChunks(vol.rec.id)].map((e) => e.entry);
  assert.equal(vol.rec.tier, 'hot');
  assert.deepEqual(vol.rec.keptFilePools, [], 'a move from cold keeps no file: the list says nothing of its mode');
  assert.equal(entries().filter((e) => e.state === ChunkState.Cold).length, CHUNKS - MOVED, 'chunks left on stripes by the kill');
  assert.equal(entries().filter((e) => e.preserved !== undefined).length, MOVED, 'old stripes the preserving move kept before the kill');

  const policiesDir = path.join(dir, 'policies');
  fs.mkdirSync(policiesDir);
  fs.writeFileSync(path.join(policiesDir, 'p.yaml'), policyYaml('p', { ecPolicyRef: mgr.cold!.policy.name, samplingWindow: `${WINDOW_MS / 1000}s`, dryRun: false }));
  // Hot over exactly the window (read as of the reading's own last sample).
  const tracker = new HeatTracker(mgr, 60_000, 100);
  const readAtMs = Date.now();
  tracker.sample(readAtMs - WINDOW_MS - 1);
  for (let i = 0; i < Math.ceil((HIGH_IOPS * 2 * WINDOW_MS) / 1000); i++) await readVolume(vol, crypto.randomInt(0, (CHUNKS * MiB) / 4096) * 4096, 4096);
  tracker.sample(readAtMs);
  const heat: HeatSource = { refresh: async () => undefined, read: (volume, windowMs) => tracker.read(volume, windowMs, readAtMs) };
  assert.ok(LOW_IOPS < HIGH_IOPS);
  loop = new ControlLoop(mgr, { policiesDir, intervalMs: 3_600_000, preservationMode: true, heat, ecPolicyNames: () => [mgr.cold!.policy.name] });
  await loop.reconcile();
  await loop.settle();
  const d = loop.status()[0]!.decisions.find((x) => x.volume === 'v');
  assert.equal(d?.action, 'migrate', JSON.stringify(d));
  assert.match(d.reason, /already hot, but an interrupted move left chunks on other pools: finishing it/);
  const hist = loop.status()[0]!.migrationHistory.find((h) => h.volume === 'v');
  assert.equal(hist?.result, 'succeeded', JSON.stringify(hist));
  assert.deepEqual(vol.chunksOffFile(), [], 'chunks left off hot-0');
  assert.ok((await readVolume(vol, 0, CHUNKS * MiB)).equals(want), 'the volume reads back from hot');
  // Both the move and the loop preserve: every chunk's old stripe is still referenced.
  assert.equal(entries().filter((e) => e.preserved !== undefined).length, CHUNKS, 'the finish freed old stripes that preservation mode keeps');
});
