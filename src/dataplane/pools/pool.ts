// A pool is a directory on some media with a tier label and a capacity.
// Capacity is enforced logically (allocated chunks), so a full pool gives a
// clean NoSpace before the filesystem itself fills.
import { accessSync, constants, statfsSync } from 'node:fs';
import path from 'node:path';
import { NoSpace, PoolOffline } from '../errors.js';
import type { PoolRecord } from '../meta/store.js';
import { ensureDurableDir } from '../dir-sync.js';
import { log } from '../../log.js';

export class Pool {
  usedBytes = 0;

  constructor(readonly rec: PoolRecord) {}

  get name(): string {
    return this.rec.name;
  }

  get volumesDir(): string {
    return path.join(this.rec.path, 'volumes');
  }

  volumeFile(volumeId: number): string {
    return path.join(this.volumesDir, `${volumeId}.dat`);
  }

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

  /** True when the directory exists and is writable (and, after adoptWhenBack, has been adopted). */
  isOnline(): boolean {
    try {
      accessSync(this.rec.path, constants.W_OK | constants.R_OK);
    } catch {
      return false;
    }
    if (this.adopt !== null) {
      try {
        this.adopt();
      } catch (err) {
        if (!this.adoptRefusedLogged) log.error('pool directory back, but the pool stays offline', { pool: this.name, path: this.rec.path, err: (err as Error).message });
        this.adoptRefusedLogged = true;
        return false;
      }
      this.adopt = null;
      log.info('pool directory back: the pool is online again', { pool: this.name, path: this.rec.path });
    }
    return true;
  }

  assertOnline(): void {
    if (!this.isOnline()) throw new PoolOffline(`pool ${this.name}: directory ${this.rec.path} is missing or not writable`);
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
