// The one place storage errors become what an NBD client is told: error
// numbers in transmission, and the reason an export is not available.
import { InvalidArgument, NoSpace, NotFound, OutOfRange, PoolOffline, ReadOnly, StorageError, VolumeFailed, isErrno, isNoSpaceErrno } from '../errors.js';
import { SlowZero } from '../volumes/volume.js';
import { EINVAL, EIO, ENOSPC, ENOTSUP, EPERM } from './protocol.js';

export function nbdErrno(err: unknown): number {
  if (err instanceof OutOfRange || err instanceof InvalidArgument) return EINVAL;
  if (err instanceof NoSpace || isNoSpaceErrno(err)) return ENOSPC;
  if (err instanceof ReadOnly || isErrno(err, 'EROFS')) return EPERM;
  if (err instanceof SlowZero) return ENOTSUP;
  if (err instanceof VolumeFailed || err instanceof PoolOffline) return EIO;
  return EIO;
}

/**
 * An export whose volume exists but cannot be opened. Its message is what
 * a network client is told (the pool and the class of failure); the cause,
 * with the host's paths, is for the daemon's log only.
 */
export class ExportUnavailable extends StorageError {
  override name = 'ExportUnavailable';
}

/**
 * Why the volume cannot be opened, for a client: the pool (`pool`, where
 * the open failed; `poolPresent`: offline with its directory there) and the kind of failure, never an error's own message
 * (PoolOffline's and errno errors' name directories and files of the host).
 */
export function unavailableReason(err: unknown, pool: string | undefined, poolPresent = false): string {
  const on = pool === undefined ? 'its pool' : `pool ${pool}`;
  // Pool.offlineButPresent: the directory is there, but not as the pool (an empty mount point, another disk, not adopted).
  if (err instanceof PoolOffline && poolPresent) return `${on} is offline (its directory is there but does not hold the pool: its disk not mounted, another disk, or in use elsewhere; the server log has the details)`;
  // The pool online, the volume's file on it gone (openOrCreate: with chunks in it, never made again empty).
  if (err instanceof PoolOffline && isErrno(err.cause, 'ENOENT')) return `${on}: a data file of the volume is missing`;
  if (err instanceof PoolOffline) return `${on} is offline (its directory is missing or not writable)`;
  // The volume exists (the caller checked), so what is not found is a pool of its files.
  if (err instanceof NotFound) return `${on} is not configured`;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return `${on}: I/O error ${code}`;
  return `${on}: the volume cannot be opened (${err instanceof Error ? err.name : 'error'}; the server log has the details)`;
}
