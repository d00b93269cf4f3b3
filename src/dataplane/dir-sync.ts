// Makes a just-created file's or directory's name durable: fsync of its
// parent directory, opened by path, then a check that the directory synced is
// the one the entry is linked in (a pool directory replaced meanwhile fails
// the call). syncNewEntry for files (async, before an index entry or a FLUSH
// depends on them), ensureDurableDir for the directories that hold them.
//
// By path, not on a directory fd held for the store's lifetime. Node has no
// openat(): files are created by path, so they land in whatever directory the
// path names at that instant. A held fd pins the directory as it was at
// start; once an operator replaces the pool directory (a lost pool swapped
// for a new one, which `couchestor rebuild` expects for cold pools) fsync on
// that fd still succeeds (measured: a removed directory's fd, nlink 0, syncs
// without error) while every new name lands in the new, never-synced
// directory: a silent hole for the rest of the daemon's life. Opened by path,
// the sync follows the creates; the one window left (a replacement between
// the create and the open) is closed by the identity check below.
import fs from 'node:fs';
import path from 'node:path';
import { PoolOffline } from './errors.js';

/**
 * Resolves once `file`'s directory entry is durable. `fd` is the file as
 * created (any open descriptor of it). Throws PoolOffline when the directory
 * was removed or replaced, or the name no longer leads to this file, so the
 * caller fails before any index entry refers to the file. The identity stats
 * run on the calling thread: metadata of a directory just opened, microseconds
 * each, where four threadpool round trips would each cost a scheduling delay.
 */
export async function syncNewEntry(file: string, fd: number): Promise<void> {
  const dirPath = path.dirname(file);
  let dir: fs.promises.FileHandle;
  try {
    dir = await fs.promises.open(dirPath, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new PoolOffline(`directory ${dirPath} is gone: ${path.basename(file)} was made in a removed directory`, { cause: err });
    throw err;
  }
  try {
    await dir.sync();
    assertSyncedEntry(dirPath, dir.fd, file, fs.fstatSync(fd));
  } finally {
    await dir.close();
  }
}

/**
 * After an fsync of `dirFd` (opened by path at `dirPath`): the directory the
 * path names now is the one synced, and in it `entryPath` leads to `expected`
 * (the file or directory just created), so the entry was in the synced
 * directory (entries do not move between directories but by rename). The
 * stats run on the calling thread: metadata of a directory just opened,
 * microseconds each.
 */
function assertSyncedEntry(dirPath: string, dirFd: number, entryPath: string, expected: fs.Stats): void {
  const synced = fs.fstatSync(dirFd);
  const current = fs.statSync(dirPath, { throwIfNoEntry: false });
  if (!current || current.ino !== synced.ino || current.dev !== synced.dev) {
    throw new PoolOffline(`directory ${dirPath} was removed or replaced while ${path.basename(entryPath)} was created in it: the new name is not durable`);
  }
  const entry = fs.lstatSync(entryPath, { throwIfNoEntry: false });
  if (!entry || entry.ino !== expected.ino || entry.dev !== expected.dev) {
    throw new PoolOffline(`${entryPath} no longer names the ${expected.isDirectory() ? 'directory' : 'file'} just created (its directory was replaced, or it was removed)`);
  }
}

/**
 * syncNewEntry on the calling thread, for the few creates made where no
 * promise can be awaited (VolumeManager.openVolume re-creating a missing
 * volume file). Blocks the event loop for one directory fsync: once per file
 * created, never per I/O.
 */
export function syncNewEntrySync(file: string, fd: number): void {
  syncParentOf(file, fs.fstatSync(fd));
}

/** fsync of `entryPath`'s parent by path, then the identity check; ENOENT/ENOTDIR of the parent = PoolOffline. */
function syncParentOf(entryPath: string, expected: fs.Stats): void {
  const dirPath = path.dirname(entryPath);
  let dirFd: number;
  try {
    dirFd = fs.openSync(dirPath, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new PoolOffline(`directory ${dirPath} is gone: ${path.basename(entryPath)} was made in a removed directory`, { cause: err });
    throw err;
  }
  try {
    fs.fsyncSync(dirFd);
    assertSyncedEntry(dirPath, dirFd, entryPath, expected);
  } finally {
    fs.closeSync(dirFd);
  }
}

/**
 * Directories (dev:ino:birth time) whose own name this process has made durable, so a
 * directory that already existed is synced into its parent once per process,
 * not at every ensureDurableDir. Keyed by inode, not path: a pool directory
 * replaced under the same path is a new directory, synced again. Bounded:
 * at the bound the set is cleared, which only costs each directory one more
 * fsync.
 */
const durableDirs = new Set<string>();
const MAX_DURABLE_DIRS = 4096;

/**
 * Creates `dir` (and any missing parent) and makes its name durable before
 * returning: for every directory this call created, its parent is fsynced
 * (mkdir, like a file create, changes only the parent, and nothing but an
 * fsync of the parent persists it), by path with the same identity check as
 * syncNewEntry (PoolOffline if replaced meanwhile). A directory that already
 * existed is synced into its parent the first time this process sees it: a
 * previous run may have died between its mkdir and that fsync, leaving the
 * name in the page cache only. Synchronous (callers are synchronous: Pool.
 * ensureDirs under openVolume), so at most one fsync per directory level
 * created, or one per directory per process: never per I/O. Files created in
 * `dir` still need syncNewEntry: this covers `dir`'s own name only.
 */
export function ensureDurableDir(dir: string): void {
  const abs = path.resolve(dir);
  // The first directory created, or undefined if none was.
  const first = mkdirpSync(abs);
  if (first !== undefined) {
    const created: string[] = [];
    for (let d = abs; ; d = path.dirname(d)) {
      created.push(d);
      if (d === first || d === path.dirname(d)) break;
    }
    // Top down: each parent's entry for the next level down.
    for (const d of created.reverse()) syncParentOf(d, fs.lstatSync(d));
    remember(fs.statSync(abs, { bigint: true }));
    return;
  }
  const st = fs.statSync(abs, { bigint: true });
  if (durableDirs.has(dirKey(st))) return;
  // Through any symlink (a pool directory may be one): the name to persist
  // is the real directory's, in its real parent.
  const real = fs.realpathSync(abs);
  syncParentOf(real, fs.lstatSync(real));
  remember(st);
}

/**
 * fs.mkdirSync(abs, { recursive: true }), returning the first directory it
 * created (undefined: none), without Node's endless loop: where mkdir answers
 * ENOENT under an existing parent (a path in /proc or /sys: a pool path
 * mistyped there), Node 20 makes the parent, finds it there and tries the
 * child again forever, holding the event loop (serve never started, never
 * answered SIGTERM). Here each missing level is made once, top down, and an
 * error is thrown as mkdir gives it (ENOENT, ENOTDIR, EACCES, EEXIST for a
 * file at `abs`).
 */
function mkdirpSync(abs: string): string | undefined {
  const missing: string[] = [];
  for (let d = abs; ; ) {
    try {
      fs.statSync(d);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      missing.push(d);
      const parent = path.dirname(d);
      if (parent === d) break;
      d = parent;
    }
  }
  if (missing.length === 0) {
    if (!fs.statSync(abs).isDirectory()) fs.mkdirSync(abs); // throws EEXIST, as the recursive mkdir did
    return undefined;
  }
  let first: string | undefined;
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d);
      first ??= d;
    } catch (err) {
      // Made meanwhile by another process: fine while it is a directory.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !statDanglingNamed(d).isDirectory()) throw err;
    }
  }
  return first;
}

