// The S3 REST front end (path-style): routing, SigV4 on every request, S3
// headers and XML, streaming bodies both ways. Storage lives behind
// ObjectStore; every error leaves through toS3Error/errorXml.
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { log } from '../../log.js';
import { nativeAddonPath } from '../../native-addon.js';
import type { PieceSink } from '../objects/hot-segments.js';
import { MAX_PART_NUMBER, MAX_PUT_BYTES, assertObjectDataKept, lostPools, partDamage, type BucketTier, type DeleteCondition, type ContentHeaders, type ListedUpload, type ObjectRecord, type ObjectStore, type PartRecord, type Tag, type WriteCondition } from '../objects/store.js';
import type { AccessKey } from './credentials.js';
import { S3Error, errorXml, toS3Error } from './errors.js';
import { hasBodyChecksum, idleBounded, missingDecodedLength, parseQuery, splitTarget, uriDecode, verifiedBody, verifyRequest, awsUriEncode, type PayloadMode } from './sigv4.js';
import { BUCKET_CONFIGS, UNSUPPORTED, aclXml, checkAclBody, checkAclHeaders, refuseConfig } from './subresources.js';
import { taggingXml, tagsFromHeader, tagsFromXml } from './tagging.js';
import { S3_NS, XML_HEADER, XmlLimitError, XmlPushParser, XmlSyntaxError, child, children, parseXml, tag, type XmlElement } from './xml.js';

export interface S3ServerOptions {
  store: ObjectStore;
  keys: AccessKey[];
  /** A request whose Host is `<bucket>.<domain>` names its bucket there (virtual-host style). */
  domains?: string[];
  /** A body read that waits this long without a byte fails with RequestTimeout (default DEFAULT_BODY_IDLE_TIMEOUT_MS). */
  bodyIdleTimeoutMs?: number;
  /** A response the client accepts no byte of for this long is cut (default DEFAULT_SEND_IDLE_TIMEOUT_MS). */
  sendIdleTimeoutMs?: number;
  /** Totals the server counts into (the frontend exports them as metrics). */
  stats?: S3ServerStats;
}

/** Connections the server closed because their client went idle. */
export interface S3ServerStats {
  /** Request bodies that stalled (RequestTimeout). */
  requestIdleTimeouts: number;
  /** Responses the client stopped reading. */
  responseIdleTimeouts: number;
}

/**
 * S3 closes a connection idle for about 20 s mid-request (RequestTimeout). A
 * stalled body otherwise holds its socket, its parse state (up to 8 MiB of a
 * DeleteObjects body) or its half-written segment for REQUEST_TIMEOUT_MS.
 */
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 20_000;
/**
 * A client that stops reading a GET response holds its socket, the object
 * version it pinned and a 4 MiB read block until the 1 h request timeout;
 * nginx's send_timeout (60 s of no progress) is the model.
 */
export const DEFAULT_SEND_IDLE_TIMEOUT_MS = 60_000;

const MAX_DELETE_OBJECTS = 1000;
/**
 * The largest Object entry of a legal DeleteObjects body: a 1024-byte key
 * with every byte written as a 6-character reference (&quot;) is 6144, a
 * VersionId at most 1024 (S3's bound), ETag, LastModifiedTime and Size (the
 * conditional delete fields) under 100, tags 112, indentation: under 7.5 KiB.
 */
const DELETE_OBJECT_BUDGET_BYTES = 8 * 1024;
const MAX_DELETE_BODY_BYTES = MAX_DELETE_OBJECTS * DELETE_OBJECT_BUDGET_BYTES + 4096;
/** Delete, Quiet, and per Object: Key, VersionId, ETag, LastModifiedTime, Size. */
const MAX_DELETE_ELEMENTS = 2 + MAX_DELETE_OBJECTS * 6;
/**
 * The largest Part entry of a legal CompleteMultipartUpload body: PartNumber,
 * the quoted ETag with its quotes as references, all five checksums
 * (CRC32, CRC32C, CRC64NVME, SHA1, SHA256) and indentation are about 430 bytes.
 */
const COMPLETE_PART_BUDGET_BYTES = 512;
const MAX_COMPLETE_BODY_BYTES = MAX_PART_NUMBER * COMPLETE_PART_BUDGET_BYTES + 4096;
/** CompleteMultipartUpload, and per Part: Part, PartNumber, ETag and five checksums. */
const MAX_COMPLETE_ELEMENTS = 1 + MAX_PART_NUMBER * 8;
/**
 * A streamed XML body is parsed in slices of this many bytes, each followed
 * by a turn of the event loop. Parsed in one run, a 6 MiB DeleteObjects body
 * of 1000 keys written as references took 170-340 ms and a 10000-part
 * CompleteMultipartUpload 80-200 ms, holding every other client that long;
 * a 16 KiB slice parses in 0.1-0.4 ms (median; 64 KiB: 0.6-1.2 ms).
 */
const XML_PARSE_SLICE_BYTES = 16 * 1024;
/**
 * ... and a turn every this many body pieces: an aws-chunked body in one-byte
 * chunks decodes ~1.5 us a chunk, so a slice's 16384 chunks held the loop 30-50 ms.
 */
const XML_PIECES_PER_TURN = 1024;
/**
 * Tagging, ACL, bucket-configuration and CreateBucket bodies: the largest valid one (50
 * bucket tags of 128 + 256 characters written as character references,
 * ~200 KB; 100 ACL grants, ~30 KB) fits. The parser runs on the event loop:
 * four 4 MiB bodies of empty <Tag/> held every other client 1-1.8 s.
 */
const MAX_SUBRESOURCE_BODY_BYTES = 256 * 1024;
const MAX_USER_META_BYTES = 2048;
const MAX_LIST_KEYS = 1000;
/** GetObjectAttributes: x-amz-max-parts default and cap (as ListParts). */
const MAX_ATTRIBUTE_PARTS = 1000;
/** x-amz-object-attributes values (GetObjectAttributes), in S3's response order. */
const OBJECT_ATTRIBUTES: readonly string[] = ['ETag', 'Checksum', 'ObjectParts', 'StorageClass', 'ObjectSize'];
/** A slow 5 GiB single PUT still finishes; a stalled one does not hold a socket forever. */
const REQUEST_TIMEOUT_MS = 60 * 60 * 1000;
const BUCKET_NAME_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const CONTENT_HEADERS = ['content-type', 'content-encoding', 'content-disposition', 'content-language', 'cache-control', 'expires'] as const;
const RESPONSE_OVERRIDES: Record<string, string> = {
  'response-content-type': 'content-type',
  'response-content-language': 'content-language',
  'response-expires': 'expires',
  'response-cache-control': 'cache-control',
  'response-content-disposition': 'content-disposition',
  'response-content-encoding': 'content-encoding',
};
/**
 * Query parameters that name a subresource: a request carrying one is routed
 * by it (or refused), never mistaken for a listing, a bucket create or delete.
 */
const SUBRESOURCES: readonly string[] = ['tagging', 'acl', 'versions', 'location', 'uploads', 'delete', ...Object.keys(BUCKET_CONFIGS), ...Object.keys(UNSUPPORTED)];
/**
 * What a PUT, POST or DELETE on an object without a subresource (or with
 * ?uploads) may carry: the multipart parameters, versionId (only "null"
 * exists), aws-sdk-js v3's x-id, and X-Amz-* (presigned, or headers hoisted
 * into the query), any case. S3 ignores other names, but then a subresource
 * in another case or misspelt (?Tagging, ?taging) is a PutObject with the
 * subresource's body, a DeleteObject, a DeleteBucket or a CreateBucket
 * (test/review-s3-subresource-routing): such a request is refused instead.
 */
const OBJECT_MUTATION_PARAMS: ReadonlySet<string> = new Set(['uploads', 'uploadId', 'partNumber', 'versionId', 'x-id']);
/** On a bucket the multipart and version parameters mean nothing: DELETE /bucket?uploadId=... (a key lost by the client) is not a DeleteBucket. */
const BUCKET_MUTATION_PARAMS: ReadonlySet<string> = new Set(['uploads', 'x-id']);
const isMutation = (method: string | undefined) => method === 'PUT' || method === 'POST' || method === 'DELETE';
/**
 * aws-sdk-js v2's SigV4 presigner (signers/v4.js updateForPresigned) copies these
 * request headers into the query of the URL, signed there: a getSignedUrl
 * ('putObject', { ContentType }) URL carries Content-Type=..., and S3 takes it.
 * Not subresources (exact case, and only beside X-Amz-Algorithm); not read as
 * headers either: the request's own headers are (docs/s3.md).
 */
const PRESIGNED_V2_QUERY_HEADERS: ReadonlySet<string> = new Set(['Content-Type', 'Content-MD5', 'Cache-Control']);

/** A query parameter a mutation does not act on: refused rather than ignored (see OBJECT_MUTATION_PARAMS). */
function checkMutationQuery(method: string | undefined, query: ReadonlyMap<string, string>, allowed: ReadonlySet<string>): void {
  if (!isMutation(method)) return;
  for (const name of query.keys()) {
    if (allowed.has(name) || /^x-amz-/i.test(name)) continue;
    if (PRESIGNED_V2_QUERY_HEADERS.has(name) && query.has('X-Amz-Algorithm')) continue;
    throw new S3Error('InvalidArgument', 400, `CoucheStor does not act on the query parameter ${JSON.stringify(name)} of a ${method}: refused rather than ignored, so that a misspelt subresource never writes or deletes data (subresource names are case-sensitive).`, { ArgumentName: name });
  }
}

/**
 * Without versioning every key has one version, VersionId "null" (as
 * ListObjectVersions answers): any other id names a version that never
 * existed, and is refused rather than served, overwritten or deleted as the
 * current one.
 */
function checkVersionId(versionId: string | undefined, argumentName: string): void {
  if (versionId !== undefined && versionId !== 'null') throw new S3Error('InvalidArgument', 400, 'Invalid version id specified', { ArgumentName: argumentName, ArgumentValue: versionId });
}
/**
 * Refuses a conditional header CoucheStor does not evaluate on `operation`:
 * ignored, it would write or delete unconditionally. If-None-Match on a
 * DeleteObject (S3 defines none), and the two x-amz-if-match-* headers, which
 * condition only deletes, on a write.
 */
