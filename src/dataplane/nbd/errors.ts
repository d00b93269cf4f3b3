// The one place storage errors become NBD error numbers.
import { InvalidArgument, NoSpace, OutOfRange, PoolOffline, ReadOnly, VolumeFailed, isErrno } from '../errors.js';
import { SlowZero } from '../volumes/volume.js';
import { EINVAL, EIO, ENOSPC, ENOTSUP, EPERM } from './protocol.js';

export function nbdErrno(err: unknown): number {
  if (err instanceof OutOfRange || err instanceof InvalidArgument) return EINVAL;
  if (err instanceof NoSpace || isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT')) return ENOSPC;
  if (err instanceof ReadOnly || isErrno(err, 'EROFS')) return EPERM;
  if (err instanceof SlowZero) return ENOTSUP;
  if (err instanceof VolumeFailed || err instanceof PoolOffline) return EIO;
  return EIO;
}