/**
 * fs.statSync(d) for a name mkdir found taken; a symbolic link to nothing
 * (made to an unmounted disk's path) otherwise threw a bare "ENOENT: no such
 * file or directory, stat 'D'", naming a path `ls` shows there: this ENOENT
 * names the link's target.
 */
function statDanglingNamed(d: string): fs.Stats {
  try {
    return fs.statSync(d);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !fs.lstatSync(d).isSymbolicLink()) throw err;
    const target = path.resolve(path.dirname(d), fs.readlinkSync(d));
    throw Object.assign(new Error(`ENOENT: ${d} is a symbolic link to ${target}, which does not exist (a disk not mounted?): make that directory or fix the link`), { code: 'ENOENT', path: d });
  }
}

/**
 * Birth time beside the inode: a directory removed and made again at once
 * (an operator replacing a pool) often gets the freed inode number back.
 */
function dirKey(st: fs.BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.birthtimeNs}`;
}

function remember(st: fs.BigIntStats): void {
  if (durableDirs.size >= MAX_DURABLE_DIRS) durableDirs.clear();
  durableDirs.add(dirKey(st));
}

/**
 * fsync of a directory by path, on the calling thread: the names in it made
 * so far are durable. For start-up work that makes many names in one
 * directory (hot-segments' fan-out), one sync where ensureDurableDir per
 * name would sync once each.
 */
export function syncDirSync(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Creates `file` holding `data`, all or nothing, and durable on return: the
 * bytes go to a temporary name and are fsynced, then link() publishes them
 * under `file` (failing with EEXIST, like O_EXCL, if another process got
 * there first: then false, and the other's file stands) and the directory
 * is fsynced. For the files a first start
 * writes once and a later start trusts (the S3 key pair, the embedded
 * configuration): a power cut can leave no file, never an empty or partial
 * one under the real name, and a key printed to the operator is on disk.
 */
export function writeFileDurableSync(file: string, data: string, mode = 0o644): boolean {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    // A full disk (ENOSPC) or an I/O error: no half-written temp file left beside `file`.
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    fs.unlinkSync(tmp);
  }
  syncParentOf(file, fs.lstatSync(file));
  return true;
}