function refuseConditionalHeaders(raw: IncomingMessage, operation: string, headers: readonly string[]): void {
  const h = headers.find((n) => raw.headers[n] !== undefined);
  if (h !== undefined) throw new S3Error('NotImplemented', 501, `Conditional requests (${h} on ${operation}) are not supported by CoucheStor; nothing was written or deleted.`);
}
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const WEEKDAY = 'Mon|Tue|Wed|Thu|Fri|Sat|Sun';
const IMF_DATE = new RegExp(`^(?:${WEEKDAY}), (\\d{1,2}) (${MONTH}) (\\d{4}) (\\d\\d):(\\d\\d):(\\d\\d) (GMT|UTC|[+-]\\d{4})$`);
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d\\d)-(${MONTH})-(\\d\\d) (\\d\\d):(\\d\\d):(\\d\\d) GMT$`);
const ASCTIME_DATE = new RegExp(`^(?:${WEEKDAY}) (${MONTH}) ([ \\d]\\d) (\\d\\d):(\\d\\d):(\\d\\d) (\\d{4})$`);
const ISO_TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|[+-]\d\d:?\d\d)$/i;
/** A zone (GMT, UTC, Z, +hhmm, -hh:mm) as minutes east of UTC; NaN for hours over 23 or minutes over 59. */
function zoneOffsetMinutes(zone: string): number {
  const z = zone.replace(':', '');
  if (z[0] !== '+' && z[0] !== '-') return 0;
  const [hours, minutes] = [Number(z.slice(1, 3)), Number(z.slice(3, 5))];
  if (hours > 23 || minutes > 59) return NaN;
  return (z[0] === '-' ? -1 : 1) * (hours * 60 + minutes);
}
/**
 * A conditional delete's time (x-amz-if-match-last-modified-time,
 * x-amz-if-match-initiated-time, DeleteObjects' LastModifiedTime) or a read's
 * (If-Modified-Since, If-Unmodified-Since and their copy-source forms) in ms since
 * the epoch, or undefined when `text` is not one: an HTTP-date (RFC 9110
 * 5.6.7: IMF-fixdate, as the SDKs and the aws cli send it, also with a 1-digit
 * day or a numeric zone as RFC 1123 writes it; the obsolete RFC 850 and
 * asctime forms), or ISO 8601 with a zone (as S3's listings give times). Not
 * Date.parse: V8 reads "1", "12", "11/28/2026" or a date with junk after it
 * as some date, so a malformed value was judged as another time (412) where
 * it must be refused (400), and a time with no zone is read in the server's.
 */
function parseTimestampMs(text: string): number | undefined {
  const t = text.trim();
  let y: number, mo: number, d: number, h: number, mi: number, s: number;
  let fractionMs = 0;
  let zoneMinutes = 0;
  let m: RegExpExecArray | null;
  const month = (name: string) => MONTHS.indexOf(name);
  if ((m = IMF_DATE.exec(t))) {
    [d, mo, y, h, mi, s] = [Number(m[1]), month(m[2]!), Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])];
    zoneMinutes = zoneOffsetMinutes(m[7]!);
  } else if ((m = RFC850_DATE.exec(t))) {
    // A 2-digit year: the century that puts it at most 50 years ahead (RFC 9110 5.6.7).
    const yy = Number(m[3]);
    const now = new Date().getUTCFullYear();
    y = Math.floor(now / 100) * 100 + yy;
    if (y > now + 50) y -= 100;
    [d, mo, h, mi, s] = [Number(m[1]), month(m[2]!), Number(m[4]), Number(m[5]), Number(m[6])];
  } else if ((m = ASCTIME_DATE.exec(t))) {
    [mo, d, h, mi, s, y] = [month(m[1]!), Number(m[2]!.trim()), Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])];
  } else if ((m = ISO_TIME.exec(t))) {
    [y, mo, d, h, mi, s] = [Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])];
    if (m[7] !== undefined) fractionMs = Math.floor(Number(`0${m[7]}`) * 1000);
    zoneMinutes = zoneOffsetMinutes(m[8]!);
  } else {
    return undefined;
  }
  // Fields out of range (Feb 30, 24:00, a 99 minute offset) are refused, not rolled over.
  const at = new Date(Date.UTC(y, mo, d, h, mi, s));
  if (y < 1000 || at.getUTCFullYear() !== y || at.getUTCMonth() !== mo || at.getUTCDate() !== d || at.getUTCHours() !== h || at.getUTCMinutes() !== mi || at.getUTCSeconds() !== s) return undefined;
  if (Number.isNaN(zoneMinutes)) return undefined;
  return at.getTime() + fractionMs - zoneMinutes * 60_000;
}
/**
 * An If-Match / If-None-Match value or DeleteObjects ETag: a comma-separated
 * list, quoted or bare, lowercase; a bare `*` alone is the wildcard (any
 * current object). A quoted `"*"` is an entity tag whose value is `*` (RFC 9110
 * 8.8.3: `*` is the wildcard only unquoted), which no object has: it is kept
 * quoted, so it never equals an ETag nor the wildcard. A `*` inside a list
 * (`*, "x"`) is not the wildcard either (13.1.1: `"*" / #entity-tag`, the
 * wildcard only alone): it is kept as `"*"`, matching nothing, and the list's
 * other tags are compared as usual. A weak tag (`W/"x"`)
 * matches nothing under the strong comparison If-Match uses (13.1.1, 8.8.3.2:
 * kept with its W/, which no ETag has); under the weak comparison of
 * If-None-Match (13.1.2, `weak`) its W/ is dropped.
 */
