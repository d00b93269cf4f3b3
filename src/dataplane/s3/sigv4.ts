// AWS Signature Version 4 for S3: the Authorization header, presigned URLs
// (query auth), and the request body modes it implies (whole-body SHA-256,
// UNSIGNED-PAYLOAD, aws-chunked with per-chunk signatures and/or trailers),
// including x-amz-checksum-* verification.
import { crc32, crc32c } from '@node-rs/crc32';
import { createHash, createHmac, timingSafeEqual, type Hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { S3Error } from './errors.js';

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** How far a request's X-Amz-Date may be from our clock (S3 uses 15 minutes). */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
/** Presigned URLs live at most 7 days (S3's limit). */
export const MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600;
/** Longest aws-chunked chunk header or trailer line we accept. */
const MAX_CHUNK_LINE_BYTES = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

export interface ChunkSigning {
  signingKey: Buffer;
  amzDate: string;
  scope: string;
  seedSignature: string;
}

export type PayloadMode =
  | { kind: 'unsigned' }
  | { kind: 'sha256'; hex: string }
  /** aws-chunked framing; `signing` present when each chunk carries a signature. */
  | { kind: 'chunked'; signing?: ChunkSigning; trailer: boolean };

export interface AuthResult {
  accessKeyId: string;
  payload: PayloadMode;
  /**
   * A presigned request's header parameters (queryHeaders below): lowercase
   * header name -> value as a header carries it. The caller reads them as the
   * request's headers; empty for the Authorization-header form.
   */
  queryHeaders: ReadonlyMap<string, string>;
}

export interface RequestToVerify {
  method: string;
  /** Raw request target: path and query exactly as received. */
  url: string;
  headers: IncomingHttpHeaders;
}

// ---- URI helpers ----------------------------------------------------------

/** AWS URI encoding: everything but A-Za-z0-9-_.~ (and '/' when keepSlash) as %XX of UTF-8. */
export function awsUriEncode(s: string, keepSlash: boolean): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  return keepSlash ? out.replace(/%2F/g, '/') : out;
}

/** Percent-decoding of a URI component ('+' stays '+'); bad escapes or UTF-8 are InvalidURI. */
export function uriDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error('InvalidURI', 400, "Couldn't parse the specified URI.");
  }
}

export function splitTarget(url: string): { rawPath: string; rawQuery: string } {
  const q = url.indexOf('?');
  return q < 0 ? { rawPath: url, rawQuery: '' } : { rawPath: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

/** Decoded query parameters, in order (a name without '=' has value ''). */
export function parseQuery(rawQuery: string): [string, string][] {
  if (!rawQuery) return [];
  return rawQuery
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? [uriDecode(p), ''] : [uriDecode(p.slice(0, eq)), uriDecode(p.slice(eq + 1))];
    });
}

