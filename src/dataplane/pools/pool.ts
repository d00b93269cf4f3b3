// A pool is a directory on some media with a tier label and a capacity.
// Capacity is enforced logically (allocated chunks), so a full pool gives a
// clean NoSpace before the filesystem itself fills.
import { accessSync, constants, statSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { NoSpace, PoolOffline } from '../errors.js';
import type { PoolRecord } from '../meta/store.js';
import { ensureDurableDir } from '../dir-sync.js';
import { log } from '../../log.js';
import { identityProblem } from './identity.js';

export class Pool {
  usedBytes = 0;
  /**
   * The directory (dev:ino:birth) whose identity matched (identityProblem):
   * not read again while the path is that directory. null: none yet.
   */
  private verifiedDir: string | null = null;
  /** Why the last isOnline() said no: null while online. */
  private offline: string | null = null;

  /**
   * `dataDirId` (MetaStore.dataDirId): with it and a record carrying a uuid,
   * the directory counts only while its identity file names this pool of this
   * data directory. Without either (a record from a build before the identity,
   * not yet upgraded by openManager; a bare stripe store in tests) only the
   * directory's presence counts, as before.
   */
  constructor(
    private record: PoolRecord,
    readonly dataDirId: string | null = null,
  ) {}

  get rec(): PoolRecord {
    return this.record;
  }

  /**
   * `pools replace`: the pool's directory now holds a new identity (`rec`
   * carries its uuid). The next isOnline() checks it, then runs adoptWhenBack's
   * hook (lock, hot pool layout) as for a directory come back.
   */
  replacedBy(rec: PoolRecord): void {
    this.record = rec;
    this.verifiedDir = null;
    this.legacyUpgrade = null;
  }

  get name(): string {
    return this.rec.name;
  }

  get volumesDir(): string {
    return path.join(this.rec.path, 'volumes');
  }

  volumeFile(volumeId: number): string {
    return path.join(this.volumesDir, `${volumeId}.dat`);
  }

  /**
   * A pool of a build before the identity (VolumeManager.legacyPool): writes
   * the identity (and the record's uuid) when the directory holds our layout;
   * false while it does not. Cleared once it wrote it.
   */
  legacyUpgrade: (() => boolean) | null = null;

  /** Set by adoptWhenBack: run once before the pool counts as online again. */
  private adopt: (() => void) | null = null;
  private adoptRefusedLogged = false;

  /**
   * A pool offline at start (its directory missing): `adopt` runs the first
   * time the directory is there, before the pool counts as online (the daemon
   * locks it then). While `adopt` throws, the pool stays offline (logged once).
   */
  adoptWhenBack(adopt: () => void): void {
    this.adopt = adopt;
  }

  /** Whether an adoptWhenBack hook waits to run (it makes the pool's layout itself). */
  get adoptPending(): boolean {
    return this.adopt !== null;
  }

  /**
   * True when the directory exists and is writable, holds this pool's identity
   * (checked until it matched once) and, after adoptWhenBack, has been adopted.
   */
  isOnline(): boolean {
    let dirKey: string;
    try {
      const st = statSync(this.rec.path, { bigint: true });
      accessSync(this.rec.path, constants.W_OK | constants.R_OK);
      dirKey = `${st.dev}:${st.ino}:${st.birthtimeNs}`;
    } catch {
      this.offline = `directory ${this.rec.path} is missing or not writable`;
      return false;
    }
    if (this.verifiedDir !== dirKey && this.rec.uuid !== undefined && this.dataDirId !== null) {
      // An empty mount point (disk not mounted), another pool's disk, or one of another node:
      // offline with the same machinery as a missing directory, nothing written into it.
      let problem = identityProblem(this.name, this.rec.uuid, this.dataDirId, this.rec.path);
      if (problem !== null) problem = this.identityRepair(problem);
      if (problem !== null) {
        if (this.offline !== problem) log.error('pool directory is not the pool: the pool is offline', { pool: this.name, path: this.rec.path, why: problem });
        this.offline = problem;
        return false;
      }
      this.verifiedDir = dirKey;
    }
    if (this.adopt !== null) {
      try {
        this.adopt();
      } catch (err) {
        if (!this.adoptRefusedLogged) log.error('pool directory back, but the pool stays offline', { pool: this.name, path: this.rec.path, err: (err as Error).message });
        this.adoptRefusedLogged = true;
        this.offline = `directory ${this.rec.path} is back but not adopted: ${(err as Error).message}`;
        return false;
      }
      this.adopt = null;
      log.info('pool directory back: the pool is online again', { pool: this.name, path: this.rec.path });
    }
    this.offline = null;
    return true;
  }

  /**
   * An identity missing where it may be written, or `problem` (null once
   * written): only a pool of an earlier version's layout gets one
   * (legacyUpgrade). A directory without identity is never taken for the
   * pool, at a start or while the daemon runs: a disk that fails or is
   * unmounted under the running daemon leaves its empty mount point, and
   * adopting it would put new volume files, shards and hot S3 objects on the
   * root filesystem, to vanish when the disk is mounted again. A new disk is
   * given the pool's identity only by `couchestor pools replace`.
   */
  private identityRepair(problem: string): string | null {
    if (this.legacyUpgrade === null) return problem;
    try {
      if (!this.legacyUpgrade()) return problem;
      this.legacyUpgrade = null;
    } catch (err) {
      return `${problem} (writing its identity failed: ${(err as Error).message})`;
    }
    return identityProblem(this.name, this.rec.uuid!, this.dataDirId!, this.rec.path);
  }

  /**
   * Why the pool is offline (isOnline() asked now), or null when online.
   * 'directory DIR is missing or not writable', or the identity problem.
   */
  offlineReason(): string | null {
    return this.isOnline() ? null : this.offline;
  }

  /** Whether the pool is offline for a reason other than its directory missing or unwritable (identity, adoption). */
  offlineButPresent(): boolean {
    const why = this.offlineReason();
    return why !== null && !why.endsWith('is missing or not writable');
  }

  assertOnline(): void {
    if (!this.isOnline()) throw new PoolOffline(`pool ${this.name}: ${this.offline ?? `directory ${this.rec.path} is missing or not writable`}`);
  }

  /**
   * volumes/ exists and its name is durable (ensureDurableDir: a power cut
   * must not take the directory, and every volume file in it, with it).
   */
  ensureDirs(): void {
    this.assertOnline();
    ensureDurableDir(this.volumesDir);
  }

  freeBytes(): number {
    return Math.max(0, this.rec.capacityBytes - this.usedBytes);
  }

  reserve(lengthBytes: number): void {
    if (this.usedBytes + lengthBytes > this.rec.capacityBytes) {
      throw new NoSpace(`pool ${this.name} is full (${this.usedBytes} of ${this.rec.capacityBytes} bytes used)`);
    }
    this.usedBytes += lengthBytes;
  }

  release(lengthBytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - lengthBytes);
  }
}

/** Free bytes of the filesystem holding `dir` (used as a default capacity). */
export function filesystemFreeBytes(dir: string): number {
  const st = statfsSync(dir);
  return Number(st.bavail) * Number(st.bsize);
}
