// A move to cold killed between its abort's destages and its hole punch, for
// test/migration-punch-*: this module, run as a child process, writes the
// model (dir/want.bin) to a fresh 24-chunk volume on hot-0, trims chunk 2,
// flushes, and aborts a move to cold after 16 chunks with
// COUCHESTOR_TEST_PAUSE_BEFORE_PUNCH set (migration.ts), where the parent
// SIGKILLs it. The parent may mount anything over dir/hot-0/volumes first.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrateVolume } from '../../src/dataplane/volumes/migration.js';
import { openColdTierManager, writeVolume } from './volume.js';

const MiB = 1024 * 1024;
export const PUNCH_KILL_CHUNKS = 24;
/** Trimmed (Discarded) before the move: its stale bytes are a dead range too. */
export const PUNCH_KILL_TRIMMED = 2;
/** With one copy at a time the abort (at the progress report after 16 chunks) stops after exactly these. */
export const PUNCH_KILL_DESTAGED = Array.from({ length: PUNCH_KILL_CHUNKS }, (_, c) => c).filter((c) => c !== PUNCH_KILL_TRIMMED).slice(0, 16);

async function child(dir: string): Promise<void> {
  const want = fs.readFileSync(path.join(dir, 'want.bin'));
  const m = await openColdTierManager(dir);
  await m.createVolume({ name: 'v', sizeBytes: PUNCH_KILL_CHUNKS * MiB, pool: 'hot-0' });
  const vol = m.openVolume('v');
  await writeVolume(vol, 0, want);
  await vol.trim(PUNCH_KILL_TRIMMED * MiB, MiB, false);
  await vol.flush();
  process.stdout.write(`couchestor flushed ${JSON.stringify({ file: m.pools.get('hot-0')!.volumeFile(vol.rec.id) })}\n`);
  const ac = new AbortController();
  await migrateVolume(m, 'v', 'cold', {
    preserve: false,
    signal: ac.signal,
    concurrency: 1,
    onProgress: (p) => {
      if (p.chunksDone >= 16) ac.abort();
    },
  }).catch((err: unknown) => {
    // The pause never returns: reaching here means the move ended without it.
    process.stderr.write(`the move ended instead of pausing: ${(err as Error).message}\n`);
    process.exit(3);
  });
  process.exit(4);
}

/**
 * Writes random bytes (the volume's before the trim) to dir/want.bin, runs
 * the child over `dir` until it prints the pause line, SIGKILLs it there;
 * resolves with the volume file's path and what the volume must read back
 * (those bytes, the trimmed chunk zeros).
 */
export async function runPunchKillChild(dir: string): Promise<{ file: string; want: Buffer }> {
  const want = crypto.randomBytes(PUNCH_KILL_CHUNKS * MiB);
  fs.writeFileSync(path.join(dir, 'want.bin'), want);
  const file = await killChildBeforePunch(dir);
  want.fill(0, PUNCH_KILL_TRIMMED * MiB, (PUNCH_KILL_TRIMMED + 1) * MiB);
  return { file, want };
}

function killChildBeforePunch(dir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, PUNCH_KILL_CHILD_DIR: dir, COUCHESTOR_TEST_PAUSE_BEFORE_PUNCH: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let file: string | null = null;
    let killed = false;
    proc.stderr.on('data', (b: Buffer) => (err += b.toString()));
    proc.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const f = /^couchestor flushed (.*)$/m.exec(out);
      if (f) file = (JSON.parse(f[1]!) as { file: string }).file;
      if (!killed && /^couchestor paused before-punch \{"volume":"v"\}$/m.test(out)) {
        killed = true;
        proc.kill('SIGKILL');
      }
    });
    proc.once('error', reject);
    proc.once('exit', (code, sig) => {
      if (killed && sig === 'SIGKILL' && file !== null) resolve(file);
      else reject(new Error(`child exited (${code ?? sig}) without pausing before the punch\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
}

const childDir = process.env.PUNCH_KILL_CHILD_DIR;
if (childDir !== undefined && process.argv[1] === fileURLToPath(import.meta.url)) await child(childDir);
