// A move killed mid-COPY, for test/control-finish-cold-move, its review,
// test/control-finish-warm-move-mode and review-control-finish-from-cold-mode:
// this module, run as a child process, writes the model (dir/want.bin) to a
// fresh 24-chunk volume on hot-0, flushes, and moves it to cold, to warm (pool
// warm-0, added first), or back to hot (after a plain, whole move to cold),
// plain or preserving (dir/move: {"to", "preserve"}), one chunk at a time,
// SIGKILLing itself at the progress report after 16 chunks: the record names
// the target tier (the tier flips before the copy) while the last 8 chunks
// are still where they were. Also the restart those tests share.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import type { Volume } from '../../src/dataplane/volumes/volume.js';
import { migrateVolume } from '../../src/dataplane/volumes/migration.js';
import { openColdTierManager, writeVolume } from './volume.js';

const MiB = 1024 * 1024;
export const COLD_MOVE_KILL_CHUNKS = 24;
/** The move reports progress every 16 chunks: with one copy at a time the kill comes after exactly 16. */
export const COLD_MOVE_KILL_MOVED = 16;

/** 'hot': from cold, the volume moved to cold (plain, whole) first. */
export type KilledMoveTarget = 'cold' | 'warm' | 'hot';

async function child(dir: string): Promise<void> {
  const { to, preserve } = JSON.parse(fs.readFileSync(path.join(dir, 'move'), 'utf8')) as { to: KilledMoveTarget; preserve: boolean };
  const want = fs.readFileSync(path.join(dir, 'want.bin'));
  const m = await openColdTierManager(dir);
  if (to === 'warm') await m.putPool({ name: 'warm-0', path: path.join(dir, 'warm-0'), tier: 'warm', capacityBytes: 1024 * MiB, labels: { tier: 'warm' } });
  await m.createVolume({ name: 'v', sizeBytes: COLD_MOVE_KILL_CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, want);
  await vol.flush();
  process.stdout.write(`couchestor flushed ${JSON.stringify({ file: m.pools.get('hot-0')!.volumeFile(vol.rec.id) })}\n`);
  if (to === 'hot') await migrateVolume(m, 'v', 'cold', { preserve: false });
  await migrateVolume(m, 'v', to, {
    preserve,
    concurrency: 1,
    onProgress: (p) => {
      if (p.chunksDone < COLD_MOVE_KILL_MOVED) return;
      // Synchronous, from the copy loop: the 16th chunk's copy has ended, the 17th not started.
      process.stdout.write('couchestor killing mid-copy\n');
      process.kill(process.pid, 'SIGKILL');
    },
  }).catch((err: unknown) => {
    process.stderr.write(`the move ended instead of being killed: ${(err as Error).message}\n`);
    process.exit(3);
  });
  process.exit(4);
}

/** Runs the child over `dir` until it kills itself mid-COPY of a move to `to`; resolves with the hot file's path. */
export function runColdMoveKillChild(dir: string, want: Buffer, preserve: boolean, to: KilledMoveTarget = 'cold'): Promise<string> {
  fs.writeFileSync(path.join(dir, 'want.bin'), want);
  fs.writeFileSync(path.join(dir, 'move'), JSON.stringify({ to, preserve }));
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, COLD_MOVE_KILL_CHILD_DIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stdout.on('data', (b: Buffer) => (out += b.toString()));
    proc.stderr.on('data', (b: Buffer) => (err += b.toString()));
    proc.once('error', reject);
    proc.once('exit', (code, sig) => {
      const f = /^couchestor flushed (.*)$/m.exec(out);
      if (sig === 'SIGKILL' && /^couchestor killing mid-copy$/m.test(out) && f) resolve((JSON.parse(f[1]!) as { file: string }).file);
      else reject(new Error(`child exited (${code ?? sig}) without killing itself mid-copy\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
}

/**
 * A killed-move test's setup: a temp dir named `prefix`..., the child run
 * over it (runColdMoveKillChild), then the restart as the daemon does it
 * (the manager opened, interrupted releases finished) with v open. When `t`
 * ends: the loop `loop()` returns (if any) is stopped, the manager closed (a
 * close that fails is ignored) and the dir removed.
 */
export async function restartAfterKilledMove(
  t: TestContext,
  prefix: string,
  want: Buffer,
  preserve: boolean,
  to: KilledMoveTarget,
  loop: () => { stop(): Promise<void> } | null,
): Promise<{ dir: string; hotFile: string; m: VolumeManager; vol: Volume }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  let m: VolumeManager | null = null;
  t.after(async () => {
    await loop()?.stop();
    await m?.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const hotFile = await runColdMoveKillChild(dir, want, preserve, to);
  m = await openColdTierManager(dir, false);
  await m.finishInterruptedReleases();
  return { dir, hotFile, m, vol: m.openVolume('v') };
}

const childDir = process.env.COLD_MOVE_KILL_CHILD_DIR;
if (childDir !== undefined && process.argv[1] === fileURLToPath(import.meta.url)) await child(childDir);
