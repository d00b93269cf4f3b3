// One process at a time on a data directory: an exclusive fcntl OFD lock on
// DATA_DIR/couchestor.lock, taken first by `serve` and by every offline CLI path,
// and on POOL/couchestor.lock of each pool it names (lockPools: a pool may lie
// outside the data directory, and two data directories must not share one).
//
// Why: daemon.json is only written once a daemon is fully started, so it
// cannot tell a CLI (or a second `serve`) that a daemon is busy opening the
// index and replaying the journal. Two journals and destagers on one
// directory append to and delete the same journal files and destage twice.
// The lock is held for the holder's lifetime (the descriptor stays open) and
// the kernel drops it when the process dies, SIGKILL included, so a killed
// daemon never leaves a stale lock behind. The file's content (`PID ROLE`) is
// only for the refusal message; it is never what decides. The file is never
// deleted: unlinking a lock file lets a late opener lock an orphaned inode
// while a newcomer locks a fresh one.
//
// Without native/build/Release/fs_seek.node (or one built before the lock
// functions existed) every open of a data directory is refused with an error
// saying to rebuild: Node has no flock/fcntl binding, and a pidfile fallback
// (O_EXCL create plus a liveness check) races (two processes both find a dead
// pid, both remove and recreate) and trusts pids the kernel reuses. The
// volume path already needs the same addon (seek-data.ts), so a daemon
// without it could not run anyway.
import fs from 'node:fs';
import path from 'node:path';
import { ensureDurableDir } from './dataplane/dir-sync.js';
import { loadNativeAddon } from './native-addon.js';

export const LOCK_FILE = 'couchestor.lock';

/** What takes the lock: `serve` for the daemon, else the CLI command (`volumes create`, `fsck`, ...). */
export type LockRole = string;

interface LockAddon {
  lockFileExclusive(fd: number): boolean;
  lockFileHeld(fd: number): boolean;
}

let addon: LockAddon | null = null;

function lockAddon(): LockAddon {
  if (addon) return addon;
  let loaded: Partial<LockAddon>;
  try {
    loaded = loadNativeAddon<Partial<LockAddon>>('fs_seek');
  } catch (err) {
    throw new DataDirLockUnavailable(`cannot lock the data directory: ${(err as Error).message}; couchestor refuses to open a data directory it cannot lock`);
  }
  if (typeof loaded.lockFileExclusive !== 'function' || typeof loaded.lockFileHeld !== 'function') {
    throw new DataDirLockUnavailable('cannot lock the data directory: native/build/Release/fs_seek.node predates the data-directory lock: rebuild it (npm install, or node-gyp build --directory=native); couchestor refuses to open a data directory it cannot lock');
  }
  addon = loaded as LockAddon;
  return addon;
}

/** The native lock functions are missing: nothing may open the directory. */
export class DataDirLockUnavailable extends Error {
  override name = 'DataDirLockUnavailable';
}

/** Another process holds the data directory's lock (or the lock of one of its pool directories). */
export class DataDirLocked extends Error {
  override name = 'DataDirLocked';
  constructor(
    readonly dataDir: string,
    /** The holder's pid as it wrote it; null while it has not written it yet. */
    readonly holderPid: number | null,
    /** `serve` or the CLI command; null when unknown. */
    readonly holderRole: string | null,
    advice: string,
    /** What `dataDir` is: the data directory, or a pool directory its configuration names. */
    what: 'data directory' | 'pool directory' = 'data directory',
  ) {
    super(`${what} ${dataDir} is in use by ${describeHolder(holderPid, holderRole)}: ${advice}`);
  }
}

/** Why a pool directory's lock is refused: the holder serves another data directory (its own holds this one's lock). */
const POOL_LOCKED_ADVICE = 'a pool belongs to one data directory, and this one\'s configuration (couchestor.yaml) names a pool another data directory uses: give each data directory its own pools';

export function describeHolder(pid: number | null, role: string | null): string {
  const who = role === 'serve' ? 'the couchestor daemon' : role ? `couchestor ${role}` : 'another couchestor process';
  return `${who} (pid ${pid ?? 'not yet written'})`;
}

/** The holder as written in the lock file (it may be stale when nothing holds the lock). */
export function readLockHolder(dataDir: string): { pid: number | null; role: string | null } {
  try {
    const text = fs.readFileSync(path.join(dataDir, LOCK_FILE), 'utf8');
    const m = /^(\d+) (.*)\n/.exec(text);
    return m ? { pid: Number(m[1]), role: m[2]! } : { pid: null, role: null };
  } catch {
    return { pid: null, role: null };
  }
}

export class DataDirLock {
  /** Descriptors of the pool directories' locks (lockPools), released with this one. */
  private poolFds: number[] = [];

  /** The locks this process holds, by data directory (heldFor). */
  private static readonly heldHere = new Map<string, DataDirLock>();

  private constructor(
    readonly dataDir: string,
    private fd: number | null,
    readonly role: LockRole,
  ) {}

