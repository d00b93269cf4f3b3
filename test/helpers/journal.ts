// Helpers for in-process journal tests: listing a journal directory's files,
// damaging a byte of one, the crash cut (a flushed pair, then an append
// that never landed before one that did) several cases start from, and a
// tiny real file system that fills up.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { JOURNAL_HEADER_BYTES, RecordType, type Journal } from '../../src/dataplane/journal/journal.js';

const BLOCK_BYTES = 4096;
const RECORD_BYTES = JOURNAL_HEADER_BYTES + BLOCK_BYTES;

/** The journal files in `dir`, oldest first (with `nonEmpty`, only those holding bytes). */
export function journalFiles(dir: string, opts: { nonEmpty?: boolean } = {}): string[] {
  const files = fs
    .readdirSync(dir)
    .filter((n) => /^journal-\d{10}\.log$/.test(n))
    .sort()
    .map((n) => path.join(dir, n));
  return opts.nonEmpty ? files.filter((f) => fs.statSync(f).size > 0) : files;
}

/** Flips the low bit of the byte at `atBytes` of `file` (media damage at rest). */
export function flipBit(file: string, atBytes: number): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, atBytes);
  b[0] ^= 0x01;
  fs.writeSync(fd, b, 0, 1, atBytes);
  fs.closeSync(fd);
}

/**
 * Through `j0` (fresh, closed here): 4 KiB writes of volume 1 at blocks 0-1
 * (0x10, 0x11) flushed, then seq 3 (block 2) and seq 4 (block 3) appended
 * unflushed, and seq 3 zeroed in the file: its writev never ran, seq 4's
 * landed (a crash cut in the middle). Returns the file.
 */
export async function crashCutJournal(j0: Journal): Promise<string> {
  for (let i = 0; i < 2; i++) await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10 + i));
  await j0.sync();
  await j0.append(RecordType.Write, 1, 2 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x12));
  await j0.append(RecordType.Write, 1, 3 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x13));
  await j0.close();
  const file = journalFiles(j0.dir)[0]!;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(RECORD_BYTES), 0, RECORD_BYTES, 2 * RECORD_BYTES + JOURNAL_HEADER_BYTES);
  fs.closeSync(fd);
  return file;
}

/**
 * A tmpfs of `sizeBytes` mounted on a fresh directory (root only), unmounted
 * and removed after the test: a real file system that fills up, for writes
 * that land only in part.
 */
export function tinyFileSystem(t: { after(fn: () => void): void }, sizeBytes: number, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmdirSync(dir);
    throw new Error(`mounting a ${sizeBytes}-byte tmpfs on ${dir} failed (the test needs root with CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  t.after(() => {
    // Lazy: a test that failed before closing its journal still holds
    // descriptors on it; the mount goes now and its memory when they close.
    execFileSync('umount', ['--lazy', dir], { stdio: 'pipe' });
    fs.rmdirSync(dir);
  });
  return dir;
}

/** Fills the file system holding `dir` with a file of whole pages until ENOSPC; returns the bytes written. */
export function fillFileSystem(dir: string): number {
  const fd = fs.openSync(path.join(dir, 'filler'), 'w');
  const page = Buffer.alloc(4096, 0xee);
  let bytes = 0;
  try {
    for (;;) {
      try {
        bytes += fs.writeSync(fd, page, 0, page.length, bytes);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return bytes;
        throw err;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}