function canonicalQuery(params: [string, string][]): string {
  return params
    .map(([k, v]) => [awsUriEncode(k, false), awsUriEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

// ---- signing primitives ---------------------------------------------------

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();
const sha256hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** Bounded cache: a signing key is valid for one (secret, day, region) and costs four HMACs. */
const signingKeys = new Map<string, Buffer>();
const MAX_SIGNING_KEYS = 64;

function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const id = `${secret}\n${date}\n${region}\n${service}`;
  let k = signingKeys.get(id);
  if (!k) {
    k = hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
    if (signingKeys.size >= MAX_SIGNING_KEYS) signingKeys.clear();
    signingKeys.set(id, k);
  }
  return k;
}

function sameSignature(a: string, b: string): boolean {
  if (a.length !== b.length || !/^[0-9a-f]+$/.test(a)) return false;
  return timingSafeEqual(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1'));
}

function parseAmzDate(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new S3Error('AccessDenied', 403, 'X-Amz-Date must be in the ISO8601 basic format (YYYYMMDDTHHMMSSZ)');
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

interface Parsed {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
  amzDate: string;
}

function parseCredential(cred: string): Pick<Parsed, 'accessKeyId' | 'date' | 'region' | 'service'> {
  const parts = cred.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || !/^\d{8}$/.test(parts[1]!)) {
    throw new S3Error('AuthorizationHeaderMalformed', 400, 'The authorization header is malformed; the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".');
  }
  if (parts[3] !== 's3') throw new S3Error('AuthorizationHeaderMalformed', 400, `The authorization header is malformed; incorrect service "${parts[3]}". This endpoint belongs to "s3".`);
  return { accessKeyId: parts[0]!, date: parts[1]!, region: parts[2]!, service: parts[3]! };
}

/**
 * Verifies a request's SigV4 signature (header or query form) and tells the
 * caller how the body must be read. Throws S3Error for anything unsigned,
 * malformed, expired or wrongly signed.
 */
export function verifyRequest(req: RequestToVerify, secretFor: (accessKeyId: string) => string | undefined, nowMs: number): AuthResult {
  const { rawPath, rawQuery } = splitTarget(req.url);
  const params = parseQuery(rawQuery);
  const auth = headerValue(req.headers, 'authorization');
  const presigned = params.some(([k]) => k === 'X-Amz-Algorithm');
  let p: Parsed;
  let payloadHash: string;
  let queryForSig = params;
  if (auth !== undefined) {
    if (!auth.startsWith('AWS4-HMAC-SHA256 ')) {
      throw new S3Error('AccessDenied', 403, auth.startsWith('AWS ') ? 'Signature Version 2 is not supported; use AWS Signature Version 4.' : 'Unsupported Authorization type');
    }
    const fields = new Map<string, string>();
    for (const part of auth.slice(17).split(',')) {
      const eq = part.indexOf('=');
      if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
    const cred = fields.get('Credential');
    const sh = fields.get('SignedHeaders');
    const sig = fields.get('Signature');
    if (!cred || !sh || !sig) throw new S3Error('AuthorizationHeaderMalformed', 400, 'The authorization header is malformed; it needs Credential, SignedHeaders and Signature.');
    const amzDate = headerValue(req.headers, 'x-amz-date') ?? dateHeaderAsAmz(headerValue(req.headers, 'date'));
    p = { ...parseCredential(cred), signedHeaders: sh.split(';'), signature: sig, amzDate };
    const ph = headerValue(req.headers, 'x-amz-content-sha256');
    if (ph === undefined) throw new S3Error('InvalidRequest', 400, 'Missing required header for this request: x-amz-content-sha256');
    payloadHash = ph;
    const t = parseAmzDate(amzDate);
    if (Math.abs(nowMs - t) > MAX_CLOCK_SKEW_MS) throw new S3Error('RequestTimeTooSkewed', 403, 'The difference between the request time and the current time is too large.');
  } else if (presigned) {
    const q = new Map(params);
    if (q.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
    const cred = q.get('X-Amz-Credential');
    const sh = q.get('X-Amz-SignedHeaders');
    const sig = q.get('X-Amz-Signature');
    const amzDate = q.get('X-Amz-Date');
    const expires = q.get('X-Amz-Expires');
    if (!cred || !sh || !sig || !amzDate || expires === undefined) {
      throw new S3Error('AuthorizationQueryParametersError', 400, 'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.');
    }
    const expiresS = Number(expires);
    if (!/^\d+$/.test(expires) || expiresS > MAX_PRESIGN_EXPIRES_S) throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Expires must be a number of seconds from 0 to 604800');
    p = { ...parseCredential(cred), signedHeaders: sh.split(';'), signature: sig, amzDate };
    const t = parseAmzDate(amzDate);
    if (nowMs > t + expiresS * 1000) throw new S3Error('AccessDenied', 403, 'Request has expired', { 'X-Amz-Expires': expires });
    if (t - nowMs > MAX_CLOCK_SKEW_MS) throw new S3Error('AccessDenied', 403, 'Request is not valid yet');
    // The SDKs' own name for it, or hoisted from the header as @smithy/signature-v4 does (lowercase);
    // else the header, when signed: aws-sdk-go never hoists a caller's X-Amz-Content-Sha256 (it is
    // one of its requiredSignedHeaders) and signs the payload line with it (aws-sdk-go#1976), as S3 takes.
    payloadHash =
      q.get('X-Amz-Content-Sha256') ??
      q.get('x-amz-content-sha256') ??
      (p.signedHeaders.includes('x-amz-content-sha256') ? headerValue(req.headers, 'x-amz-content-sha256') : undefined) ??
      'UNSIGNED-PAYLOAD';
    queryForSig = params.filter(([k]) => k !== 'X-Amz-Signature');
  } else if (params.some(([k]) => k === 'AWSAccessKeyId') && params.some(([k]) => k === 'Signature')) {
    // A Signature Version 2 presigned URL (s3cmd signurl, boto's generate_url): refused as V2 headers are, not as unsigned.
    throw new S3Error('AccessDenied', 403, 'Signature Version 2 presigned URLs (AWSAccessKeyId, Signature, Expires) are not supported; presign with AWS Signature Version 4 (aws s3 presign, rclone link).');
  } else {
    throw new S3Error('AccessDenied', 403, 'Access Denied: the request is not signed');
  }
  if (p.amzDate.slice(0, 8) !== p.date) throw new S3Error('SignatureDoesNotMatch', 403, 'The credential date does not match X-Amz-Date');
  if (!p.signedHeaders.includes('host')) throw new S3Error('AccessDenied', 403, 'The host header must be signed');
  const secret = secretFor(p.accessKeyId);
  if (secret === undefined) throw new S3Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.');

  const canonicalHeaders = p.signedHeaders.map((h) => `${h}:${(headerValue(req.headers, h) ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const scope = `${p.date}/${p.region}/${p.service}/aws4_request`;
  const key = signingKey(secret, p.date, p.region, p.service);
  const cq = canonicalQuery(queryForSig);
  const sign = (canonicalUri: string) => {
    const canonicalRequest = `${req.method}\n${canonicalUri}\n${cq}\n${canonicalHeaders}\n${p.signedHeaders.join(';')}\n${payloadHash}`;
    const stringToSign = `AWS4-HMAC-SHA256\n${p.amzDate}\n${scope}\n${sha256hex(canonicalRequest)}`;
    return createHmac('sha256', key).update(stringToSign).digest('hex');
  };
  // Clients encode the path strictly (AWS rules) and sign that; one that
  // encodes more loosely signs the path exactly as it sent it.
  const strictUri = awsUriEncode(uriDecode(rawPath), true);
  if (!sameSignature(p.signature, sign(strictUri)) && (strictUri === rawPath || !sameSignature(p.signature, sign(rawPath)))) {
    throw new S3Error('SignatureDoesNotMatch', 403, 'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
  }
  const queryHeaders = presigned && auth === undefined ? presignedHeaders(params, req.headers, p.signedHeaders) : NO_QUERY_HEADERS;
  return { accessKeyId: p.accessKeyId, payload: payloadMode(payloadHash, { signingKey: key, amzDate: p.amzDate, scope, seedSignature: p.signature }), queryHeaders };
}

const NO_QUERY_HEADERS: ReadonlyMap<string, string> = new Map();
/** The query authentication's own parameters (any case): never read as headers. */
const QUERY_AUTH_PARAMS: ReadonlySet<string> = new Set(['x-amz-algorithm', 'x-amz-credential', 'x-amz-date', 'x-amz-expires', 'x-amz-signedheaders', 'x-amz-signature', 'x-amz-security-token', 'x-amz-content-sha256']);
const HEADER_NAME_RE = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
/** What Node accepts in a header value it sends (a stored x-amz-meta-* value is sent back on GET/HEAD). */
const HEADER_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * The headers a presigned request carries in its query string, as S3 reads
 * them. SigV4 requires every x-amz-* header to be signed, and a URL handed
 * to someone else cannot make them send headers, so the SDKs that hoist
 * (aws-sdk-js v2 and v3, aws-sdk-ruby, aws-sdk-go v1) move x-amz-* headers
 * into the query, where the signature covers them (canonical query string),
 * and S3 applies them as the headers (x-amz-meta-*, x-amz-storage-class,
 * x-amz-tagging, x-amz-acl, x-amz-copy-source, ...). Rules, as S3 answers:
 * an x-amz-* header that is not in X-Amz-SignedHeaders is 403 AccessDenied
 * (HeadersNotSigned), so the holder of a URL cannot add one (a copy source,
 * say); a name given both ways (aws-sdk-js v2 signs x-amz-* headers and also
 * puts them in the query) must have the same value, else 400: both are
 * signed and which one S3 would take is undocumented, so neither is
 * guessed. Only x-amz-* names: Content-Type and the like in a query are
 * not read as headers (S3 documents no such thing). Values arrive
 * percent-decoded UTF-8 and are handed on as the bytes a header would carry
 * (Node reads header bytes as latin1).
 */
function presignedHeaders(params: [string, string][], headers: IncomingHttpHeaders, signedHeaders: string[]): Map<string, string> {
  const unsigned = Object.keys(headers).filter((h) => h.startsWith('x-amz-') && !signedHeaders.includes(h));
  if (unsigned.length > 0) throw new S3Error('AccessDenied', 403, 'There were headers present in the request which were not signed', { HeadersNotSigned: unsigned.join(', ') });
  const out = new Map<string, string>();
  for (const [k, v] of params) {
    const name = k.toLowerCase();
    if (!name.startsWith('x-amz-') || QUERY_AUTH_PARAMS.has(name)) continue;
    const value = Buffer.from(v, 'utf8').toString('latin1');
    if (!HEADER_NAME_RE.test(name) || !HEADER_VALUE_RE.test(value)) {
      throw new S3Error('InvalidArgument', 400, `The query parameter ${JSON.stringify(k)} of a presigned URL stands for a header, and is not a valid one.`, { ArgumentName: k });
    }
    const prev = out.get(name);
    out.set(name, prev === undefined ? value : `${prev},${value}`);
  }
  for (const [name, value] of out) {
    const sent = headerValue(headers, name);
    if (sent !== undefined && sent.trim() !== value.trim()) {
      throw new S3Error('InvalidArgument', 400, `${name} is given both in the presigned URL's query and as a header, with different values.`, { ArgumentName: name });
    }
  }
  return out;
}

function dateHeaderAsAmz(date: string | undefined): string {
  const t = date ? Date.parse(date) : NaN;
  if (Number.isNaN(t)) throw new S3Error('AccessDenied', 403, 'AWS authentication requires a valid Date or x-amz-date header');
  return new Date(t).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function payloadMode(hash: string, signing: ChunkSigning): PayloadMode {
  switch (hash) {
    case 'UNSIGNED-PAYLOAD':
      return { kind: 'unsigned' };
    case 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD':
      return { kind: 'chunked', signing, trailer: false };
    case 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER':
      return { kind: 'chunked', signing, trailer: true };
    case 'STREAMING-UNSIGNED-PAYLOAD-TRAILER':
      return { kind: 'chunked', trailer: true };
    default:
      if (!/^[0-9a-f]{64}$/.test(hash)) throw new S3Error('InvalidArgument', 400, 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a SHA-256 hex digest');
      return { kind: 'sha256', hex: hash };
  }
}

// ---- bodies ---------------------------------------------------------------

type ChecksumAlgo = 'crc32' | 'crc32c' | 'sha1' | 'sha256';
const CHECKSUM_ALGOS: readonly ChecksumAlgo[] = ['crc32', 'crc32c', 'sha1', 'sha256'];

class Checksum {
  private crc = 0;
  private hash: Hash | undefined;
  constructor(readonly algo: ChecksumAlgo) {
    if (algo === 'sha1' || algo === 'sha256') this.hash = createHash(algo);
  }
  update(b: Buffer): void {
    if (this.hash) this.hash.update(b);
    else this.crc = this.algo === 'crc32' ? crc32(b, this.crc) : crc32c(b, this.crc);
  }
  base64(): string {
    if (this.hash) return this.hash.digest('base64');
    const b = Buffer.alloc(4);
    b.writeUInt32BE(this.crc >>> 0);
    return b.toString('base64');
  }
}

function checkChecksum(sum: Checksum, expected: string): void {
  if (sum.base64() !== expected.trim()) {
    throw new S3Error('BadDigest', 400, `The ${sum.algo.toUpperCase()} you specified did not match the calculated checksum.`);
  }
}

/**
 * Decodes and verifies a request body according to its payload mode. Data
 * is yielded as it arrives; a verification failure throws (at the latest
 * at the end of the body), so the object store, which only commits after
 * the iterator completes, keeps nothing of a bad upload.
 */
export async function* verifiedBody(source: AsyncIterable<Buffer>, payload: PayloadMode, headers: IncomingHttpHeaders): AsyncGenerator<Buffer> {
  // A checksum in a header covers the whole (decoded) body; one announced in
  // x-amz-trailer arrives after the last chunk.
  let headerSum: { sum: Checksum; expected: string } | undefined;
  for (const algo of CHECKSUM_ALGOS) {
    const v = headerValue(headers, `x-amz-checksum-${algo}`);
    if (v !== undefined) headerSum = { sum: new Checksum(algo), expected: v };
  }
  const trailerName = headerValue(headers, 'x-amz-trailer')?.trim().toLowerCase();
  const trailerAlgo = CHECKSUM_ALGOS.find((a) => trailerName === `x-amz-checksum-${a}`);
  const trailerSum = trailerAlgo ? new Checksum(trailerAlgo) : undefined;

  if (payload.kind === 'chunked') {
    // x-amz-decoded-content-length is what the client says the decoded body is: a
    // body longer or shorter than that is cut or padded somewhere, refused as S3 does
    // (for every body: XML ones too, not only those the store counts).
    const declared = headerValue(headers, 'x-amz-decoded-content-length');
    if (declared === undefined) throw missingDecodedLength();
    if (!/^\d{1,16}$/.test(declared)) throw new S3Error('InvalidArgument', 400, 'x-amz-decoded-content-length must be a number of bytes');
    const declaredBytes = Number(declared);
    let decodedBytes = 0;
    const trailers = new Map<string, string>();
    for await (const piece of decodeChunked(source, payload.signing, payload.trailer, trailers)) {
      decodedBytes += piece.length;
      if (decodedBytes > declaredBytes) throw incompleteBody(declaredBytes, `more than ${declaredBytes}`);
      headerSum?.sum.update(piece);
      trailerSum?.update(piece);
      yield piece;
    }
    if (decodedBytes !== declaredBytes) throw incompleteBody(declaredBytes, String(decodedBytes));
    if (trailerSum) {
      const v = trailers.get(`x-amz-checksum-${trailerSum.algo}`);
      if (v === undefined) throw new S3Error('InvalidRequest', 400, `the trailer ${trailerName} announced in x-amz-trailer was not sent`);
      checkChecksum(trailerSum, v);
    }
  } else {
    const sha = payload.kind === 'sha256' ? createHash('sha256') : undefined;
    for await (const piece of source) {
      sha?.update(piece);
      headerSum?.sum.update(piece);
      yield piece;
    }
    if (sha && payload.kind === 'sha256' && sha.digest('hex') !== payload.hex) {
      throw new S3Error('XAmzContentSHA256Mismatch', 400, "The provided 'x-amz-content-sha256' header does not match what was computed.");
    }
  }
  if (headerSum) checkChecksum(headerSum.sum, headerSum.expected);
}

/** An aws-chunked body without x-amz-decoded-content-length (S3 and MinIO: 411 MissingContentLength). */
export const missingDecodedLength = () =>
  new S3Error('MissingContentLength', 411, 'You must provide the Content-Length HTTP header: an aws-chunked body needs x-amz-decoded-content-length, the length of the data it carries.');

const incompleteBody = (declaredBytes: number, got: string) =>
  new S3Error('IncompleteBody', 400, `You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header (${declaredBytes} declared, ${got} decoded).`);

/**
 * Whether the request carries an integrity check of its body that S3 accepts
 * where one is required (DeleteObjects) and that verifiedBody verifies:
 * Content-MD5, an x-amz-checksum-<algo> header of an algorithm computed here,
 * or such a checksum announced as a trailer of an aws-chunked body with
 * trailers. A header naming anything else (crc64nvme, an unknown algorithm, a
 * trailer on a body that cannot carry one) is checked by nobody, so it does not count.
 */
export function hasBodyChecksum(headers: IncomingHttpHeaders, payload: PayloadMode): boolean {
  if (headerValue(headers, 'content-md5') !== undefined) return true;
  if (CHECKSUM_ALGOS.some((a) => headerValue(headers, `x-amz-checksum-${a}`) !== undefined)) return true;
  if (payload.kind !== 'chunked' || !payload.trailer) return false;
  const trailerName = headerValue(headers, 'x-amz-trailer')?.trim().toLowerCase();
  return CHECKSUM_ALGOS.some((a) => trailerName === `x-amz-checksum-${a}`);
}

/** No body byte arrived for the idle timeout while the request waited for one. */
export const requestTimeout = () =>
  new S3Error('RequestTimeout', 400, 'Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.');

/**
 * `source` with an idle bound: each wait for the next piece fails with
 * RequestTimeout after `idleMs` without a byte. Only the waits count: time the
 * consumer spends between pieces (a store write, a parse slice) is not the
 * client's, so a slow-but-steady upload is never cut, a stalled one is.
 * After a timeout the pending read is abandoned (its rejection, when the
 * connection closes, is swallowed); the caller answers and closes.
 */
export async function* idleBounded(source: AsyncIterable<Buffer>, idleMs: number): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  // One timer for the whole body, re-armed (refresh) at each wait: a timer made and
  // cleared per 64 KiB piece cost ~2 us a piece, refreshed ~1 us. When it fires
  // between waits (the consumer is slow) nobody is waiting and nothing happens.
  let rejectWait: ((err: S3Error) => void) | undefined;
  const timer = setTimeout(() => rejectWait?.(requestTimeout()), idleMs).unref();
  let abandoned = false;
  let finished = false;
  try {
    for (;;) {
      const next = it.next();
      const idle = new Promise<never>((_, reject) => {
        rejectWait = reject;
      });
      timer.refresh();
      let r: IteratorResult<Buffer>;
      try {
        r = await Promise.race([next, idle]);
      } catch (err) {
        if (err instanceof S3Error && err.code === 'RequestTimeout') {
          abandoned = true;
          next.catch(() => {});
        }
        throw err;
      } finally {
        rejectWait = undefined;
      }
      if (r.done) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    clearTimeout(timer);
    // As a for-await would on an early exit; a read still pending queues the
    // return behind it, so it is not awaited then (the socket close settles both).
    const ret = finished ? undefined : it.return?.();
    if (abandoned) ret?.catch(() => {});
    else await ret;
  }
}

const malformed = (why: string) => new S3Error('InvalidRequest', 400, `malformed aws-chunked body: ${why}`);

const CR = 0x0d;
const LF = 0x0a;
const SEMICOLON = 0x3b;
/** Hex digit value of a byte, -1 for any other byte. */
const HEX_VALUE = new Int8Array(256).fill(-1);
for (let c = 0; c < 16; c++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(c)] = c;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(c)] = c;
}
/**
 * Decoded pieces under this size are copied into one buffer and handed on
 * together (at most COALESCE_BYTES, and before every wait for the client):
 * a body in one-byte chunks otherwise reached the store as one Buffer per
 * byte, each kept in its 1 MiB write batch (a 4 MiB PutObject grew the heap
 * 444 MiB and made a million-iovec writev). Larger pieces pass uncopied.
 */
const SMALL_PIECE_BYTES = 4096;
const COALESCE_BYTES = 64 * 1024;
/**
 * A turn of the event loop every this many chunks: decoding runs on
 * microtasks while the socket has data buffered, and one-byte chunks
 * (~1 us each) held every other client for the whole of a socket read.
 */
const CHUNKS_PER_TURN = 1024;

/** aws-chunked: `hex-size[;chunk-signature=sig]\r\n data \r\n` ... `0[;...]\r\n [trailers] \r\n`. */
async function* decodeChunked(source: AsyncIterable<Buffer>, signing: ChunkSigning | undefined, trailer: boolean, trailers: Map<string, string>): AsyncGenerator<Buffer> {
  // Bytes not yet decoded are pending[pos..]: an offset, not a subarray per step.
  let pending: Buffer = Buffer.alloc(0);
  let pos = 0;
  let prevSig = signing?.seedSignature ?? '';
  let state: 'header' | 'data' | 'crlf' | 'trailer' | 'final' | 'done' = 'header';
  let remaining = 0;
  let chunkSig = '';
  let chunkHash: Hash | undefined;
  let trailerBytes = 0;
  let chunksSinceTurn = 0;
  const small = Buffer.allocUnsafe(COALESCE_BYTES);
  let smallBytes = 0;
  // A copy: the consumer keeps what it is given (the store batches pieces), so `small` is reused.
  const takeSmall = (): Buffer => {
    const out = Buffer.allocUnsafe(smallBytes);
    small.copy(out, 0, 0, smallBytes);
    smallBytes = 0;
    return out;
  };

  const verifyChunk = () => {
    if (!signing) return;
    const sts = `AWS4-HMAC-SHA256-PAYLOAD\n${signing.amzDate}\n${signing.scope}\n${prevSig}\n${EMPTY_SHA256}\n${chunkHash!.digest('hex')}`;
    const expected = createHmac('sha256', signing.signingKey).update(sts).digest('hex');
    if (!sameSignature(chunkSig, expected)) throw new S3Error('SignatureDoesNotMatch', 403, 'The chunk signature we calculated does not match the signature you provided.');
    prevSig = chunkSig;
  };

  const finishTrailers = () => {
    if (signing) {
      const sig = trailers.get('x-amz-trailer-signature');
      if (sig === undefined) throw new S3Error('SignatureDoesNotMatch', 403, 'the trailer signature is missing');
      let canon = '';
      for (const [k, v] of trailers) if (k !== 'x-amz-trailer-signature') canon += `${k}:${v}\n`;
      const sts = `AWS4-HMAC-SHA256-TRAILER\n${signing.amzDate}\n${signing.scope}\n${prevSig}\n${sha256hex(canon)}`;
      const expected = createHmac('sha256', signing.signingKey).update(sts).digest('hex');
      if (!sameSignature(sig, expected)) throw new S3Error('SignatureDoesNotMatch', 403, 'The trailer signature we calculated does not match the signature you provided.');
    }
    state = 'done';
  };

  for await (const incoming of source) {
    pending = pos < pending.length ? Buffer.concat([pending.subarray(pos), incoming]) : incoming;
    pos = 0;
    for (;;) {
      if (state === 'data') {
        const available = pending.length - pos;
        if (available === 0) break;
        const take = Math.min(remaining, available);
        const piece = pending.subarray(pos, pos + take);
        pos += take;
        remaining -= take;
        chunkHash?.update(piece);
        if (take < SMALL_PIECE_BYTES) {
          if (smallBytes + take > COALESCE_BYTES) yield takeSmall();
          piece.copy(small, smallBytes);
          smallBytes += take;
        } else {
          if (smallBytes > 0) yield takeSmall();
          yield piece;
        }
        if (remaining === 0) state = 'crlf';
        continue;
      }
      if (state === 'done') {
        if (pos < pending.length) throw malformed('data after the final chunk');
        break;
      }
      if (state === 'crlf') {
        if (pending.length - pos < 2) break;
        if (pending[pos] !== CR || pending[pos + 1] !== LF) throw malformed('chunk data not followed by CRLF');
        pos += 2;
        verifyChunk();
        state = 'header';
        continue;
      }
      const eol = pending.indexOf(CR, pos);
      if (eol < 0 || eol + 1 === pending.length) {
        if (pending.length - pos > MAX_CHUNK_LINE_BYTES) throw malformed('line too long');
        break;
      }
      if (pending[eol + 1] !== LF) throw malformed('CR not followed by LF');
      const lineStart = pos;
      pos = eol + 2;
      if (state === 'final') {
        if (eol !== lineStart) throw malformed('data after the final chunk');
        state = 'done';
        continue;
      }
      if (state === 'trailer') {
        trailerBytes += eol - lineStart + 2;
        if (trailerBytes > MAX_TRAILER_BYTES) throw malformed('trailers too long');
        if (eol === lineStart) {
          finishTrailers();
          continue;
        }
        const line = pending.toString('latin1', lineStart, eol);
        const colon = line.indexOf(':');
        if (colon <= 0) throw malformed('bad trailer line');
        trailers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        continue;
      }
      // Chunk header: 1 to 8 hex digits, then nothing or `;` and an extension, read from the bytes.
      let size = 0;
      let at = lineStart;
      for (; at < eol && at - lineStart < 8; at++) {
        const digit = HEX_VALUE[pending[at]!]!;
        if (digit < 0) break;
        size = size * 16 + digit;
      }
      if (at === lineStart || (at < eol && pending[at] !== SEMICOLON)) throw malformed('bad chunk size');
      if (signing) {
        const m = /^chunk-signature=([0-9a-f]{64})$/.exec(at < eol ? pending.toString('latin1', at + 1, eol) : '');
        if (!m) throw new S3Error('SignatureDoesNotMatch', 403, 'a chunk is missing its chunk-signature');
        chunkSig = m[1]!;
        chunkHash = createHash('sha256');
      }
      if (++chunksSinceTurn >= CHUNKS_PER_TURN) {
        chunksSinceTurn = 0;
        if (smallBytes > 0) yield takeSmall();
        await yieldToEventLoop();
      }
      if (size > 0) {
        remaining = size;
        state = 'data';
        continue;
      }
      verifyChunk();
      state = trailer ? 'trailer' : 'final';
    }
    // Nothing held back while the client is waited for.
    if (smallBytes > 0) yield takeSmall();
  }
  // Some clients end the body right after the zero chunk's header line.
  const endState = state as string; // assigned inside closures too, which narrowing does not see
  if (endState === 'final' && pos === pending.length) return;
  if (endState !== 'done') throw new S3Error('IncompleteBody', 400, 'The request body ended before the final aws-chunked chunk.');
}
