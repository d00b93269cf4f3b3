// Helpers for in-process journal tests: listing a journal directory's files,
// damaging a byte of one, the crash cut (a flushed pair, then an append
// that never landed before one that did) several cases start from, and a
// tiny real file system that fills up (a tmpfs, mounted here or in a user
// namespace; where neither can be had, a file-size limit standing for it),
// and the journal most of those tests open; the spare tests' first run
// (every file destaged, the spares kept); fdatasyncs held for the test to complete.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, JOURNAL_HEADER_BYTES, JOURNAL_SPARE_FILES, parseJournalFileName, RecordType } from '../../src/dataplane/journal/journal.js';
import { PowerLossFs, seededRandom, type DirModel } from './power-loss-fs.js';
import { stderrLines } from './stderr.js';

export const MiB = 1024 * 1024;
/** The write size the journal tests use (one 4 KiB block). */
export const BLOCK_BYTES = 4096;
/** One BLOCK_BYTES write as it lies in a journal file: header, then payload. */
export const RECORD_BYTES = JOURNAL_HEADER_BYTES + BLOCK_BYTES;

/** Block i of a test volume: every byte i + 1 (mod 256). */
export function block(i: number): Buffer {
  return Buffer.alloc(BLOCK_BYTES, (i + 1) & 0xff);
}

/**
 * Opens (and replays) a journal on `dir` as the journal tests do: 1 MiB
 * chunks, nothing destaged, every volume present; `opts` overrides any of it
 * (fileBytes to rotate early, destagedSeq/highestDestagedSeq after a destage).
 */
export function openTestJournal(dir: string, opts: Partial<Parameters<typeof Journal.open>[0]> = {}): Journal {
  return Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true, ...opts });
}

/**
 * The spare tests' first run: blocks 0..destagedSeq-1 of volume 1, each
 * appended and synced, into files of `opts` (openTestJournal's), all
 * released and the journal closed: JOURNAL_SPARE_FILES of its files are
 * spares now (asserted).
 */
export async function sparedJournal(dir: string, destagedSeq: number, opts: Partial<Parameters<typeof Journal.open>[0]>): Promise<void> {
  const j0 = openTestJournal(dir, opts);
  for (let i = 0; i < destagedSeq; i++) {
    await j0.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j0.sync();
  }
  // Every chunk the blocks reached (chunk 0 only for up to 256 of them).
  for (const c of j0.dirtyChunks(1)) j0.release(1, c, destagedSeq);
  await j0.close();
  assert.equal(fs.readdirSync(dir).filter((n) => n.startsWith('journal-spare-')).length, JOURNAL_SPARE_FILES);
}

/** The journal files in `dir`, oldest first (with `nonEmpty`, only those holding bytes). */
export function journalFiles(dir: string, opts: { nonEmpty?: boolean } = {}): string[] {
  const files = fs
    .readdirSync(dir)
    .flatMap((n) => {
      const parsed = parseJournalFileName(n);
      return parsed ? [{ n, no: parsed.no }] : [];
    })
    .sort((a, b) => a.no - b.no)
    .map(({ n }) => path.join(dir, n));
  return opts.nonEmpty ? files.filter((f) => fs.statSync(f).size > 0) : files;
}

/** Journal file number `no` of `dir` (its name carries its nonce, so it is found by number); fails the test if there is none. */
export function journalFile(dir: string, no: number): string {
  const file = journalFiles(dir).find((f) => parseJournalFileName(path.basename(f))!.no === no);
  assert.ok(file, `no journal file numbered ${no} in ${dir}: ${fs.readdirSync(dir).join(',')}`);
  return file;
}

