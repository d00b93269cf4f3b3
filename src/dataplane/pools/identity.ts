// The pool identity file (POOL/.couchestor-pool): which pool of which data
// directory a directory is, as Ceph's OSD `fsid`/`whoami` and MinIO's
// per-drive `format.json`. Without it an unmounted disk's empty mount point,
// or another pool's disk mounted at this path, passes for the pool: ready,
// written to (onto the wrong filesystem), its data silently missing.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileDurableSync } from '../dir-sync.js';

export const POOL_IDENTITY_FILE = '.couchestor-pool';
export const POOL_IDENTITY_FORMAT = 1;

export interface PoolIdentity {
  format: number;
  pool: string;
  /** The pool's uuid, recorded in its index record (PoolRecord.uuid). */
  poolUuid: string;
  /** The data directory's id (MetaStore.dataDirId): a pool belongs to one data directory. */
  dataDirId: string;
  createdMs: number;
}

/**
 * Names a pool directory of ours may hold beside the identity (the layout of
 * every build so far): a directory from a build before the identity holding
 * any of them is the pool's (upgrade: its identity is written at start). The
 * lock file counts: openManager no longer takes a pool's lock in a directory
 * that has nothing in it (daemon.ts poolDirs), so only a pool in use made it.
 */
const LAYOUT_NAMES = new Set(['couchestor.lock', 'volumes', 'journal', 'segments', 'objects']);

export function identityFile(dir: string): string {
  return path.join(dir, POOL_IDENTITY_FILE);
}

/** The identity in `dir`; null: none (ENOENT). Throws on an unreadable or malformed file. */
export function readPoolIdentity(dir: string): PoolIdentity | null {
  let text: string;
  try {
    text = fs.readFileSync(identityFile(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const j = JSON.parse(text) as Partial<PoolIdentity> | null;
  if (j === null || typeof j !== 'object' || typeof j.pool !== 'string' || typeof j.poolUuid !== 'string' || typeof j.dataDirId !== 'string' || typeof j.format !== 'number') {
    throw new Error(`${identityFile(dir)} is not a pool identity`);
  }
  if (j.format > POOL_IDENTITY_FORMAT) throw new Error(`${identityFile(dir)} has format ${j.format}, newer than this build reads (${POOL_IDENTITY_FORMAT})`);
  return j as PoolIdentity;
}

/**
 * Writes `id` into `dir`, durable on return (file fsync, link, directory
 * fsync: writeFileDurableSync). False when an identity is there already
 * (the caller reads it: written by a racing process, or one from a crash
 * between this and the index record).
 */
export function writePoolIdentity(dir: string, id: Omit<PoolIdentity, 'format' | 'createdMs'>): boolean {
  const full: PoolIdentity = { format: POOL_IDENTITY_FORMAT, ...id, createdMs: Date.now() };
  try {
    return writeFileDurableSync(identityFile(dir), JSON.stringify(full) + '\n', 0o644);
  } catch (err) {
    // Said with the pool and its file (a bare "ENOSPC: no space left on device, write" named neither).
    throw new Error(`pool ${id.pool}: its identity ${identityFile(dir)} cannot be written: ${(err as Error).message}`, { cause: err });
  }
}

/** What `dir` holds besides nothing: the names in it (no identity among them when called for a legacy check). */
export function dirEntries(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Whether `dir` holds this daemon's pool layout (a directory of a build before the identity). */
export function holdsPoolLayout(dir: string): boolean {
  return dirEntries(dir).some((n) => LAYOUT_NAMES.has(n) || n === POOL_IDENTITY_FILE);
}

/** The advice every "no identity" refusal carries. */
export function noIdentityAdvice(pool: string, dir: string): string {
  return `no pool identity in ${dir}: is its disk mounted? If this is a new disk replacing a dead one, run \`couchestor pools replace ${pool}\``;
}

/**
 * Why `dir` is not pool `pool` (uuid `poolUuid`) of data directory
 * `dataDirId`, or null when its identity matches.
 */
export function identityProblem(pool: string, poolUuid: string, dataDirId: string, dir: string): string | null {
  let id: PoolIdentity | null;
  try {
    id = readPoolIdentity(dir);
  } catch (err) {
    return `pool identity in ${dir} cannot be read (${(err as Error).message}): the pool stays offline; restore the file from the disk's backup, or if this is a new disk replacing a dead one, empty it and run \`couchestor pools replace ${pool}\``;
  }
  if (id === null) return noIdentityAdvice(pool, dir);
  if (id.dataDirId !== dataDirId) {
    return `${dir} holds the identity of pool ${id.pool} of another data directory (id ${id.dataDirId}, this one is ${dataDirId}): the wrong disk is mounted there; mount pool ${pool}'s disk at ${dir}`;
  }
  if (id.poolUuid !== poolUuid) {
    return `${dir} holds the identity of pool ${id.pool} (uuid ${id.poolUuid}), not of pool ${pool} (uuid ${poolUuid}): disks swapped or mounted at the wrong path? Mount each pool's disk at its own path`;
  }
  return null;
}
