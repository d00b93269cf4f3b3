// Review of a23b548 (finishing an interrupted move keeps the move's recorded
// mode): keptFilePools records a move's mode only through the files it
// empties, and a move from cold empties stripes, not files. A preserving
// cold -> hot move (`migrate v hot --preserve`, or a loop in preservation
// mode) killed mid-COPY leaves keptFilePools [] and no kept file open, which
// the finish read as "a plain move": a loop in preservation mode then freed
// the old stripes of the chunks it copied, the old copy its own mode (and the
// move's) promised to keep. The move runs in a child process (this file, run
// with REVIEW_FROM_COLD_CHILD_DIR) that SIGKILLs itself after 16 of 24 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlLoop, type HeatSource } from '../src/control/loop.js';
import { HeatTracker } from '../src/control/heat.js';
import { ChunkState } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { HIGH_IOPS, LOW_IOPS, policyYaml } from './helpers/control-loop.js';
import { openColdTierManager, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const CHUNKS = 24;
const MOVED = 16;
const WINDOW_MS = 2_000;

/** The child: v written on hot-0, moved to cold (plain, whole), then to hot preserving, killed after 16 chunks. */
async function child(dir: string): Promise<void> {
  const want = fs.readFileSync(path.join(dir, 'want.bin'));
  const m = await openColdTierManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, want);
  await vol.flush();
  await migrateVolume(m, 'v', 'cold', { preserve: false });
  await migrateVolume(m, 'v', 'hot', {
    preserve: true,
    concurrency: 1,
    onProgress: (p) => {
      if (p.chunksDone < MOVED) return;
      process.stdout.write('review killing mid-copy\n');
      process.kill(process.pid, 'SIGKILL');
    },
  }).catch((err: unknown) => {
    process.stderr.write(`the move ended instead of being killed: ${(err as Error).message}\n`);
    process.exit(3);
  });
  process.exit(4);
}

function runChild(dir: string, want: Buffer): Promise<void> {
  fs.writeFileSync(path.join(dir, 'want.bin'), want);
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url)], { env: { ...process.env, REVIEW_FROM_COLD_CHILD_DIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (b: Buffer) => (out += b.toString()));
    proc.stderr.on('data', (b: Buffer) => (err += b.toString()));
    proc.once('error', reject);
    proc.once('exit', (code, sig) => {
      if (sig === 'SIGKILL' && /^review killing mid-copy$/m.test(out)) resolve();
      else reject(new Error(`child exited (${code ?? sig}) without killing itself mid-copy\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
}

const childDir = process.env.REVIEW_FROM_COLD_CHILD_DIR;
if (childDir !== undefined && process.argv[1] === fileURLToPath(import.meta.url)) await child(childDir);
else {
  test('a preserving cold -> hot move killed mid-COPY, finished by a loop in preservation mode, keeps every old stripe', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-from-cold-'));
    let m: VolumeManager | null = null;
    let loop: ControlLoop | null = null;
    t.after(async () => {
      await loop?.stop();
      await m?.close().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const want = crypto.randomBytes(CHUNKS * MiB);
    await runChild(dir, want);

    m = await openColdTierManager(dir, false);
    const mgr = m;
    await mgr.finishInterruptedReleases();
    const vol = mgr.openVolume('v');
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
}