/** The nonce a journal file's name carries (null: named before nonces). */
export function nameNonce(file: string): number | null {
  const parsed = parseJournalFileName(path.basename(file));
  assert.ok(parsed, `${file} is not a journal file's name`);
  return parsed.nonce;
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

/** What a test needs of its node:test context to get a full file system. */
export interface FullFileSystemContext {
  after(fn: () => void | Promise<void>): void;
  diagnostic(message: string): void;
}

/**
 * How a test gets a file system that fills up:
 * - `mount`: a tmpfs mounted here (root with CAP_SYS_ADMIN);
 * - `userns`: a tmpfs mounted by a child process in a user + mount
 *   namespace of its own (no privilege needed where the kernel allows user
 *   namespaces), reached through `/proc/<child>/root`: the same real tmpfs,
 *   and ENOSPC, for the test's own in-process file calls;
 * - `fsize`: no file system can be mounted at all (a container without
 *   CAP_SYS_ADMIN that also forbids user namespaces): a plain directory, and
 *   the test process's RLIMIT_FSIZE soft limit stands for the full disk. A
 *   write crossing it lands in part and the next fails with EFBIG (Node
 *   ignores SIGXFSZ), which drives the journal's short-write path exactly as
 *   ENOSPC does. The limit holds for every regular file the process writes,
 *   so these tests write nothing big beside the journal while it is low.
 * The first that works is taken; COUCHESTOR_TEST_FULL_FS=mount|userns|fsize
 * forces one (and fails if it cannot be had), to prove each path runs.
 */
export type FullFileSystemKind = 'mount' | 'userns' | 'fsize';

export interface TinyFileSystem {
  /** The directory the test writes in (on the tmpfs, or under the limit). */
  dir: string;
  kind: FullFileSystemKind;
  /** The error a write that finds no room fails with: ENOSPC, or EFBIG under `fsize`. */
  fullErrorCode: 'ENOSPC' | 'EFBIG';
  /**
   * Leaves no room to grow: on a tmpfs a filler file takes every free page,
   * so a file grows only into the rest of its last page; under `fsize` the
   * limit drops to that same bound for `growingFile` (the one file the
   * test writes next; 0 if it does not exist yet).
   */
  fill(growingFile: string): void;
}

const TMPFS_MAGIC = 0x01021994;
const KINDS: readonly FullFileSystemKind[] = ['mount', 'userns', 'fsize'];

/**
 * A file system of `sizeBytes` that fills up (see FullFileSystemKind),
 * removed after the test: for writes that land only in part.
 */
export async function tinyFileSystem(t: FullFileSystemContext, sizeBytes: number, prefix: string): Promise<TinyFileSystem> {
  const forced = process.env.COUCHESTOR_TEST_FULL_FS;
  if (forced !== undefined && forced !== '' && !KINDS.includes(forced as FullFileSystemKind)) {
    throw new Error(`COUCHESTOR_TEST_FULL_FS=${forced}: expected one of ${KINDS.join(', ')}`);
  }
  const kinds = forced ? [forced as FullFileSystemKind] : KINDS;
  const refusals: string[] = [];
  for (const kind of kinds) {
    try {
      const tiny = kind === 'mount' ? mountTmpfs(t, sizeBytes, prefix) : kind === 'userns' ? await namespaceTmpfs(t, sizeBytes, prefix) : fileSizeLimit(t, sizeBytes, prefix);
      t.diagnostic(`full file system: ${kind}${refusals.length ? ` (${refusals.join('; ')})` : ''}`);
      return tiny;
    } catch (err) {
      refusals.push(`${kind} refused: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`no file system that fills up could be had: ${refusals.join('; ')}`);
}

/** Fills a tmpfs with whole pages until ENOSPC; returns the bytes written. */
function fillTmpfs(dir: string): number {
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

/** The tmpfs at `dir` really is one of `sizeBytes`, else throws. */
function assertTmpfs(dir: string, sizeBytes: number): void {
  const st = fs.statfsSync(dir);
  if (st.type !== TMPFS_MAGIC || st.blocks * st.bsize !== sizeBytes) {
    throw new Error(`${dir} is not a ${sizeBytes}-byte tmpfs (type 0x${st.type.toString(16)}, ${st.blocks * st.bsize} bytes)`);
  }
}

function tmpfsHandle(kind: 'mount' | 'userns', dir: string): TinyFileSystem {
  return {
    dir,
    kind,
    fullErrorCode: 'ENOSPC',
    fill: () => {
      const fillerBytes = fillTmpfs(dir);
      assert.ok(fillerBytes > 0, `the tmpfs at ${dir} had no room left to fill`);
    },
  };
}

function mountTmpfs(t: FullFileSystemContext, sizeBytes: number, prefix: string): TinyFileSystem {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmdirSync(dir);
    throw new Error(`mount -t tmpfs failed (needs CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  t.after(() => {
    // Lazy: a test that failed before closing its journal still holds
    // descriptors on it; the mount goes now and its memory when they close.
    execFileSync('umount', ['--lazy', dir], { stdio: 'pipe' });
    fs.rmdirSync(dir);
  });
  assertTmpfs(dir, sizeBytes);
  return tmpfsHandle('mount', dir);
}

async function namespaceTmpfs(t: FullFileSystemContext, sizeBytes: number, prefix: string): Promise<TinyFileSystem> {
  const mountPoint = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  // The child mounts, says so, then holds the namespace (and so the mount)
  // until its stdin closes: at the test's end, or when this process dies.
  const child = spawn('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$0" && echo mounted && exec cat', mountPoint, String(sizeBytes)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const release = async () => {
    child.stdin.end();
    await exited;
    // The mount lived in the child's namespace only: here the directory is empty.
    fs.rmdirSync(mountPoint);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      let errText = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('mounted\n')) resolve();
      });
      child.stderr.on('data', (d: Buffer) => (errText += d.toString()));
      child.once('error', reject);
      child.once('close', (code) => reject(new Error(`unshare --user --mount exited ${code}: ${errText.trim()}`)));
    });
    const dir = path.join(`/proc/${child.pid}/root`, mountPoint);
    assertTmpfs(dir, sizeBytes);
    t.after(release);
    return tmpfsHandle('userns', dir);
  } catch (err) {
    await release();
    throw err;
  }
}

/** The soft RLIMIT_FSIZE of this process, as prlimit prints it ("unlimited" or bytes). */
function softFileSizeLimit(): string {
  return execFileSync('prlimit', ['--pid', String(process.pid), '--fsize', '--output=SOFT', '--noheadings', '--raw'], { encoding: 'utf8' }).trim();
}

function setSoftFileSizeLimit(limit: string): void {
  execFileSync('prlimit', ['--pid', String(process.pid), `--fsize=${limit}:`], { stdio: 'pipe' });
}

function fileSizeLimit(t: FullFileSystemContext, sizeBytes: number, prefix: string): TinyFileSystem {
  // The limit would cut this process's own output where that goes to a
  // regular file (a test file run alone with its output redirected); under
  // node --test it goes through a pipe, which the limit does not touch.
  for (const fd of [1, 2]) {
    if (fs.fstatSync(fd).isFile()) throw new Error(`fd ${fd} is a regular file, which RLIMIT_FSIZE would cut: run the test under node --test`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const before = softFileSizeLimit();
  try {
    setSoftFileSizeLimit(String(sizeBytes));
    if (softFileSizeLimit() !== String(sizeBytes)) throw new Error(`the soft RLIMIT_FSIZE did not take ${sizeBytes}`);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  t.after(() => {
    setSoftFileSizeLimit(before);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    kind: 'fsize',
    fullErrorCode: 'EFBIG',
    fill: (growingFile) => {
      // As on a full tmpfs: the rest of the file's last page, no more.
      const sizeNow = fs.existsSync(growingFile) ? fs.statSync(growingFile).size : 0;
      setSoftFileSizeLimit(String(Math.ceil(sizeNow / 4096) * 4096));
    },
  };
}

/**
 * Calls onClose(fd) for every fs.close / fs.closeSync (which journal.ts calls through the
 * `fs` module object) until the test ends, then puts both back.
 */
export function observeCloses(t: { after(fn: () => void): void }, onClose: (fd: number) => void): void {
  const realClose = fs.close;
  const realCloseSync = fs.closeSync;
  fs.close = ((fd: number, cb?: (err: NodeJS.ErrnoException | null) => void) => {
    onClose(fd);
    realClose(fd, cb ?? (() => undefined));
  }) as typeof fs.close;
  fs.closeSync = ((fd: number) => {
    onClose(fd);
    realCloseSync(fd);
  }) as typeof fs.closeSync;
  t.after(() => {
    fs.close = realClose;
    fs.closeSync = realCloseSync;
  });
}

/** An fdatasync the test holds: its descriptor, and the callback that completes it. */
export interface HeldFdatasync {
  fd: number;
  cb: (err: NodeJS.ErrnoException | null) => void;
}

/**
 * From here on every fs.fdatasync is held (not issued) and listed in `held`
 * for the test to complete in the order it chooses; `heldCount(n)` resolves
 * once n are held. The caller restores fs.fdatasync (it saved the real one).
 */
export function holdFdatasyncs(): { held: HeldFdatasync[]; heldCount: (n: number) => Promise<void> } {
  const held: HeldFdatasync[] = [];
  let heldChanged: () => void = () => undefined;
  const heldCount = (n: number) =>
    new Promise<void>((r) => {
      heldChanged = () => {
        if (held.length >= n) r();
      };
      heldChanged();
    });
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    held.push({ fd, cb });
    heldChanged();
  }) as typeof fs.fdatasync;
  return { held, heldCount };
}

/** A journal (directory `j`) on a tinyFileSystem of 64 KiB named `prefix`, its directory modelled by a PowerLossFs. */
export interface ModelledTinyJournal {
  plfs: PowerLossFs;
  tiny: TinyFileSystem;
  dir: string;
  model: DirModel;
  rng: () => number;
  j: Journal;
}

/**
 * Opens a ModelledTinyJournal: the PowerLossFs installed (uninstalled when `t` ends), the journal's directory tracked
 * from empty, and `rng` seeded with `seed` for the pumps.
 */
export async function modelledTinyJournal(t: FullFileSystemContext, prefix: string, seed: number): Promise<ModelledTinyJournal> {
  const plfs = PowerLossFs.install(t);
  const tiny = await tinyFileSystem(t, 64 * 1024, prefix);
  const dir = path.join(tiny.dir, 'j');
  fs.mkdirSync(dir);
  const model = plfs.track(dir);
  t.after(() => model.untrack());
  // No room check: these tests drive the writes that find the disk full (the race the check leaves).
  return { plfs, tiny, dir, model, rng: seededRandom(seed), j: openTestJournal(dir, { roomMarginBytes: null }) };
}

/**
 * A clean stop of `mj`'s journal, pumped to the end: `lines` is what it wrote to stderr, `closeFrom` the model's clock
 * before it, and `syncsOf(file)` the fdatasyncs of `file` that completed since.
 */
export async function stopModelledJournal(mj: ModelledTinyJournal): Promise<{ lines: string[]; syncsOf: (file: string) => DirModel['barriers'] }> {
  const { plfs, model, rng, j } = mj;
  const closeFrom = plfs.mark();
  const { lines } = await stderrLines(() => plfs.pumpUntil(j.close(), rng));
  await plfs.drain(rng);
  const syncsOf = (file: string) => {
    const ino = model.current.get(path.basename(file));
    return model.barriers.filter((s) => s.issue > closeFrom && s.target === ino && s.complete !== undefined);
  };
  return { lines, syncsOf };
}

/**
 * A power cut now, losing everything `mj`'s model holds not durable, into a temp dir named `prefix` (removed when `t`
 * ends): returns that dir and its head journal file.
 */
export function powerCutNow(t: FullFileSystemContext, mj: ModelledTinyJournal, prefix: string): { into: string; head: string } {
  const into = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(into, { recursive: true, force: true }));
  mj.model.crashState(mj.plfs.clock, seededRandom(5), into, 'lose');
  const [head] = journalFiles(into);
  return { into, head: head! };
}

/** Opens the journal in `dir` (closed when `t` ends): volume `volumeId`'s replayed writes, offset and bytes. */
export function replayedWrites(t: FullFileSystemContext, dir: string, volumeId: number): { offsetBytes: number; data: Buffer | null }[] {
  const j = openTestJournal(dir);
  t.after(() => j.close());
  return (j.extents(volumeId, 0) ?? []).map((e) => ({ offsetBytes: e.offsetBytes, data: e.data }));
}