  /** The lock of `dataDir` this process holds, or null (openManager locks the pool directories it creates with it). */
  static heldFor(dataDir: string): DataDirLock | null {
    const lock = DataDirLock.heldHere.get(path.resolve(dataDir));
    return lock?.held ? lock : null;
  }

  /**
   * Takes the lock of `dataDir` (created if missing) or throws DataDirLocked
   * naming the holder, having changed nothing but the lock file's existence.
   * Never waits.
   */
  static acquire(dataDir: string, role: LockRole, advice: string | ((holderRole: string | null) => string) = 'stop it first'): DataDirLock {
    const dir = path.resolve(dataDir);
    lockAddon(); // before creating anything: no addon, nothing opens
    ensureDurableDir(dir); // as loadConfig would: the directory's name must survive a power cut
    const lock = new DataDirLock(dir, lockDirectory(dir, role, advice, 'data directory'), role);
    DataDirLock.heldHere.set(dir, lock);
    return lock;
  }

  /**
   * Also takes the lock of each directory of `poolDirs` (POOL/couchestor.lock),
   * held until release(). A pool may lie outside the data directory (an
   * absolute path in couchestor.yaml), where this lock does not reach: two
   * data directories naming one pool would share its journal, volume files,
   * objects and segments. A missing pool directory is created first (callers
   * pass existing ones: poolDirs(); openManager locks those it creates, a new
   * pool's, through heldFor()). A directory already covered (the data directory itself,
   * or a pool named twice through a link, which refuseAliasedPools reports) is
   * locked once; one that cannot be created, opened or locked (read-only or
   * failing disk) is skipped, for openManager to report or run without.
   * Throws DataDirLocked naming the pool and its holder; the pool locks taken
   * so far stay until release(), as the data directory's does.
   */
  lockPools(poolDirs: readonly string[], role: LockRole): void {
    if (this.fd === null) throw new Error('DataDirLock.lockPools: the data directory lock is released');
    const seen = new Set<string>([inodeKey(this.dataDir)!]);
    for (const pool of poolDirs) {
      const dir = path.resolve(pool);
      try {
        ensureDurableDir(dir);
      } catch {
        continue;
      }
      const key = inodeKey(dir);
      if (key === null || seen.has(key)) continue;
      seen.add(key);
      try {
        this.poolFds.push(lockDirectory(dir, role, POOL_LOCKED_ADVICE, 'pool directory'));
      } catch (err) {
        // A pool whose lock file cannot be opened (its disk remounted read-only or failing:
        // EROFS, EIO) must not stop the start: the daemon runs without that pool, as
        // without an offline one, and nothing writes it anyway. One on a filesystem
        // without OFD locks (EINVAL, ENOLCK) goes unguarded, as before pool locks.
        if (err instanceof DataDirLocked || err instanceof DataDirLockUnavailable) throw err;
      }
    }
  }

  /** True when some open file description holds `dataDir`'s lock (this process's included). Takes nothing. */
  static isHeld(dataDir: string): boolean {
    const native = lockAddon();
    let fd: number;
    try {
      fd = fs.openSync(path.join(path.resolve(dataDir), LOCK_FILE), fs.constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    try {
      return native.lockFileHeld(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  get held(): boolean {
    return this.fd !== null;
  }

  /** Drops the lock (the file stays). Idempotent. A process that exits without calling it loses the lock all the same. */
  release(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    if (DataDirLock.heldHere.get(this.dataDir) === this) DataDirLock.heldHere.delete(this.dataDir);
    for (const poolFd of this.poolFds.splice(0)) fs.closeSync(poolFd);
    fs.closeSync(fd);
  }
}

/** `dev:ino` of directory `dir`; null when it is missing or not a directory. */
function inodeKey(dir: string): string | null {
  try {
    const st = fs.statSync(dir);
    return st.isDirectory() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}

/**
 * Takes the lock of existing directory `dir` (DIR/couchestor.lock, created if
 * missing) and returns its descriptor, or throws DataDirLocked naming the
 * holder. Writes `PID ROLE` once the lock is ours, never before.
 */
function lockDirectory(dir: string, role: LockRole, advice: string | ((holderRole: string | null) => string), what: 'data directory' | 'pool directory'): number {
  const native = lockAddon();
  // O_RDWR without O_TRUNC: the holder's pid stays readable until we own the lock. (libuv opens
  // with O_CLOEXEC: a child the daemon spawns does not inherit the descriptor, so it cannot keep the lock.)
  const fd = fs.openSync(path.join(dir, LOCK_FILE), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  let taken = false;
  try {
    taken = native.lockFileExclusive(fd);
  } finally {
    if (!taken) fs.closeSync(fd);
  }
  if (!taken) {
    const holder = readLockHolder(dir);
    throw new DataDirLocked(dir, holder.pid, holder.role, typeof advice === 'string' ? advice : advice(holder.role), what);
  }
  try {
    const text = `${process.pid} ${role}\n`;
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, text, 0);
  } catch (err) {
    fs.closeSync(fd); // drops the lock
    throw err;
  }
  return fd;
}