const etagList = (v: string, weak = false) => {
  const items = v.split(',');
  const listed = items.filter((e) => e.trim() !== '').length;
  return items.map((e) => {
    const s = e.trim();
    if (!weak && s.startsWith('W/')) return s;
    const t = s.replace(/^W\//, '');
    if (t === '*' && listed > 1) return '"*"';
    return t === '"*"' ? t : t.replace(/"/g, '').toLowerCase();
  });
};
/**
 * A conditional delete's size and time values (x-amz-if-match-size,
 * x-amz-if-match-last-modified-time; DeleteObjects' Size, LastModifiedTime),
 * or `bad(name)` thrown for one that is not a byte count or a date (HTTP or ISO 8601).
 */
function deleteConditionValues(etag: string | undefined, size: string | undefined, time: string | undefined, bad: (what: string) => Error): DeleteCondition {
  const cond: DeleteCondition = {};
  if (etag !== undefined) cond.etags = etagList(etag);
  if (size !== undefined) {
    if (!/^\d{1,16}$/.test(size.trim())) throw bad('size');
    cond.sizeBytes = Number(size.trim());
  }
  if (time !== undefined) {
    const ms = parseTimestampMs(time);
    if (ms === undefined) throw bad('time');
    cond.lastModifiedMs = ms;
  }
  return cond;
}
/**
 * DeleteObject's conditions (S3 since 2025: If-Match, x-amz-if-match-size,
 * x-amz-if-match-last-modified-time; AWS takes the last two on directory
 * buckets only, CoucheStor on every bucket), judged by the store in the
 * transaction that deletes (store.ts DeleteCondition). If-None-Match: 501.
 */
function deleteCondition(raw: IncomingMessage): DeleteCondition | undefined {
  refuseConditionalHeaders(raw, 'DeleteObject', ['if-none-match']);
  const etag = header(raw, 'if-match');
  const size = header(raw, 'x-amz-if-match-size');
  const time = header(raw, 'x-amz-if-match-last-modified-time');
  if (etag === undefined && size === undefined && time === undefined) return undefined;
  return deleteConditionValues(etag, size, time, (what) => {
    const name = what === 'size' ? 'x-amz-if-match-size' : 'x-amz-if-match-last-modified-time';
    return new S3Error('InvalidArgument', 400, `${name} must be ${what === 'size' ? 'a size in bytes' : 'a date (HTTP date or ISO 8601)'}`, { ArgumentName: name, ArgumentValue: header(raw, name)! });
  });
}
/**
 * AbortMultipartUpload's x-amz-if-match-initiated-time (AWS: directory
 * buckets; CoucheStor: every bucket), judged by the store in the transaction
 * that drops the upload. If-Match / If-None-Match (S3 defines none here): 501.
 */
function abortCondition(raw: IncomingMessage): number | undefined {
  refuseConditionalHeaders(raw, 'AbortMultipartUpload', ['if-match', 'if-none-match', 'x-amz-if-match-size', 'x-amz-if-match-last-modified-time']);
  const v = header(raw, 'x-amz-if-match-initiated-time');
  if (v === undefined) return undefined;
  const ms = parseTimestampMs(v);
  if (ms === undefined) throw new S3Error('InvalidArgument', 400, 'x-amz-if-match-initiated-time must be a date (HTTP date or ISO 8601)', { ArgumentName: 'x-amz-if-match-initiated-time', ArgumentValue: v });
  return ms;
}
/**
 * The storage classes AWS S3 takes in x-amz-storage-class (PutObject,
 * CopyObject, CreateMultipartUpload). CoucheStor records the class with the
 * object and gives it back (HEAD/GET for any but STANDARD, the listings); it
 * picks no tier: that is the bucket's (x-couchestor-tier), and every class is
 * read at once, with no restore.
 */
const STORAGE_CLASSES: ReadonlySet<string> = new Set(['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'OUTPOSTS', 'EXPRESS_ONEZONE', 'SNOW']);
/** x-amz-storage-class of a write: absent is undefined (STANDARD); a class S3 does not define is 400 InvalidStorageClass, nothing written. */
function storageClassOf(raw: IncomingMessage): string | undefined {
  const v = header(raw, 'x-amz-storage-class');
  if (v === undefined) return undefined;
  if (!STORAGE_CLASSES.has(v)) throw new S3Error('InvalidStorageClass', 400, 'The storage class you specified is not valid', { StorageClassRequested: v });
  return v;
}
/** A record's storage class as answered: STANDARD when none is stored (or the field is damaged). */
const classOf = (rec: { storageClass?: unknown }): string => (typeof rec.storageClass === 'string' ? rec.storageClass : 'STANDARD');
const notImplementedHeader = (h: string, why: string) => new S3Error('NotImplemented', 501, `A header you provided implies functionality that is not implemented: ${why}`, { Header: h });
/**
 * The conditional write of a PutObject, CopyObject or CompleteMultipartUpload
 * (S3 since 2024), judged by the store in the transaction that installs the
 * object (store.ts WriteCondition). As S3: If-None-Match takes only `*`
 * (create only; exists: 412), If-Match an ETag list (another ETag: 412, no
 * object: 404 NoSuchKey); If-None-Match with an ETag, or both headers at
 * once, is 501 NotImplemented. Nothing is ever written unconditionally in
 * place of a condition.
 */
function writeCondition(raw: IncomingMessage, operation: string): WriteCondition | undefined {
  refuseConditionalHeaders(raw, operation, ['x-amz-if-match-last-modified-time', 'x-amz-if-match-size']);
  const ifMatch = header(raw, 'if-match');
  const ifNoneMatch = header(raw, 'if-none-match');
  if (ifMatch !== undefined && ifNoneMatch !== undefined) throw notImplementedHeader('If-Match', `${operation} with both If-Match and If-None-Match`);
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== '*') throw notImplementedHeader('If-None-Match', `${operation} with If-None-Match other than *`);
    return { kind: 'absent' };
  }
  if (ifMatch !== undefined) return { kind: 'etagIn', etags: etagList(ifMatch) };
  return undefined;
}
/** Listings served by listObjects: ListObjects (v1), ListObjectsV2, ListObjectVersions. */
type ListingKind = 'v1' | 'v2' | 'versions';
const OWNER_DISPLAY_NAME = 'couchestor';
const methodNotAllowed = () => new S3Error('MethodNotAllowed', 405, 'The specified method is not allowed against this resource.');

interface Ctx {
  req: FastifyRequest;
  reply: FastifyReply;
  raw: IncomingMessage;
  bucket: string | undefined;
  key: string | undefined;
  query: Map<string, string>;
  payload: PayloadMode;
  accessKeyId: string;
  bodyIdleTimeoutMs: number;
  sendIdleTimeoutMs: number;
  stats: S3ServerStats;
}

/** The request body, decoded and verified for its payload mode, failing when the client stalls. */
function requestBody(ctx: Ctx): AsyncGenerator<Buffer> {
  return verifiedBody(idleBounded(ctx.raw, ctx.bodyIdleTimeoutMs), ctx.payload, ctx.raw.headers);
}

/**
 * Reads a refused PUT's body to its end and drops it, checked and bounded as
 * a stored one (chunk signatures, idle timeout, MAX_PUT_BYTES), so the
 * refusal is answered on a connection that stays usable.
 */
async function discardBody(ctx: Ctx): Promise<void> {
  let bytes = 0;
  for await (const piece of requestBody(ctx)) {
    bytes += piece.length;
    if (bytes > MAX_PUT_BYTES) throw new S3Error('EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed size');
  }
}

const etagHeader = (etag: string) => `"${etag}"`;
/**
 * Text as a header value: characters outside printable ASCII (a key's, say) percent-encoded as
 * UTF-8, and '%' itself, so that decodeURIComponent gives the text back (a bare "100%" made it throw).
 */
const headerSafe = (text: string) =>
  text.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => {
    try {
      return encodeURIComponent(c);
    } catch {
      return '?'; // a lone surrogate has no UTF-8
    }
  });
const iso = (ms: number) => new Date(ms).toISOString();
const httpDate = (ms: number) => new Date(ms).toUTCString();

function header(raw: IncomingMessage, name: string): string | undefined {
  const v = raw.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** The client hung up mid-body: routine, not a storage failure. */
class ClientGone extends Error {
  override name = 'ClientGone';
}

/**
 * tcpBytesAcked of native/fs_seek.c (getsockopt TCP_INFO's tcpi_bytes_acked:
 * the bytes the client acknowledged on the connection so far, only growing),
 * or undefined when the addon is not built or predates the function: the send
 * idle check then falls back to the libuv write queue alone. Loaded here with
 * its own guard rather than through volumes/seek-data.ts, which throws when
 * the addon is missing: serving S3 must not depend on it.
 */
const tcpBytesAckedNative: ((fd: number) => number) | undefined = (() => {
  const found = nativeAddonPath('fs_seek');
  if (found === null) return undefined;
  try {
    const addon = createRequire(import.meta.url)(found) as { tcpBytesAcked?: unknown };
    return typeof addon.tcpBytesAcked === 'function' ? (addon.tcpBytesAcked as (fd: number) => number) : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Bytes the client of `socket` has acknowledged since the connection began, or
 * -1 when that cannot be known (no addon, not Linux >= 4.1, no descriptor,
 * socket closed). The libuv write queue alone cannot tell a slow reader from a
 * stalled one: the kernel takes bytes from it only once a third of the send
 * buffer (autotuned up to tcp_wmem's 4 MiB) is free, so a client reading
 * steadily at under ~23 KiB/s left it unchanged for the 60 s timeout and was
 * cut. This count grows as the client reads; a stalled client's (zero window)
 * stays put. One getsockopt on the event loop (~0.8 us measured), where
 * /proc/net/tcp cost ~4 ms per read and formatted every TCP socket of the node.
 */
function socketAckedBytes(socket: Socket | null): number {
  if (tcpBytesAckedNative === undefined) return -1;
  const fd = (socket as (Socket & { _handle?: { fd?: number } | null }) | null)?._handle?.fd;
  if (fd === undefined || fd < 0) return -1;
  try {
    return tcpBytesAckedNative(fd);
  } catch {
    // EBADF / ENOTSOCK / EOPNOTSUPP: closed under us or not TCP; the libuv queue decides.
    return -1;
  }
}

/**
 * Writes an object body straight to the socket as PieceSink: each piece's
 * promise settles when its bytes were handed to the kernel (the store then
 * reuses the buffer), the last piece ends the response. The response head
 * goes out with the first piece, so an error before it is still an S3 error.
 */
class ResponseSink {
  started = false;
  private readonly res: ServerResponse;
  /** Checks a write in flight every sendIdleTimeoutMs (refreshed, one timer per response). */
  private idleTimer: NodeJS.Timeout | undefined;
  private writing = false;
  private queuedBytesAtCheck = -1;
  /** The client's acknowledged bytes (socketAckedBytes) when the piece was queued or at the last check; -1: unknown. */
  private ackedBytesAtCheck = -1;
  sentBytes = 0;

  /** `onIdle` runs once if the client accepted no byte for sendIdleTimeoutMs; the connection is then destroyed. */
  constructor(
    private readonly reply: FastifyReply,
    private readonly sendIdleTimeoutMs: number,
    private readonly onIdle: (sentBytes: number) => void,
  ) {
    this.res = reply.raw;
  }

  /**
   * Progress is a piece's write completing, the socket's libuv write queue
   * shrinking, or the client acknowledging bytes (socketAckedBytes):
   * a 4 MiB piece to a slow (56 KiB/s) but reading client takes over a minute
   * to complete, and must not count as idle. writeQueueSize is
   * libuv's count of bytes queued on the stream handle (an internal of
   * net.Socket, shrinking as the kernel takes bytes: checked by
   * s3-response-idle-timeout's slow reader); when a handle has none, only
   * completed writes count.
   */
  private queuedBytes(): number {
    const handle = (this.res.socket as (Socket & { _handle?: { writeQueueSize?: number } }) | null)?._handle;
    return handle?.writeQueueSize ?? -1;
  }

  private checkIdle = () => {
    // Between pieces the daemon is reading the next one: not the client's time.
    if (!this.writing) return;
    const queued = this.queuedBytes();
    // Nothing queued: the kernel took every byte and the write's callback is on its way (not the client's time).
    const libuvProgress = queued === 0 || (queued > 0 && queued !== this.queuedBytesAtCheck);
    this.queuedBytesAtCheck = queued;
    // Sampled when the piece was queued too (armIdle), so the first check already has a base:
    // a stalled client is cut one period after its piece was queued, two at most after its last progress.
    const acked = socketAckedBytes(this.res.socket);
    const kernelProgress = acked >= 0 && this.ackedBytesAtCheck >= 0 && acked !== this.ackedBytesAtCheck;
    this.ackedBytesAtCheck = acked;
    if (libuvProgress || kernelProgress) {
      this.idleTimer?.refresh();
      return;
    }
    this.onIdle(this.sentBytes);
    this.res.destroy(new ClientGone(`the client read nothing of the response for ${this.sendIdleTimeoutMs} ms`));
  };

  private armIdle(): void {
    this.queuedBytesAtCheck = this.queuedBytes();
    this.ackedBytesAtCheck = socketAckedBytes(this.res.socket);
    if (this.idleTimer === undefined) {
      this.idleTimer = setTimeout(this.checkIdle, this.sendIdleTimeoutMs).unref();
      this.res.once('close', () => clearTimeout(this.idleTimer));
    } else {
      this.idleTimer.refresh();
    }
  }

  readonly sink: PieceSink = (piece, last) =>
    new Promise<void>((resolve, reject) => {
      const res = this.res;
      if (!this.started) {
        this.started = true;
        this.reply.hijack();
        res.writeHead(this.reply.statusCode, this.reply.getHeaders() as OutgoingHttpHeaders);
      }
      let settled = false;
      // A write to a connection that is already gone never calls back: 'close' settles it.
      const onClose = () => done(new ClientGone('client connection closed during the response'));
      const done = (err?: Error | null) => {
        if (settled) return;
        settled = true;
        this.writing = false;
        res.off('close', onClose);
        // A failed write on the response socket is the connection going away.
        if (err) return reject(err instanceof ClientGone ? err : new ClientGone(`response write failed: ${err.message}`));
        this.sentBytes += piece.length;
        if (last) clearTimeout(this.idleTimer);
        resolve();
      };
      res.on('close', onClose);
      this.writing = true;
      if (last) res.end(piece, () => done());
      else res.write(piece, done);
      // After the write is queued, so that the first check compares against this piece's bytes.
      if (this.writing) this.armIdle();
    });
}

function sendXml(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply.code(status).header('content-type', 'application/xml').send(body);
}

function validateBucketName(name: string): void {
  if (!BUCKET_NAME_RE.test(name) || name.includes('..') || /^\d+\.\d+\.\d+\.\d+$/.test(name)) {
    throw new S3Error('InvalidBucketName', 400, 'The specified bucket is not valid.', { BucketName: name });
  }
}

function checkKey(key: string): void {
  if (Buffer.byteLength(key, 'utf8') > 1024) throw new S3Error('KeyTooLongError', 400, 'Your key is too long');
}

function parseIntParam(v: string | undefined, name: string, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d{1,10}$/.test(v)) throw new S3Error('InvalidArgument', 400, `${name} must be a non-negative integer`, { ArgumentName: name, ArgumentValue: v });
  return Math.min(Number(v), max);
}

function contentMd5(raw: IncomingMessage): Buffer | undefined {
  const v = header(raw, 'content-md5');
  if (v === undefined) return undefined;
  const b = Buffer.from(v, 'base64');
  if (b.length !== 16 || b.toString('base64') !== v.trim()) throw new S3Error('InvalidDigest', 400, 'The Content-MD5 you specified was invalid.');
  return b;
}

/** Body length for the store: the decoded length for aws-chunked, else Content-Length. */
function expectedLength(raw: IncomingMessage, payload: PayloadMode): number | undefined {
  const v = payload.kind === 'chunked' ? header(raw, 'x-amz-decoded-content-length') : header(raw, 'content-length');
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v)) throw new S3Error('InvalidArgument', 400, 'bad content length');
  return Number(v);
}

function objectHeadersFrom(raw: IncomingMessage): { contentHeaders: ContentHeaders; userMeta: Record<string, string> } {
  const contentHeaders: ContentHeaders = {};
  for (const h of CONTENT_HEADERS) {
    let v = header(raw, h);
    if (h === 'content-encoding' && v !== undefined) {
      // aws-chunked is transport framing, not a property of the object.
      v = v.split(',').map((s) => s.trim()).filter((s) => s && s !== 'aws-chunked').join(',');
      if (!v) continue;
    }
    if (v !== undefined) contentHeaders[h] = v;
  }
  const userMeta: Record<string, string> = {};
  let metaBytes = 0;
  for (const [name, value] of Object.entries(raw.headers)) {
    if (!name.startsWith('x-amz-meta-') || value === undefined) continue;
    const v = Array.isArray(value) ? value.join(',') : value;
    const n = name.slice(11);
    userMeta[n] = v;
    metaBytes += n.length + v.length;
  }
  if (metaBytes > MAX_USER_META_BYTES) throw new S3Error('MetadataTooLarge', 400, `Your metadata headers exceed the maximum allowed metadata size (${MAX_USER_META_BYTES} bytes).`);
  return { contentHeaders, userMeta };
}

function setObjectHeaders(reply: FastifyReply, rec: ObjectRecord, query: Map<string, string>): void {
  reply.header('etag', etagHeader(rec.etag));
  reply.header('last-modified', httpDate(rec.lastModifiedMs));
  reply.header('accept-ranges', 'bytes');
  reply.header('content-type', rec.contentHeaders['content-type'] ?? 'binary/octet-stream');
  for (const [h, v] of Object.entries(rec.contentHeaders)) if (h !== 'content-type') reply.header(h, v);
  for (const [n, v] of Object.entries(rec.userMeta)) reply.header(`x-amz-meta-${n}`, v);
  if (rec.segments.length > 1 || rec.etag.includes('-')) reply.header('x-amz-mp-parts-count', String(rec.segments.length));
  if (rec.tags !== undefined && rec.tags.length > 0) reply.header('x-amz-tagging-count', String(rec.tags.length));
  // As S3: sent for every class but STANDARD.
  if (classOf(rec) !== 'STANDARD') reply.header('x-amz-storage-class', classOf(rec));
  for (const [q, h] of Object.entries(RESPONSE_OVERRIDES)) {
    const v = query.get(q);
    if (v !== undefined) reply.header(h, v);
  }
}

/** `list` (If-Match: strong comparison; If-None-Match: `weak`) names `etag` or is the wildcard. */
function etagMatches(list: string, etag: string, weak = false): boolean {
  return etagList(list, weak).some((t) => t === '*' || t === etag);
}

/**
 * RFC 9110 13.1 as S3 applies it: 412 for If-Match/If-Unmodified-Since, 304
 * for If-None-Match/If-Modified-Since. A date that is not an HTTP-date (or
 * ISO 8601 with a zone, parseTimestampMs) makes its condition ignored
 * (13.1.3, 13.1.4), not read as whatever Date.parse makes of it ("1" as 2001).
 */
function checkPreconditions(get: (h: string) => string | undefined, rec: ObjectRecord, notModifiedStatus: number): void {
  const lastModifiedS = Math.floor(rec.lastModifiedMs / 1000);
  const ifMatch = get('if-match');
  const ifUnmodified = get('if-unmodified-since');
  const ifNoneMatch = get('if-none-match');
  const ifModified = get('if-modified-since');
  if (ifMatch !== undefined) {
    if (!etagMatches(ifMatch, rec.etag)) throw new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
  } else if (ifUnmodified !== undefined) {
    const t = parseTimestampMs(ifUnmodified);
    if (t !== undefined && lastModifiedS > Math.floor(t / 1000)) throw new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Unmodified-Since' });
  }
  if (ifNoneMatch !== undefined) {
    if (etagMatches(ifNoneMatch, rec.etag, true)) throw new S3Error(notModifiedStatus === 304 ? 'NotModified' : 'PreconditionFailed', notModifiedStatus, notModifiedStatus === 304 ? 'Not Modified' : 'At least one of the pre-conditions you specified did not hold');
  } else if (ifModified !== undefined) {
    const t = parseTimestampMs(ifModified);
    if (t !== undefined && lastModifiedS <= Math.floor(t / 1000)) throw new S3Error(notModifiedStatus === 304 ? 'NotModified' : 'PreconditionFailed', notModifiedStatus, notModifiedStatus === 304 ? 'Not Modified' : 'At least one of the pre-conditions you specified did not hold');
  }
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`; undefined = whole object (absent or unparseable). */
function parseRange(v: string | undefined, sizeBytes: number): { start: number; end: number } | undefined {
  if (v === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(v.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  const unsatisfiable = () => new S3Error('InvalidRange', 416, 'The requested range is not satisfiable', { RangeRequested: v, ActualObjectSize: String(sizeBytes) });
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) throw unsatisfiable();
    // A non-zero suffix is satisfiable (RFC 9110 14.1.1) and is the whole
    // representation when that is shorter: of an empty object, nothing. No
    // 206 can say "no bytes", so S3 answers 200 with the empty body, which
    // tail readers (Trino's readTail, arrow object_store) rely on.
    if (sizeBytes === 0) return undefined;
    return { start: Math.max(0, sizeBytes - n), end: sizeBytes - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? sizeBytes - 1 : Math.min(Number(m[2]), sizeBytes - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= sizeBytes) throw unsatisfiable();
  return { start, end };
}

/**
 * parseRange for a GET/HEAD: an unsatisfiable range's 416 carries a
 * Content-Range of an asterisk and the object's current length (RFC 9110
 * 14.4 and 15.5.17, as S3 answers), so the client can ask again within it;
 * the error handler keeps the headers set on the reply.
 */
function rangeOrUnsatisfiable(reply: FastifyReply, v: string | undefined, sizeBytes: number): { start: number; end: number } | undefined {
  try {
    return parseRange(v, sizeBytes);
  } catch (err) {
    if (err instanceof S3Error && err.code === 'InvalidRange') reply.header('content-range', `bytes */${sizeBytes}`);
    throw err;
  }
}

/**
 * GET/HEAD ?partNumber=N: the bytes of the object's N-th part (the parts of a
 * completed multipart upload are its segments, in order; a single-PUT object
 * is one part). N is the position, not the number the part was uploaded
 * under: parts uploaded as 1, 3, 7 are read as 1, 2, 3, as MinIO does and as
 * AWS's own multipart downloader (aws-sdk-java-v2 MultipartDownloaderSubscriber)
 * assumes, asking for 1..x-amz-mp-parts-count; GetObjectAttributes numbers
 * them the same way. A part past the last is 416 InvalidPartNumber, as S3 and
 * MinIO answer. An empty part has no byte range to name: undefined (a 200 of no bytes).
 */
function partRange(rec: ObjectRecord, partNumber: number): { start: number; end: number } | undefined {
  const partsCount = Math.max(1, rec.segments.length);
  if (partNumber > partsCount) throw new S3Error('InvalidPartNumber', 416, 'The requested partnumber is not satisfiable', { PartNumberRequested: String(partNumber), ActualPartCount: String(partsCount) });
  if (rec.segments.length === 0) return undefined;
  let start = 0;
  for (let i = 0; i < partNumber - 1; i++) start += rec.segments[i]!.lengthBytes;
  const lengthBytes = rec.segments[partNumber - 1]!.lengthBytes;
  return lengthBytes === 0 ? undefined : { start, end: start + lengthBytes - 1 };
}

/**
 * The ETag ListParts gives a part whose record is damaged: not hex, so never
 * a stored part's, and CompleteMultipartUpload refuses it (store.ts DamagedPartRecord).
 */
const DAMAGED_PART_ETAG = 'damaged-part-record';
/**
 * The ETag ListParts gives a part whose bytes were lost with a replaced disk
 * (`pools replace --discard-volumes`): not hex, so a client resuming an upload
 * by comparing its parts' MD5s with the listed ETags (s3cmd --continue-put)
 * uploads that part again instead of skipping it; CompleteMultipartUpload
 * refuses the part whatever ETag it is given (store.ts LostPart).
 */
const LOST_PART_ETAG = 'lost-part-data';

/** Store page length right after a seek past a rolled-up prefix (listUploads): most such seeks land on another prefix. */
const UPLOADS_AFTER_SEEK = 16;

/**
 * ListMultipartUploads markers that start a store walk at the first upload
 * of a key after every key starting with `p`: the key `p` with its last code
 * point plus one (code point order is UTF-8 byte order, the store's), and an
 * upload id marker below every upload id (the store lists that key's uploads
 * with ids after it). Undefined when there is no such key (`p` ends in
 * U+10FFFF or a lone surrogate): the caller reads past the prefix instead.
 */
function pastPrefix(p: string): { keyMarker: string; uploadIdMarker: string } | undefined {
  if (p === '') return undefined;
  let at = p.length - 1;
  if (at > 0 && /[\udc00-\udfff]/.test(p[at]!) && /[\ud800-\udbff]/.test(p[at - 1]!)) at--; // a pair: one code point
  const last = p.codePointAt(at)!;
  if (last === 0x10ffff || (last >= 0xd800 && last <= 0xdfff)) return undefined;
  return { keyMarker: p.slice(0, at) + String.fromCodePoint(last === 0xd7ff ? 0xe000 : last + 1), uploadIdMarker: '\u0000' };
}

/**
 * The bucket a virtual-host-style Host header names (`<bucket>.<domain>[:port]`
 * for one of the configured domains), or undefined for path style: a bare
 * domain, an IP address, or any other name.
 */
function virtualHostBucket(host: string | undefined, domains: readonly string[]): string | undefined {
  if (host === undefined || domains.length === 0 || host.startsWith('[')) return undefined;
  const colon = host.lastIndexOf(':');
  const name = (colon >= 0 ? host.slice(0, colon) : host).toLowerCase();
  for (const d of domains) {
    if (name.length > d.length + 1 && name.endsWith(d) && name[name.length - d.length - 1] === '.') return name.slice(0, name.length - d.length - 1);
  }
  return undefined;
}

async function readSmallBody(ctx: Ctx, maxBytes: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let total = 0;
  for await (const p of requestBody(ctx)) {
    total += p.length;
    if (total > maxBytes) throw tooBig(maxBytes);
    pieces.push(p);
  }
  const body = Buffer.concat(pieces);
  const md5 = contentMd5(ctx.raw);
  if (md5) {
    if (!createHash('md5').update(body).digest().equals(md5)) throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.');
  }
  return body;
}

const tooBig = (maxBytes: number) => new S3Error('MaxMessageLengthExceeded', 400, `Your request was too big: this request's XML body may be at most ${maxBytes} bytes.`);
const MALFORMED_XML = 'The XML you provided was not well-formed or did not validate against our published schema.';

interface XmlBodySpec {
  root: string;
  maxBytes: number;
  maxElements: number;
  /** Sees each start tag (depth 0 = root) as it is parsed; throws to refuse the body there. */
  onElement?: (name: string, depth: number) => void;
}

/**
 * A request's XML body parsed as it arrives (XmlPushParser), a slice of at
 * most XML_PARSE_SLICE_BYTES at a time with a turn of the event loop between
 * slices, so a large legal body never holds other clients for its whole
 * parse. Over maxBytes (declared or counted): MaxMessageLengthExceeded; over
 * maxElements, another root, or malformed: MalformedXML; parsing stops at the
 * first refusal. Content-MD5 is checked once the whole body is in.
 */
async function readXmlBody(ctx: Ctx, spec: XmlBodySpec): Promise<XmlElement> {
  // Refused bodies are still read (not parsed) up to this, so that the answer
  // reaches a client that is still sending: closing a socket with unread
  // bytes resets it, and the client loses the error. Past it the connection
  // is closed (the error handler): a refusal never costs unbounded reading.
  const drainLimitBytes = 2 * spec.maxBytes;
  let refusal: unknown;
  const declaredBytes = expectedLength(ctx.raw, ctx.payload);
  if (declaredBytes !== undefined && declaredBytes > spec.maxBytes) {
    if (declaredBytes > drainLimitBytes) throw tooBig(spec.maxBytes);
    refusal = tooBig(spec.maxBytes);
  }
  const expectedMd5 = contentMd5(ctx.raw);
  const md5 = expectedMd5 ? createHash('md5') : undefined;
  // Fatal: bytes that are not UTF-8 refuse the body; replaced by U+FFFD they would name another key.
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const decode = (bytes?: Uint8Array) => {
    try {
      return bytes === undefined ? decoder.decode() : decoder.decode(bytes, { stream: true });
    } catch {
      throw new XmlSyntaxError('the body is not UTF-8');
    }
  };
  const parser = new XmlPushParser({
    maxElements: spec.maxElements,
    onElement: (name, depth) => {
      if (depth === 0 && name !== spec.root) throw new XmlSyntaxError(`expected <${spec.root}>`);
      spec.onElement?.(name, depth);
    },
  });
  let totalBytes = 0;
  // Pieces are copied into one slice buffer and fed a whole slice at a time: fed
  // as they came, an aws-chunked body in one-byte chunks cost a feed and a string
  // node per byte (a 4 MiB Delete held ~130 MiB of the daemon's heap until answered).
  const slice = Buffer.allocUnsafe(XML_PARSE_SLICE_BYTES);
  let sliceBytes = 0;
  let piecesSinceTurn = 0;
  for await (const piece of requestBody(ctx)) {
    totalBytes += piece.length;
    if (refusal !== undefined) {
      if (totalBytes > drainLimitBytes) break;
      continue;
    }
    try {
      if (totalBytes > spec.maxBytes) throw tooBig(spec.maxBytes);
      md5?.update(piece);
      for (let off = 0; off < piece.length; ) {
        const copied = piece.copy(slice, sliceBytes, off, off + XML_PARSE_SLICE_BYTES - sliceBytes);
        off += copied;
        sliceBytes += copied;
        if (sliceBytes < XML_PARSE_SLICE_BYTES) break;
        // The decoder keeps a character cut between slices whole (stream mode copies it).
        parser.feed(decode(slice));
        sliceBytes = 0;
        piecesSinceTurn = 0;
        await yieldToEventLoop();
      }
      if (++piecesSinceTurn >= XML_PIECES_PER_TURN) {
        piecesSinceTurn = 0;
        await yieldToEventLoop();
      }
    } catch (err) {
      refusal = err;
    }
  }
  try {
    if (refusal !== undefined) throw refusal;
    parser.feed(decode(slice.subarray(0, sliceBytes)));
    parser.feed(decode());
    if (md5 && !md5.digest().equals(expectedMd5!)) throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.');
    return parser.end();
  } catch (err) {
    if (err instanceof XmlLimitError) throw new S3Error('MalformedXML', 400, `${MALFORMED_XML} (${err.message}: no legal ${spec.root} has that many)`);
    if (err instanceof XmlSyntaxError) throw new S3Error('MalformedXML', 400, MALFORMED_XML);
    throw err;
  }
}

function parseBodyXml(body: Buffer, rootName: string) {
  try {
    const root = parseXml(body.toString('utf8'));
    if (root.name !== rootName) throw new XmlSyntaxError(`expected <${rootName}>`);
    return root;
  } catch (err) {
    if (err instanceof XmlSyntaxError) throw new S3Error('MalformedXML', 400, 'The XML you provided was not well-formed or did not validate against our published schema.');
    throw err;
  }
}

export function buildS3Server(opts: S3ServerOptions): FastifyInstance {
  const { store } = opts;
  const domains = opts.domains ?? [];
  const bodyIdleTimeoutMs = opts.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS;
  const sendIdleTimeoutMs = opts.sendIdleTimeoutMs ?? DEFAULT_SEND_IDLE_TIMEOUT_MS;
  const stats = opts.stats ?? { requestIdleTimeouts: 0, responseIdleTimeouts: 0 };
  const secrets = new Map(opts.keys.map((k) => [k.accessKeyId, k.secretAccessKey]));
  const ownerId = opts.keys[0]!.accessKeyId;
  const ownerXml = `<Owner>${tag('ID', ownerId)}${tag('DisplayName', OWNER_DISPLAY_NAME)}</Owner>`;

  const app = Fastify({
    logger: false,
    exposeHeadRoutes: false,
    requestTimeout: REQUEST_TIMEOUT_MS,
    return503OnClosing: true,
    // Header overflow and other parse errors never reach a route: answer in S3's words.
    clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => {
      if (!socket.writable) return socket.destroy();
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
      const s3err = tooLarge
        ? new S3Error('RequestHeaderSectionTooLarge', 400, 'Your request header section exceeds the maximum allowed size.')
        : new S3Error('BadRequest', 400, 'The request could not be parsed.');
      const body = errorXml(s3err, '', randomBytes(8).toString('hex'));
      socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    },
    frameworkErrors: (err, req, reply) => {
      sendXml(reply, 400, errorXml(new S3Error('InvalidURI', 400, `Couldn't parse the specified URI. (${err.message})`), req.url, randomBytes(8).toString('hex')));
    },
  });
  app.removeAllContentTypeParsers();
  // Bodies are streamed by the handlers themselves (objects can be 5 GiB).
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

  app.setErrorHandler((err, req, reply) => {
    const ctx = (req as FastifyRequest & { s3ctx?: { bucket?: string; key?: string } }).s3ctx ?? {};
    const s3err = toS3Error(err, ctx);
    if (s3err.status >= 500) log.error('s3: request failed', { method: req.method, url: req.url, err: (err as Error).message, stack: (err as Error).stack });
    if (s3err.code === 'RequestTimeout') {
      stats.requestIdleTimeouts++;
      log.warn('s3: request body stalled: RequestTimeout, connection closed', { method: req.method, url: req.url, idleMs: bodyIdleTimeoutMs });
    }
    // A body we did not read: close rather than drain gigabytes for keep-alive.
    if (!req.raw.complete) reply.header('connection', 'close');
    if (s3err.status === 304) return reply.code(304).send();
    if (req.method === 'HEAD') {
      // No body to carry the error: its code and message go in headers, under AWS's names (its
      // website endpoint's) and MinIO's (which minio-go, minio-js and mc read), so a HEAD of a
      // lost or damaged object says why, not a bare 500.
      const message = headerSafe(s3err.message);
      reply.header('x-amz-error-code', s3err.code).header('x-amz-error-message', message);
      reply.header('x-minio-error-code', s3err.code).header('x-minio-error-desc', `"${message}"`);
      return reply.code(s3err.status).send();
    }
    const resource = splitTarget(req.url).rawPath;
    return sendXml(reply, s3err.status, errorXml(s3err, resource, reply.getHeader('x-amz-request-id') as string));
  });

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    reply.header('x-amz-request-id', randomBytes(8).toString('hex').toUpperCase());
    reply.header('server', 'CoucheStor');
    const raw = req.raw;
    const { rawPath, rawQuery } = splitTarget(raw.url ?? '/');
    // Virtual-host style (bucket.<domain>/key...) or path style (/bucket/key...).
    // The key is everything after the bucket, decoded once; it is an opaque
    // string and never a file path.
    let bucket: string | undefined;
    let key: string | undefined;
    const hostBucket = virtualHostBucket(raw.headers.host, domains);
    if (hostBucket !== undefined) {
      bucket = hostBucket;
      key = rawPath.length > 1 ? uriDecode(rawPath.slice(1)) : undefined;
    } else {
      const slash = rawPath.indexOf('/', 1);
      bucket = rawPath.length > 1 ? uriDecode(slash < 0 ? rawPath.slice(1) : rawPath.slice(1, slash)) : undefined;
      key = slash >= 0 && slash < rawPath.length - 1 ? uriDecode(rawPath.slice(slash + 1)) : undefined;
    }
    (req as FastifyRequest & { s3ctx?: object }).s3ctx = { bucket, key };
    const auth = verifyRequest({ method: raw.method ?? 'GET', url: raw.url ?? '/', headers: raw.headers }, (id) => secrets.get(id), Date.now());
    // A presigned URL's x-amz-* query parameters are its headers (sigv4.ts presignedHeaders):
    // from here on they are read, checked and refused exactly as sent headers are.
    for (const [name, value] of auth.queryHeaders) raw.headers[name] = value;
    // An aws-chunked body's wire length is not the object's: without the decoded
    // length nothing bounds or checks what the body decodes to (S3: 411, MinIO too).
    if (auth.payload.kind === 'chunked' && header(raw, 'x-amz-decoded-content-length') === undefined) throw missingDecodedLength();
    const ctx: Ctx = { req, reply, raw, bucket, key, query: new Map(parseQuery(rawQuery)), payload: auth.payload, accessKeyId: auth.accessKeyId, bodyIdleTimeoutMs, sendIdleTimeoutMs, stats };
    const method = raw.method;
    if (bucket === undefined) {
      if (method === 'GET') return listBuckets(ctx);
      throw methodNotAllowed();
    }
    validateBucketName(bucket);
    const sub = SUBRESOURCES.find((s) => ctx.query.has(s));
    // A named subresource routes the request (its handlers never create or delete a
    // bucket or object); without one, a PUT/POST/DELETE is a create, write or delete.
    if (sub === undefined || sub === 'uploads') checkMutationQuery(method, ctx.query, key === undefined ? BUCKET_MUTATION_PARAMS : OBJECT_MUTATION_PARAMS);
    if (key === undefined) {
      if (sub !== undefined) return bucketSubresource(ctx, bucket, sub);
      switch (method) {
        case 'PUT':
          return createBucket(ctx, bucket);
        case 'DELETE':
          await store.deleteBucket(bucket);
          return reply.code(204).send();
        case 'HEAD':
          store.getBucket(bucket);
          return reply.code(200).header('x-amz-bucket-region', 'us-east-1').send();
        case 'GET':
          return listObjects(ctx, bucket, ctx.query.get('list-type') === '2' ? 'v2' : 'v1');
      }
      throw methodNotAllowed();
    }
    checkKey(key);
    checkVersionId(ctx.query.get('versionId'), 'versionId');
    if (sub !== undefined && sub !== 'uploads') return objectSubresource(ctx, bucket, key, sub);
    // ?uploads on an object is CreateMultipartUpload (POST) only; never a GET, write or delete of the object.
    if (sub === 'uploads' && method !== 'POST') throw methodNotAllowed();
    const uploadId = ctx.query.get('uploadId');
    switch (method) {
      case 'GET':
        if (uploadId !== undefined) return listParts(ctx, bucket, key, uploadId);
        return getObject(ctx, bucket, key, false);
      case 'HEAD':
        return getObject(ctx, bucket, key, true);
      case 'PUT':
        if (uploadId !== undefined) return uploadPart(ctx, bucket, key, uploadId);
        if (header(raw, 'x-amz-copy-source') !== undefined) return copyObject(ctx, bucket, key, writeCondition(raw, 'CopyObject'));
        return putObject(ctx, bucket, key, writeCondition(raw, 'PutObject'));
      case 'DELETE':
        if (uploadId !== undefined) {
          await store.abortUpload(bucket, key, uploadId, abortCondition(raw));
          return reply.code(204).send();
        }
        await store.deleteObject(bucket, key, deleteCondition(raw));
        return reply.code(204).send();
      case 'POST':
        if (ctx.query.has('uploads')) return createUpload(ctx, bucket, key);
        if (uploadId !== undefined) return completeUpload(ctx, bucket, key, uploadId, writeCondition(raw, 'CompleteMultipartUpload'));
        break;
    }
    throw methodNotAllowed();
  };
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'], url: '/', handler });
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'], url: '/*', handler });

  // ---- subresources -------------------------------------------------------

  /** `?<sub>` on a bucket. The bucket is looked up first: a missing one is NoSuchBucket whatever was asked. */
  async function bucketSubresource(ctx: Ctx, bucket: string, sub: string): Promise<FastifyReply> {
    const { reply } = ctx;
    const method = ctx.raw.method;
    const rec = store.getBucket(bucket);
    switch (`${method} ${sub}`) {
      case 'GET location':
        return sendXml(reply, 200, `${XML_HEADER}<LocationConstraint xmlns="${S3_NS}"></LocationConstraint>`);
      case 'GET uploads':
        return listUploads(ctx, bucket);
      case 'GET versions':
        return listObjects(ctx, bucket, 'versions');
      case 'POST delete':
        return deleteObjects(ctx, bucket);
      case 'GET tagging':
        if (rec.tags === undefined) throw new S3Error('NoSuchTagSet', 404, 'The TagSet does not exist', { BucketName: bucket });
        return sendXml(reply, 200, taggingXml(rec.tags));
      case 'PUT tagging':
        await store.setBucketTags(bucket, tagsFromXml(parseBodyXml(await readSmallBody(ctx, MAX_SUBRESOURCE_BODY_BYTES), 'Tagging'), 'bucket'));
        return reply.code(204).send();
      case 'DELETE tagging':
        await store.setBucketTags(bucket, undefined);
        return reply.code(204).send();
    }
    const cfg = BUCKET_CONFIGS[sub];
    if (cfg !== undefined) {
      switch (method) {
        case 'GET':
          if ('xml' in cfg.none) return sendXml(reply, 200, cfg.none.xml);
          throw new S3Error(cfg.none.code, 404, cfg.none.message, { BucketName: bucket });
        case 'DELETE':
          if (cfg.deletable) return reply.code(204).send();
          break;
        case 'PUT':
          if (cfg.acceptsDefault === undefined) throw refuseConfig(cfg);
          if (!cfg.acceptsDefault.isDefault(parseBodyXml(await readSmallBody(ctx, MAX_SUBRESOURCE_BODY_BYTES), cfg.acceptsDefault.root))) throw refuseConfig(cfg);
          return reply.code(200).send();
      }
    }
    return sharedSubresource(ctx, sub);
  }

  /** `?<sub>` on an object: the bucket, then the object, must exist (NoSuchBucket, then NoSuchKey). */
  async function objectSubresource(ctx: Ctx, bucket: string, key: string, sub: string): Promise<FastifyReply> {
    const { reply } = ctx;
    const rec = store.headObject(bucket, key);
    switch (`${ctx.raw.method} ${sub}`) {
      case 'GET tagging':
        return sendXml(reply, 200, taggingXml(rec.tags ?? []));
      case 'PUT tagging':
        await store.setObjectTags(bucket, key, tagsFromXml(parseBodyXml(await readSmallBody(ctx, MAX_SUBRESOURCE_BODY_BYTES), 'Tagging'), 'object'));
        return reply.code(200).send();
      case 'DELETE tagging':
        await store.setObjectTags(bucket, key, []);
        return reply.code(204).send();
      case 'GET attributes':
        // Its ETag and size with a 200 would present a lost object as whole (tags and ACL are metadata, kept).
        assertObjectDataKept(rec);
        await store.assertShardsKnownKept(rec);
        return getObjectAttributes(ctx, rec);
    }
    return sharedSubresource(ctx, sub);
  }

  /** What buckets and objects answer alike, once the caller has found its resource: the owner-only ACL, else a refusal. */
  async function sharedSubresource(ctx: Ctx, sub: string): Promise<FastifyReply> {
    const { reply } = ctx;
    switch (`${ctx.raw.method} ${sub}`) {
      case 'GET acl':
        return sendXml(reply, 200, aclXml(ownerId, OWNER_DISPLAY_NAME));
      case 'PUT acl':
        await putAcl(ctx);
        return reply.code(200).send();
    }
    const refusal = UNSUPPORTED[sub];
    if (refusal !== undefined) throw refusal();
    throw methodNotAllowed();
  }

  /**
   * GetObjectAttributes: what the index record knows, for the attributes
   * x-amz-object-attributes names. The ETag is unquoted (as S3 answers here,
   * unlike HeadObject). Checksum is never answered: x-amz-checksum-* is
   * verified on upload but not kept, and the daemon's own CRC32Cs are per
   * stored chunk, not the object checksum S3 means. ObjectParts only for a
   * completed multipart upload (S3 omits it for a single PUT): its part
   * count, and each part's position (its partNumber for GetObject) and size.
   * StorageClass is the object's (STANDARD when none was given). Preconditions as
   * HeadObject (304/412).
   */
  function getObjectAttributes(ctx: Ctx, rec: ObjectRecord) {
    const { raw, reply } = ctx;
    const wanted = new Set<string>();
    for (const v of (header(raw, 'x-amz-object-attributes') ?? '').split(',')) {
      const name = v.trim();
      if (name === '') continue;
      if (!OBJECT_ATTRIBUTES.includes(name)) throw new S3Error('InvalidArgument', 400, 'Invalid attribute name specified.', { ArgumentName: 'x-amz-object-attributes', ArgumentValue: name });
      wanted.add(name);
    }
    if (wanted.size === 0) throw new S3Error('InvalidArgument', 400, 'The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty', { ArgumentName: 'x-amz-object-attributes', ArgumentValue: '' });
    const maxParts = parseIntParam(header(raw, 'x-amz-max-parts')?.trim(), 'x-amz-max-parts', MAX_ATTRIBUTE_PARTS, MAX_ATTRIBUTE_PARTS);
    const marker = parseIntParam(header(raw, 'x-amz-part-number-marker')?.trim(), 'x-amz-part-number-marker', 0, MAX_PART_NUMBER);
    reply.header('last-modified', httpDate(rec.lastModifiedMs));
    checkPreconditions((h) => header(raw, h), rec, 304);
    let body = '';
    if (wanted.has('ETag')) body += tag('ETag', rec.etag);
    if (wanted.has('ObjectParts') && rec.etag.includes('-')) {
      // Parts are numbered by position, 1..PartsCount, whatever numbers the upload
      // used (1, 3, 7 are parts 1, 2, 3): the number GetObject/HeadObject ?partNumber
      // takes (partRange). S3 lists parts only for uploads with per-part checksums,
      // which it requires to be numbered 1..N consecutively, so the two never differ there.
      const count = rec.segments.length;
      const first = Math.min(marker, count);
      const end = Math.min(count, first + maxParts);
      let parts = `${tag('PartsCount', count)}${tag('PartNumberMarker', marker)}${tag('MaxParts', maxParts)}${tag('IsTruncated', end < count)}`;
      if (end > first) parts += tag('NextPartNumberMarker', end);
      for (let i = first; i < end; i++) parts += `<Part>${tag('PartNumber', i + 1)}${tag('Size', rec.segments[i]!.lengthBytes)}</Part>`;
      body += `<ObjectParts>${parts}</ObjectParts>`;
    }
    if (wanted.has('StorageClass')) body += tag('StorageClass', classOf(rec));
    if (wanted.has('ObjectSize')) body += tag('ObjectSize', rec.sizeBytes);
    return sendXml(reply, 200, `${XML_HEADER}<GetObjectAttributesResponse xmlns="${S3_NS}">${body}</GetObjectAttributesResponse>`);
  }

  /** PutBucketAcl/PutObjectAcl: a header or body that means "owner only" is accepted (nothing to store), any grant to others refused. */
  async function putAcl(ctx: Ctx): Promise<void> {
    checkAclHeaders(ctx.raw.headers);
    const body = await readSmallBody(ctx, MAX_SUBRESOURCE_BODY_BYTES);
    if (body.length > 0) checkAclBody(parseBodyXml(body, 'AccessControlPolicy'), ownerId);
    else if (header(ctx.raw, 'x-amz-acl') === undefined) throw new S3Error('MalformedXML', 400, 'The XML you provided was not well-formed or did not validate against our published schema.');
  }

  /** x-amz-tagging on PutObject/CreateMultipartUpload (absent: no tags). */
  function tagsOf(ctx: Ctx): Tag[] | undefined {
    const v = header(ctx.raw, 'x-amz-tagging');
    return v === undefined ? undefined : tagsFromHeader(v);
  }

  // ---- buckets ------------------------------------------------------------

  function listBuckets(ctx: Ctx) {
    const items = store
      .listBuckets()
      .map((b) => `<Bucket>${tag('Name', b.name)}${tag('CreationDate', iso(b.createdMs))}</Bucket>`)
      .join('');
    return sendXml(ctx.reply, 200, `${XML_HEADER}<ListAllMyBucketsResult xmlns="${S3_NS}">${ownerXml}<Buckets>${items}</Buckets></ListAllMyBucketsResult>`);
  }

  async function createBucket(ctx: Ctx, bucket: string) {
    checkAclHeaders(ctx.raw.headers);
    const body = await readSmallBody(ctx, MAX_SUBRESOURCE_BODY_BYTES);
    if (body.length > 0) parseBodyXml(body, 'CreateBucketConfiguration');
    const tierHeader = header(ctx.raw, 'x-couchestor-tier') ?? 'hot';
    if (tierHeader !== 'hot' && tierHeader !== 'cold') throw new S3Error('InvalidArgument', 400, 'x-couchestor-tier must be hot or cold', { ArgumentName: 'x-couchestor-tier', ArgumentValue: tierHeader });
    await store.createBucket(bucket, tierHeader as BucketTier);
    return ctx.reply.code(200).header('location', `/${bucket}`).send();
  }

  // ---- listing ------------------------------------------------------------

  /**
   * ListObjects, ListObjectsV2 and ListObjectVersions: one walk (store.list)
   * and three answers. Without versioning every object is one version,
   * VersionId "null", the latest; a key marker pages like a v1 marker.
   */
  function listObjects(ctx: Ctx, bucket: string, kind: ListingKind) {
    const q = ctx.query;
    const v2 = kind === 'v2';
    if (kind === 'v1' && q.has('list-type')) throw new S3Error('InvalidArgument', 400, 'list-type must be 2', { ArgumentName: 'list-type' });
    const encodingType = q.get('encoding-type');
    if (encodingType !== undefined && encodingType !== 'url') throw new S3Error('InvalidArgument', 400, 'Invalid Encoding Method specified in Request', { ArgumentName: 'encoding-type' });
    const enc = (s: string) => (encodingType === 'url' ? awsUriEncode(s, true) : s);
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter') ?? '';
    const maxKeys = parseIntParam(q.get('max-keys'), 'max-keys', MAX_LIST_KEYS, MAX_LIST_KEYS);
    let after: string;
    const token = q.get('continuation-token');
    if (v2) {
      if (token !== undefined) {
        after = Buffer.from(token, 'base64url').toString('utf8');
        if (token === '' || Buffer.from(after, 'utf8').toString('base64url') !== token) throw new S3Error('InvalidArgument', 400, 'The continuation token provided is incorrect', { ArgumentName: 'continuation-token' });
      } else {
        after = q.get('start-after') ?? '';
      }
    } else if (kind === 'versions') {
      after = q.get('key-marker') ?? '';
      const versionIdMarker = q.get('version-id-marker');
      if (versionIdMarker !== undefined && versionIdMarker !== '') {
        if (!q.has('key-marker')) throw new S3Error('InvalidArgument', 400, 'A version-id marker cannot be specified without a key marker.', { ArgumentName: 'version-id-marker', ArgumentValue: versionIdMarker });
        // Only the "null" version exists; after it comes the next key, as after the key marker alone.
        if (versionIdMarker !== 'null') throw new S3Error('InvalidArgument', 400, 'Invalid version id specified', { ArgumentName: 'version-id-marker', ArgumentValue: versionIdMarker });
      }
    } else {
      after = q.get('marker') ?? '';
    }
    const page = store.list(bucket, { prefix, delimiter, after, maxKeys });
    if (kind === 'versions') {
      const versions = page.objects
        .map((o) => `<Version>${tag('Key', enc(o.key))}${tag('VersionId', 'null')}${tag('IsLatest', true)}${tag('LastModified', iso(o.lastModifiedMs))}${tag('ETag', etagHeader(o.etag))}${tag('Size', o.sizeBytes)}${ownerXml}${tag('StorageClass', classOf(o))}</Version>`)
        .join('');
      const prefixes = page.commonPrefixes.map((p) => `<CommonPrefixes>${tag('Prefix', enc(p))}</CommonPrefixes>`).join('');
      let head = `${tag('Name', bucket)}${tag('Prefix', enc(prefix))}${tag('KeyMarker', enc(after))}${tag('VersionIdMarker', q.get('version-id-marker') ?? '')}`;
      if (page.isTruncated && page.lastItem !== undefined) head += `${tag('NextKeyMarker', enc(page.lastItem))}${tag('NextVersionIdMarker', 'null')}`;
      head += tag('MaxKeys', maxKeys);
      if (delimiter) head += tag('Delimiter', enc(delimiter));
      head += tag('IsTruncated', page.isTruncated);
      if (encodingType) head += tag('EncodingType', encodingType);
      return sendXml(ctx.reply, 200, `${XML_HEADER}<ListVersionsResult xmlns="${S3_NS}">${head}${versions}${prefixes}</ListVersionsResult>`);
    }
    const fetchOwner = !v2 || q.get('fetch-owner') === 'true';
    const contents = page.objects
      .map((o) => `<Contents>${tag('Key', enc(o.key))}${tag('LastModified', iso(o.lastModifiedMs))}${tag('ETag', etagHeader(o.etag))}${tag('Size', o.sizeBytes)}${fetchOwner ? ownerXml : ''}${tag('StorageClass', classOf(o))}</Contents>`)
      .join('');
    const prefixes = page.commonPrefixes.map((p) => `<CommonPrefixes>${tag('Prefix', enc(p))}</CommonPrefixes>`).join('');
    let head = `${tag('Name', bucket)}${tag('Prefix', enc(prefix))}`;
    if (v2) {
      head += `${tag('KeyCount', page.objects.length + page.commonPrefixes.length)}${tag('MaxKeys', maxKeys)}`;
      if (delimiter) head += tag('Delimiter', enc(delimiter));
      head += tag('IsTruncated', page.isTruncated);
      if (token !== undefined) head += tag('ContinuationToken', token);
      if (page.isTruncated && page.lastItem !== undefined) head += tag('NextContinuationToken', Buffer.from(page.lastItem, 'utf8').toString('base64url'));
      if (q.has('start-after')) head += tag('StartAfter', enc(q.get('start-after')!));
    } else {
      head += `${tag('Marker', enc(after))}${tag('MaxKeys', maxKeys)}`;
      if (delimiter) head += tag('Delimiter', enc(delimiter));
      head += tag('IsTruncated', page.isTruncated);
      if (page.isTruncated && page.lastItem !== undefined) head += tag('NextMarker', enc(page.lastItem));
    }
    if (encodingType) head += tag('EncodingType', encodingType);
    return sendXml(ctx.reply, 200, `${XML_HEADER}<ListBucketResult xmlns="${S3_NS}">${head}${contents}${prefixes}</ListBucketResult>`);
  }

  // ---- objects ------------------------------------------------------------

  async function getObject(ctx: Ctx, bucket: string, key: string, headOnly: boolean) {
    const { reply, raw, query } = ctx;
    const partNumber = query.has('partNumber') ? partNumberOf(ctx) : undefined;
    if (partNumber !== undefined && header(raw, 'range') !== undefined) {
      throw new S3Error('InvalidRequest', 400, 'Cannot specify both Range header and partNumber query parameter');
    }
    const handle = store.openObject(bucket, key);
    let handedOff = false;
    try {
      const rec = handle.rec;
      // A cold object with a stripe known unreadable: 500 before any header, HEAD as GET.
      await store.assertShardsKnownKept(rec);
      // A 304 still names the version the client has (RFC 7232 4.1).
      reply.header('etag', etagHeader(rec.etag)).header('last-modified', httpDate(rec.lastModifiedMs));
      checkPreconditions((h) => header(raw, h), rec, 304);
      setObjectHeaders(reply, rec, query);
      const range = partNumber === undefined ? rangeOrUnsatisfiable(reply, header(raw, 'range'), rec.sizeBytes) : partRange(rec, partNumber);
      let start = 0;
      let length = rec.sizeBytes;
      if (range) {
        start = range.start;
        length = range.end - range.start + 1;
        reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${rec.sizeBytes}`);
      } else {
        reply.code(200);
      }
      reply.header('content-length', String(length));
      if (headOnly || length === 0) return reply.send();
      handedOff = true;
      const out = new ResponseSink(reply, ctx.sendIdleTimeoutMs, (sentBytes) => {
        ctx.stats.responseIdleTimeouts++;
        log.warn('s3: client stopped reading a response: connection closed', { bucket, key, idleMs: ctx.sendIdleTimeoutMs, sentBytes, responseBytes: length });
      });
      try {
        await handle.send(start, length, out.sink);
        // The store marks the final piece; this only guards against a response left open.
        if (!reply.raw.writableEnded) reply.raw.end();
      } catch (err) {
        // Before the first byte went out the error handler still answers in
        // S3 XML; after it, a failure can only cut the response short (the
        // client sees fewer bytes than Content-Length), never wrong bytes.
        if (!out.started) throw err;
        if (err instanceof ClientGone) log.debug('s3: client left mid-response', { bucket, key, why: err.message });
        else log.error('s3: object read failed mid-response', { bucket, key, err: (err as Error).message });
        reply.raw.destroy();
      }
    } finally {
      if (!handedOff) handle.release();
    }
  }

  async function putObject(ctx: Ctx, bucket: string, key: string, condition: WriteCondition | undefined) {
    const { contentHeaders, userMeta } = objectHeadersFrom(ctx.raw);
    const expectedMd5 = contentMd5(ctx.raw);
    store.getBucket(bucket);
    checkAclHeaders(ctx.raw.headers);
    const storageClass = storageClassOf(ctx.raw);
    const tags = tagsOf(ctx);
    if (condition !== undefined) {
      try {
        store.checkWriteCondition(bucket, key, condition);
      } catch (err) {
        // Refused before a byte is stored (no disk write, no space needed: a full pool
        // still answers 412); the body is read to its end so the connection stays usable.
        await discardBody(ctx);
        throw err;
      }
    }
    const rec = await store.putObject(bucket, key, requestBody(ctx), {
      contentHeaders,
      userMeta,
      expectedBytes: expectedLength(ctx.raw, ctx.payload),
      expectedMd5,
      tags,
      condition,
      storageClass,
    });
    return ctx.reply.code(200).header('etag', etagHeader(rec.etag)).send();
  }

  /** x-amz-copy-source: [/]bucket/key[?versionId=...], URL-encoded. */
  function copySource(ctx: Ctx): { bucket: string; key: string } {
    let src = header(ctx.raw, 'x-amz-copy-source')!;
    const q = src.indexOf('?');
    if (q >= 0) {
      checkVersionId(new Map(parseQuery(src.slice(q + 1))).get('versionId'), 'x-amz-copy-source');
      src = src.slice(0, q);
    }
    src = uriDecode(src).replace(/^\//, '');
    const slash = src.indexOf('/');
    if (slash <= 0 || slash === src.length - 1) throw new S3Error('InvalidArgument', 400, 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey', { ArgumentName: 'x-amz-copy-source' });
    return { bucket: src.slice(0, slash), key: src.slice(slash + 1) };
  }

  function copySourcePreconditions(ctx: Ctx, rec: ObjectRecord): void {
    checkPreconditions((h) => header(ctx.raw, `x-amz-copy-source-${h}`), rec, 412);
  }

  async function copyObject(ctx: Ctx, bucket: string, key: string, condition: WriteCondition | undefined) {
    const src = copySource(ctx);
    const directive = header(ctx.raw, 'x-amz-metadata-directive') ?? 'COPY';
    if (directive !== 'COPY' && directive !== 'REPLACE') throw new S3Error('InvalidArgument', 400, 'Unknown metadata directive.', { ArgumentName: 'x-amz-metadata-directive' });
    const tagDirective = header(ctx.raw, 'x-amz-tagging-directive') ?? 'COPY';
    if (tagDirective !== 'COPY' && tagDirective !== 'REPLACE') throw new S3Error('InvalidArgument', 400, 'Unknown tag directive.', { ArgumentName: 'x-amz-tagging-directive' });
    store.getBucket(bucket);
    checkAclHeaders(ctx.raw.headers);
    // As S3: the copy's class is the one asked for, STANDARD if none (not the source's).
    const storageClass = storageClassOf(ctx.raw);
    // REPLACE without x-amz-tagging: the copy has no tags (as S3 and MinIO).
    const replacedTags = tagDirective === 'REPLACE' ? (tagsOf(ctx) ?? []) : undefined;
    const handle = store.openObject(src.bucket, src.key);
    let handedOff = false;
    try {
      const srcRec = handle.rec;
      await store.assertShardsKnownKept(srcRec);
      copySourcePreconditions(ctx, srcRec);
      if (src.bucket === bucket && src.key === key && directive === 'COPY' && tagDirective === 'COPY' && storageClass === undefined) {
        throw new S3Error('InvalidRequest', 400, "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
      }
      const meta = directive === 'REPLACE' ? objectHeadersFrom(ctx.raw) : { contentHeaders: srcRec.contentHeaders, userMeta: srcRec.userMeta };
      // A destination condition that already fails copies nothing (judged again in the flip).
      if (condition !== undefined) store.checkWriteCondition(bucket, key, condition);
      const body = handle.read(0, srcRec.sizeBytes);
      handedOff = true;
      const rec = await store.putObject(bucket, key, body, { ...meta, expectedBytes: srcRec.sizeBytes, tags: replacedTags ?? srcRec.tags, condition, storageClass });
      return sendXml(ctx.reply, 200, `${XML_HEADER}<CopyObjectResult xmlns="${S3_NS}">${tag('LastModified', iso(rec.lastModifiedMs))}${tag('ETag', etagHeader(rec.etag))}</CopyObjectResult>`);
    } finally {
      if (!handedOff) handle.release();
    }
  }

  async function deleteObjects(ctx: Ctx, bucket: string) {
    store.getBucket(bucket);
    // S3 requires Content-MD5 or an x-amz-checksum-* for DeleteObjects whatever the
    // payload mode: an UNSIGNED-PAYLOAD body otherwise has nothing checking that
    // the keys deleted are the keys the client sent.
    if (!hasBodyChecksum(ctx.raw.headers, ctx.payload)) throw new S3Error('InvalidRequest', 400, 'Missing required header for this request: Content-MD5');
    const tooMany = () => new S3Error('MalformedXML', 400, `Delete must list 1 to ${MAX_DELETE_OBJECTS} objects.`);
    let listed = 0;
    const root = await readXmlBody(ctx, {
      root: 'Delete',
      maxBytes: MAX_DELETE_BODY_BYTES,
      maxElements: MAX_DELETE_ELEMENTS,
      // Refused at the 1001st Object, not after parsing the rest.
      onElement: (name, depth) => {
        if (depth === 1 && name === 'Object' && ++listed > MAX_DELETE_OBJECTS) throw tooMany();
      },
    });
    const quiet = child(root, 'Quiet')?.text.trim() === 'true';
    const objects = children(root, 'Object');
    if (objects.length === 0 || objects.length > MAX_DELETE_OBJECTS) throw tooMany();
    // The whole body is judged before the first delete: a refusal deletes nothing. Two Keys (or
    // VersionIds, or conditions of one kind) in one Object name no one key or condition.
    const malformed = () => new S3Error('MalformedXML', 400, 'Each Object needs one Key, and at most one VersionId, ETag, Size and LastModifiedTime (Size a byte count, LastModifiedTime a date).');
    const conditions = objects.map((o) => {
      if (children(o, 'Key').length !== 1 || ['VersionId', 'ETag', 'Size', 'LastModifiedTime'].some((n) => children(o, n).length > 1)) throw malformed();
      // Per-object conditional delete (S3 since 2025), judged in the transaction that deletes the key.
      const [etag, size, time] = (['ETag', 'Size', 'LastModifiedTime'] as const).map((n) => child(o, n)?.text);
      return etag === undefined && size === undefined && time === undefined ? undefined : deleteConditionValues(etag, size, time, malformed);
    });
    let out = '';
    for (const [i, o] of objects.entries()) {
      const k = child(o, 'Key')!.text;
      // Echoed as given, as S3 does; only "null" (the one version there is) is deleted.
      const versionId = child(o, 'VersionId')?.text;
      try {
        checkKey(k);
        checkVersionId(versionId, 'VersionId');
        await store.deleteObject(bucket, k, conditions[i]);
        if (!quiet) out += `<Deleted>${tag('Key', k)}${tag('VersionId', versionId)}</Deleted>`;
      } catch (err) {
        const e = toS3Error(err, { bucket, key: k });
        out += `<Error>${tag('Key', k)}${tag('VersionId', versionId)}${tag('Code', e.code)}${tag('Message', e.message)}</Error>`;
      }
    }
    return sendXml(ctx.reply, 200, `${XML_HEADER}<DeleteResult xmlns="${S3_NS}">${out}</DeleteResult>`);
  }

  // ---- multipart ----------------------------------------------------------

  async function createUpload(ctx: Ctx, bucket: string, key: string) {
    const { contentHeaders, userMeta } = objectHeadersFrom(ctx.raw);
    checkAclHeaders(ctx.raw.headers);
    const up = await store.createUpload(bucket, key, contentHeaders, userMeta, tagsOf(ctx), storageClassOf(ctx.raw));
    return sendXml(ctx.reply, 200, `${XML_HEADER}<InitiateMultipartUploadResult xmlns="${S3_NS}">${tag('Bucket', bucket)}${tag('Key', key)}${tag('UploadId', up.uploadId)}</InitiateMultipartUploadResult>`);
  }

  function partNumberOf(ctx: Ctx): number {
    const v = ctx.query.get('partNumber');
    if (v === undefined || !/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > MAX_PART_NUMBER) {
      throw new S3Error('InvalidArgument', 400, `Part number must be an integer between 1 and ${MAX_PART_NUMBER}, inclusive`, { ArgumentName: 'partNumber', ArgumentValue: v ?? '' });
    }
    return Number(v);
  }

  async function uploadPart(ctx: Ctx, bucket: string, key: string, uploadId: string) {
    const partNumber = partNumberOf(ctx);
    if (header(ctx.raw, 'x-amz-copy-source') !== undefined) return uploadPartCopy(ctx, bucket, key, uploadId, partNumber);
    const part = await store.uploadPart(bucket, key, uploadId, partNumber, requestBody(ctx), {
      expectedBytes: expectedLength(ctx.raw, ctx.payload),
      expectedMd5: contentMd5(ctx.raw),
    });
    return ctx.reply.code(200).header('etag', etagHeader(part.etag)).send();
  }

  async function uploadPartCopy(ctx: Ctx, bucket: string, key: string, uploadId: string, partNumber: number) {
    const src = copySource(ctx);
    store.getUpload(bucket, key, uploadId);
    const handle = store.openObject(src.bucket, src.key);
    let handedOff = false;
    try {
      const srcRec = handle.rec;
      await store.assertShardsKnownKept(srcRec);
      copySourcePreconditions(ctx, srcRec);
      let start = 0;
      let length = srcRec.sizeBytes;
      const r = header(ctx.raw, 'x-amz-copy-source-range');
      if (r !== undefined) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(r.trim());
        if (!m || Number(m[2]) < Number(m[1]) || Number(m[2]) >= srcRec.sizeBytes) throw new S3Error('InvalidArgument', 400, 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy', { ArgumentName: 'x-amz-copy-source-range' });
        start = Number(m[1]);
        length = Number(m[2]) - start + 1;
      }
      const body = handle.read(start, length);
      handedOff = true;
      const part = await store.uploadPart(bucket, key, uploadId, partNumber, body, { expectedBytes: length });
      return sendXml(ctx.reply, 200, `${XML_HEADER}<CopyPartResult xmlns="${S3_NS}">${tag('LastModified', iso(part.lastModifiedMs))}${tag('ETag', etagHeader(part.etag))}</CopyPartResult>`);
    } finally {
      if (!handedOff) handle.release();
    }
  }

  async function completeUpload(ctx: Ctx, bucket: string, key: string, uploadId: string, condition: WriteCondition | undefined) {
    store.getUpload(bucket, key, uploadId);
    let listed = 0;
    const root = await readXmlBody(ctx, {
      root: 'CompleteMultipartUpload',
      maxBytes: MAX_COMPLETE_BODY_BYTES,
      maxElements: MAX_COMPLETE_ELEMENTS,
      onElement: (name, depth) => {
        if (depth === 1 && name === 'Part' && ++listed > MAX_PART_NUMBER) throw new S3Error('MalformedXML', 400, `CompleteMultipartUpload may list at most ${MAX_PART_NUMBER} parts.`);
      },
    });
    const list = children(root, 'Part').map((p) => {
      const n = child(p, 'PartNumber')?.text.trim();
      const etag = child(p, 'ETag')?.text.trim();
      if (!n || !/^\d{1,5}$/.test(n) || etag === undefined) throw new S3Error('MalformedXML', 400, 'Each Part needs a PartNumber and an ETag.');
      return { partNumber: Number(n), etag };
    });
    if (list.length === 0) throw new S3Error('MalformedXML', 400, MALFORMED_XML);
    // A part whose record is damaged (ListParts lists it with DAMAGED_PART_ETAG) is refused by the
    // store, whatever ETag is given: 400 InvalidPart naming the damage (store.ts DamagedPartRecord).
    const rec = await store.completeUpload(bucket, key, uploadId, list, condition);
    const location = `http://${header(ctx.raw, 'host') ?? 'localhost'}/${bucket}/${awsUriEncode(key, true)}`;
    return sendXml(ctx.reply, 200, `${XML_HEADER}<CompleteMultipartUploadResult xmlns="${S3_NS}">${tag('Location', location)}${tag('Bucket', bucket)}${tag('Key', key)}${tag('ETag', etagHeader(rec.etag))}</CompleteMultipartUploadResult>`);
  }

  /**
   * ListParts. A damaged part record (partDamage: recordDamage, or a field
   * ListParts answers unreadable, e.g. the record is null) is listed under
   * the part number its index key holds, with DAMAGED_PART_ETAG, which
   * CompleteMultipartUpload always refuses (InvalidPart naming the damage).
   * Left out instead, a client completing with the parts it listed (S3 allows
   * gaps in part numbers) would get an object silently missing that part;
   * failing the whole listing (500) would hide the upload's other parts. The
   * damage is also said by x-couchestor-damaged-parts (the damaged parts on
   * this page) and an error log line. Uploading the part again replaces the
   * record; AbortMultipartUpload or `couchestor fsck --quarantine-damaged`
   * clears it. A page is the store's page: max-parts records, damaged or not.
   */
  function listParts(ctx: Ctx, bucket: string, key: string, uploadId: string) {
    const marker = parseIntParam(ctx.query.get('part-number-marker'), 'part-number-marker', 0, MAX_PART_NUMBER);
    const maxParts = parseIntParam(ctx.query.get('max-parts'), 'max-parts', 1000, 1000);
    const page = store.listParts(bucket, key, uploadId, marker, maxParts);
    const damaged: string[] = [];
    const lost: number[] = [];
    let initiatedMs: number | undefined;
    const items = page.parts
      .map(({ partNumber, record }) => {
        const damage = partDamage(record);
        if (damage === null) {
          const p = record as PartRecord;
          const isLost = lostPools([p.segment]).length > 0;
          if (isLost) lost.push(partNumber);
          return `<Part>${tag('PartNumber', partNumber)}${tag('LastModified', iso(p.lastModifiedMs))}${tag('ETag', etagHeader(isLost ? LOST_PART_ETAG : p.etag))}${tag('Size', p.sizeBytes)}</Part>`;
        }
        damaged.push(`part ${partNumber}: ${damage}`);
        const r = (typeof record === 'object' && record !== null ? record : {}) as Partial<PartRecord>;
        initiatedMs ??= store.getUpload(bucket, key, uploadId).initiatedMs;
        const lastModifiedMs = Number.isFinite(r.lastModifiedMs) ? r.lastModifiedMs! : initiatedMs;
        return `<Part>${tag('PartNumber', partNumber)}${tag('LastModified', iso(lastModifiedMs))}${tag('ETag', `"${DAMAGED_PART_ETAG}"`)}${tag('Size', Number.isFinite(r.sizeBytes) ? r.sizeBytes! : 0)}</Part>`;
      })
      .join('');
    if (damaged.length > 0) {
      ctx.reply.header('x-couchestor-damaged-parts', String(damaged.length));
      log.error(`s3: ListParts listed damaged part records with ETag "${DAMAGED_PART_ETAG}", which CompleteMultipartUpload refuses (\`couchestor fsck\` lists them; upload the part again or abort the upload)`, {
        bucket,
        key,
        uploadId,
        damaged,
      });
    }
    if (lost.length > 0) {
      ctx.reply.header('x-couchestor-lost-parts', String(lost.length));
      log.warn(`s3: ListParts listed parts whose data was lost with a replaced disk (pools replace --discard-volumes) with ETag "${LOST_PART_ETAG}"; CompleteMultipartUpload refuses them until they are uploaded again`, { bucket, key, uploadId, parts: lost });
    }
    // max-parts 0 asks for nothing and gets it, not a page a client would ask again for ever (as max-keys 0).
    const isTruncated = maxParts > 0 && page.isTruncated;
    const next = page.parts.length > 0 ? page.parts[page.parts.length - 1]!.partNumber : marker;
    return sendXml(
      ctx.reply,
      200,
      `${XML_HEADER}<ListPartsResult xmlns="${S3_NS}">${tag('Bucket', bucket)}${tag('Key', key)}${tag('UploadId', uploadId)}<Initiator>${tag('ID', ownerId)}${tag('DisplayName', 'couchestor')}</Initiator>${ownerXml}${tag('StorageClass', classOf(store.getUpload(bucket, key, uploadId)))}${tag('PartNumberMarker', marker)}${tag('NextPartNumberMarker', next)}${tag('MaxParts', maxParts)}${tag('IsTruncated', isTruncated)}${items}</ListPartsResult>`,
    );
  }

  /**
   * ListMultipartUploads: by key, then upload id, from key-marker /
   * upload-id-marker. With a delimiter, the uploads of the keys that share
   * the part of the key up to the delimiter after the prefix are rolled up
   * into one CommonPrefixes entry, counted once against max-uploads (as
   * ListObjects); a key marker that is such a prefix (a truncated page's
   * NextKeyMarker) skips it. encoding-type=url encodes the keys and prefixes
   * as ListObjects does. Keys sharing a prefix are adjacent in the store's
   * order, so one walk (store pages of 1000) rolls them up.
   */
  function listUploads(ctx: Ctx, bucket: string) {
    const q = ctx.query;
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter') ?? '';
    const encodingType = q.get('encoding-type');
    if (encodingType !== undefined && encodingType !== 'url') throw new S3Error('InvalidArgument', 400, 'Invalid Encoding Method specified in Request', { ArgumentName: 'encoding-type' });
    const enc = (s: string) => (encodingType === 'url' ? awsUriEncode(s, true) : s);
    const keyMarker = q.get('key-marker') ?? '';
    const uploadIdMarker = q.get('upload-id-marker') ?? '';
    const maxUploads = parseIntParam(q.get('max-uploads'), 'max-uploads', 1000, 1000);
    const rollUp = (key: string): string | undefined => {
      if (delimiter === '' || !key.startsWith(prefix)) return undefined;
      const i = key.indexOf(delimiter, prefix.length);
      return i < 0 ? undefined : key.slice(0, i + delimiter.length);
    };
    const uploads: ListedUpload[] = [];
    const prefixes: string[] = [];
    let isTruncated = false;
    let next: { key: string; uploadId?: string } | undefined;
    // The prefix being skipped: the one last listed, or the key marker when it is one.
    let skipped = rollUp(keyMarker) === keyMarker ? keyMarker : undefined;
    // A rolled-up prefix is passed by a seek, not by reading its uploads (up to
    // MAX_OPEN_UPLOADS of them): store pages start at UPLOADS_AFTER_SEEK after
    // a seek and double up to MAX_LIST_KEYS while no prefix ends them, so a
    // page reads at most about (max-uploads * UPLOADS_AFTER_SEEK + 2 * max-uploads
    // + MAX_LIST_KEYS) records, however many uploads the prefixes hold.
    const firstPage = Math.min(maxUploads + 1, MAX_LIST_KEYS);
    let cursor = (skipped !== undefined ? pastPrefix(skipped) : undefined) ?? { keyMarker, uploadIdMarker };
    let pageUploads = skipped !== undefined ? Math.min(firstPage, UPLOADS_AFTER_SEEK) : firstPage;
    walk: for (;;) {
      const page = store.listUploads(bucket, { prefix, ...cursor, maxUploads: pageUploads });
      let seek: { keyMarker: string; uploadIdMarker: string } | undefined;
      for (const u of page.uploads) {
        const common = rollUp(u.key);
        if (common !== undefined && common === skipped) continue; // only a prefix pastPrefix cannot seek past
        if (uploads.length + prefixes.length >= maxUploads) {
          // max-uploads 0 asks for nothing and gets it, not truncated (as max-keys 0).
          isTruncated = maxUploads > 0;
          break walk;
        }
        if (common !== undefined) {
          prefixes.push(common);
          skipped = common;
          next = { key: common };
          seek = pastPrefix(common);
          if (seek !== undefined) break;
        } else {
          uploads.push(u);
          next = { key: u.key, uploadId: u.uploadId };
        }
      }
      if (seek !== undefined) {
        cursor = seek;
        pageUploads = Math.min(firstPage, UPLOADS_AFTER_SEEK);
        continue;
      }
      const last = page.uploads[page.uploads.length - 1];
      if (!page.isTruncated || last === undefined) break;
      cursor = { keyMarker: last.key, uploadIdMarker: last.uploadId };
      pageUploads = Math.min(pageUploads * 2, MAX_LIST_KEYS);
    }
    const damaged = uploads.filter((u) => u.damage !== undefined);
    if (damaged.length > 0) {
      ctx.reply.header('x-couchestor-damaged-uploads', String(damaged.length));
      log.error('s3: ListMultipartUploads listed multipart uploads whose record is damaged, under the key and upload id of their index key (Initiated 1970-01-01); AbortMultipartUpload removes one with its parts, `couchestor fsck --quarantine-damaged` (daemon stopped) moves them out', {
        bucket,
        damaged: damaged.map((u) => `${u.key} upload ${u.uploadId}: ${u.damage}`),
      });
    }
    const items = uploads
      .map((u) => `<Upload>${tag('Key', enc(u.key))}${tag('UploadId', u.uploadId)}<Initiator>${tag('ID', ownerId)}${tag('DisplayName', 'couchestor')}</Initiator>${ownerXml}${tag('StorageClass', classOf(u))}${tag('Initiated', iso(u.initiatedMs))}</Upload>`)
      .join('');
    const commonPrefixes = prefixes.map((p) => `<CommonPrefixes>${tag('Prefix', enc(p))}</CommonPrefixes>`).join('');
    let head = `${tag('Bucket', bucket)}${tag('KeyMarker', enc(keyMarker))}${tag('UploadIdMarker', uploadIdMarker)}`;
    if (isTruncated && next !== undefined) head += `${tag('NextKeyMarker', enc(next.key))}${tag('NextUploadIdMarker', next.uploadId ?? '')}`;
    head += tag('Prefix', enc(prefix));
    if (delimiter) head += tag('Delimiter', enc(delimiter));
    head += `${tag('MaxUploads', maxUploads)}${tag('IsTruncated', isTruncated)}`;
    if (encodingType) head += tag('EncodingType', encodingType);
    return sendXml(ctx.reply, 200, `${XML_HEADER}<ListMultipartUploadsResult xmlns="${S3_NS}">${head}${items}${commonPrefixes}</ListMultipartUploadsResult>`);
  }

  return app;
}
