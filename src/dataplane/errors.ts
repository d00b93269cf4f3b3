// Typed errors raised by the storage code. Each front end maps them to its
// wire codes at one boundary (NBD errno in nbd/errors.ts, S3 XML in s3/).
import { constants as osConstants } from 'node:os';

export class StorageError extends Error {
  override name = 'StorageError';
}

/** Request range lies (partly) outside the volume. */
export class OutOfRange extends StorageError {
  override name = 'OutOfRange';
}

/** Pool (or filesystem) has no room for a new allocation. */
export class NoSpace extends StorageError {
  override name = 'NoSpace';
}

/** No pool matches what a volume or stripe needs. */
export class NoSuitablePool extends StorageError {
  override name = 'NoSuitablePool';
}

/**
 * Too few pools of a tier are online for what is asked (a stripe needs
 * data+parity distinct cold pools, a hot or warm volume one pool of its
 * tier): a NoSuitablePool whose cause is availability, not space. It passes
 * once the pools are back (mounted), so the API answers 503, not
 * NoSuitablePool's 507.
 */
export class TooFewOnlinePools extends NoSuitablePool {
  override name = 'TooFewOnlinePools';
}

/** A pool directory is missing or unreadable. */
export class PoolOffline extends StorageError {
  override name = 'PoolOffline';
}

/**
 * A destage (drain: `couchestor destage`) made no progress: every chunk left
 * failed or its volume could not be opened (too few online cold pools for a
 * stripe, a pool failing). The records stay in the journal and later passes
 * retry; the message names the cause.
 */
export class DestageStalled extends StorageError {
  override name = 'DestageStalled';
}

/** Volume / object / pool name not known. */
export class NotFound extends StorageError {
  override name = 'NotFound';
}

export class AlreadyExists extends StorageError {
  override name = 'AlreadyExists';
}

/** Invalid argument from a user (bad size, bad name, shrink, ...). */
export class InvalidArgument extends StorageError {
  override name = 'InvalidArgument';
}

/** A migration of this volume is already running (one at a time per volume). */
export class MigrationInProgress extends StorageError {
  override name = 'MigrationInProgress';
}

/**
 * A volume is in use by clients and the operation (a delete) would pull it
 * from under them: the NBD clients' peer addresses ('unix' for one on the
 * Unix socket). 409 on the API; `--force` / `?force=true` disconnects them first.
 */
export class VolumeInUse extends StorageError {
  override name = 'VolumeInUse';
  constructor(
    message: string,
    readonly volume: string,
    readonly nbdClients: readonly string[],
  ) {
    super(message);
  }
}

export class ReadOnly extends StorageError {
  override name = 'ReadOnly';
}

/**
 * The volume hit an unrecoverable I/O error (e.g. fdatasync failed): the
 * page cache may have dropped dirty pages, so no later flush can be trusted.
 * Every further request on the volume fails until an operator intervenes.
 */
export class VolumeFailed extends StorageError {
  override name = 'VolumeFailed';
}

/**
 * An index (LMDB) commit failed: its writes never reached disk, and the
 * in-memory state of their callers no longer matches the index. Latched by
 * MetaStore.durable() until the daemon restarts (the only way back).
 */
export class MetadataFailed extends StorageError {
  override name = 'MetadataFailed';
}

/** Raised by the erasure-coding layer when more than m shards are lost. */
export class InsufficientShards extends StorageError {
  override name = 'InsufficientShards';
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/**
 * A quota's EDQUOT (a user or project quota, a btrfs qgroup limit). Node 20's
 * libuv has no name for errno 122: its `code` is "Unknown system error -122",
 * so a check of `code` alone never sees it; its `errno` is -122.
 */
const EDQUOT_ERRNO = -osConstants.errno.EDQUOT;
export function isQuotaExceeded(err: unknown): boolean {
  return isErrno(err, 'EDQUOT') || (typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).errno === EDQUOT_ERRNO);
}

/** The file system's own "no room": ENOSPC, or EDQUOT (see isQuotaExceeded). */
export function isNoSpaceErrno(err: unknown): boolean {
  return isErrno(err, 'ENOSPC') || isQuotaExceeded(err);
}

// --- object store (src/dataplane/objects) -------------------------------
// Distinct NotFound subclasses so the S3 boundary can say which thing is missing.
export class NoSuchBucket extends NotFound {
  override name = 'NoSuchBucket';
}
export class NoSuchObject extends NotFound {
  override name = 'NoSuchObject';
}
export class NoSuchUpload extends NotFound {
  override name = 'NoSuchUpload';
}

/** DeleteBucket on a bucket that still holds objects. */
export class NotEmpty extends StorageError {
  override name = 'NotEmpty';
}

/** The bytes received do not match the digest the client declared. */
export class DigestMismatch extends StorageError {
  override name = 'DigestMismatch';
}

/** The body ended before the declared length (client gave up or lied). */
export class IncompleteBody extends StorageError {
  override name = 'IncompleteBody';
}

/** An object or part exceeds its size limit. */
export class TooLarge extends StorageError {
  override name = 'TooLarge';
}

/** Multipart completion: a listed part is missing or its ETag differs. */
export class InvalidPart extends StorageError {
  override name = 'InvalidPart';
}

/** Multipart completion: parts not listed in ascending order. */
export class InvalidPartOrder extends StorageError {
  override name = 'InvalidPartOrder';
}

/** Multipart completion: a part other than the last is below the minimum size. */
export class PartTooSmall extends StorageError {
  override name = 'PartTooSmall';
}

/** Stored bytes fail their checksum: never returned as data. */
export class Corrupt extends StorageError {
  override name = 'Corrupt';
}

/** An S3 object whose data was on a hot pool replaced with `pools replace --discard-volumes`: gone, deletable. */
export class ObjectDataLost extends StorageError {
  override name = 'ObjectDataLost';
}
