// The one boundary where errors become S3 error XML: protocol errors are
// raised as S3Error directly; storage errors (src/dataplane/errors.ts) are
// mapped here by class.
import {
  AlreadyExists,
  Corrupt,
  DigestMismatch,
  IncompleteBody,
  InsufficientShards,
  InvalidArgument,
  InvalidPart,
  InvalidPartOrder,
  NoSpace,
  NoSuchBucket,
  NoSuchObject,
  NoSuchUpload,
  NoSuitablePool,
  NotEmpty,
  PartTooSmall,
  ObjectDataLost,
  PoolOffline,
  MetadataFailed,
  TooLarge,
  isNoSpaceErrno,
} from '../errors.js';
import { DamagedPartRecord, LostPart, PreconditionFailed, UnreadablePart } from '../objects/store.js';
import { XML_HEADER, tag } from './xml.js';

export class S3Error extends Error {
  override name = 'S3Error';
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    /** Extra elements for the error document (e.g. Key, BucketName, Condition). */
    readonly extra: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface ErrorContext {
  bucket?: string;
  key?: string;
}

export function toS3Error(err: unknown, ctx: ErrorContext): S3Error {
  if (err instanceof S3Error) return err;
  const e = err as Error;
  const msg = e?.message ?? String(err);
  const withBucket: Record<string, string> = ctx.bucket !== undefined ? { BucketName: ctx.bucket } : {};
  if (err instanceof NoSuchBucket) return new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist', withBucket);
  if (err instanceof NoSuchObject) return new S3Error('NoSuchKey', 404, 'The specified key does not exist.', ctx.key !== undefined ? { Key: ctx.key } : {});
  if (err instanceof PreconditionFailed) return new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold', { Condition: err.condition });
  if (err instanceof NoSuchUpload) return new S3Error('NoSuchUpload', 404, 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.');
  if (err instanceof AlreadyExists) return new S3Error('BucketAlreadyOwnedByYou', 409, 'Your previous request to create the named bucket succeeded and you already own it.', withBucket);
  if (err instanceof NotEmpty) return new S3Error('BucketNotEmpty', 409, 'The bucket you tried to delete is not empty', withBucket);
  if (err instanceof DigestMismatch) return new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.');
  if (err instanceof IncompleteBody) return new S3Error('IncompleteBody', 400, 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
  if (err instanceof TooLarge) return new S3Error('EntityTooLarge', 400, msg);
  if (err instanceof PartTooSmall) return new S3Error('EntityTooSmall', 400, 'Your proposed upload is smaller than the minimum allowed object size.');
  if (err instanceof InvalidPartOrder) return new S3Error('InvalidPartOrder', 400, 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
  // Before InvalidPart (their superclass): say which part and what is wrong with it (a damaged
  // record; data lost with a replaced disk), so the client uploads that part again.
  if (err instanceof DamagedPartRecord || err instanceof LostPart || err instanceof UnreadablePart) return new S3Error('InvalidPart', 400, msg, { UploadId: err.uploadId, PartNumber: String(err.partNumber) });
  if (err instanceof InvalidPart) return new S3Error('InvalidPart', 400, 'One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part\'s entity tag.');
  if (err instanceof InvalidArgument) return new S3Error('InvalidArgument', 400, msg);
  if (err instanceof NoSpace) return new S3Error('ServiceUnavailable', 503, `no space: ${msg}`);
  // A pool that fills under a write (the pool's check saw room; the disk's own errno at the
  // write): the same answer as NoSpace, not a 500 (the aws cli's retries of a 500 only refill
  // the disk). The errno's message names host paths: the log has it, the client the cause.
  if (isNoSpaceErrno(err)) return new S3Error('ServiceUnavailable', 503, 'no space: a storage pool is full (ENOSPC); the server log has the details');
  // PoolOffline's message names the host's directories and files: the client is told the pool (the server logs the message).
  if (err instanceof PoolOffline) return new S3Error('ServiceUnavailable', 503, `${/^pool ([^\s:]+)/.exec(msg)?.[0] ?? 'a storage pool'} is unavailable (offline, or its directory missing or replaced); the server log has the details`);
  if (err instanceof NoSuitablePool || err instanceof MetadataFailed) return new S3Error('ServiceUnavailable', 503, msg);
  // Said as it is (not "damaged", not retryable): the data went with a dead disk; DELETE removes the object.
  if (err instanceof ObjectDataLost) return new S3Error('InternalError', 500, msg);
  if (err instanceof Corrupt || err instanceof InsufficientShards) return new S3Error('InternalError', 500, `stored data is damaged: ${msg}`);
  return new S3Error('InternalError', 500, 'We encountered an internal error. Please try again.');
}

export function errorXml(err: S3Error, resource: string, requestId: string): string {
  let extra = '';
  for (const [k, v] of Object.entries(err.extra)) extra += tag(k, v);
  return `${XML_HEADER}<Error>${tag('Code', err.code)}${tag('Message', err.message)}${extra}${tag('Resource', resource)}${tag('RequestId', requestId)}</Error>`;
}
