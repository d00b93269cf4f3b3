// S3 test harness: a real daemon, its generated credentials, the Debian aws
// cli in an isolated HOME, an @aws-sdk/client-s3 client, and an independent
// SigV4 signer (@smithy/signature-v4, the SDK's own) for hand-made requests.
import { CompleteMultipartUploadCommand, CreateBucketCommand, CreateMultipartUploadCommand, HeadObjectCommand, PutObjectCommand, S3Client, UploadPartCommand, type S3ServiceException } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { TestDaemon } from './daemon.js';

export interface S3Env {
  daemon: TestDaemon;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  home: string;
  sdk: S3Client;
  cleanup(): Promise<void>;
}

/**
 * `config`: a couchestor.yaml for a new data directory (merged over the embedded default, e.g. `s3: {bodyIdleTimeoutMs: 2000}`);
 * `env`: added to the daemon's environment (test hooks such as COUCHESTOR_TEST_PAUSE_POOL_REBUILD=1).
 */
export async function startS3(opts: { dataDir?: string; config?: string; env?: NodeJS.ProcessEnv } = {}): Promise<S3Env> {
  const daemon = await TestDaemon.start({ dataDir: opts.dataDir, config: opts.config, env: opts.env });
  const creds = JSON.parse(fs.readFileSync(path.join(daemon.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  const { accessKeyId, secretAccessKey } = creds.keys[0]!;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 's3-home-'));
  const endpoint = daemon.s3Endpoint;
  const sdk = sdkClient(endpoint, accessKeyId, secretAccessKey);
  return {
    daemon,
    endpoint,
    accessKeyId,
    secretAccessKey,
    home,
    sdk,
    async cleanup() {
      sdk.destroy();
      await daemon.cleanup();
      fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/**
 * Called in a describe(): one daemon (startS3) with bucket `bucket` (hot
 * tier), started before the block's tests and cleaned up after them. The
 * returned function gives its environment (from a test, once started).
 */
export function s3WithBucketForSuite(bucket: string): () => S3Env {
  let env: S3Env | undefined;
  before(async () => {
    env = await startS3();
    await env.sdk.send(new CreateBucketCommand({ Bucket: bucket }));
  });
  after(async () => {
    await env?.cleanup();
  });
  return () => env!;
}

/** startS3 with two buckets: `hot` (hot tier) and `cold` (cold tier), the pair most S3 tests run each case on. */
export async function startS3HotAndCold(opts: { dataDir?: string; config?: string } = {}): Promise<S3Env> {
  const env = await startS3(opts);
  await env.sdk.send(new CreateBucketCommand({ Bucket: 'hot' }));
  await createColdBucket(env, 'cold');
  return env;
}

/**
 * startS3HotAndCold() with `body` stored in bucket 'cold' as object 'k' and,
 * with `multipart`, as 'mp' too (one part, completed): the cold objects a
 * test then loses or rebuilds pools under. If a write fails the daemon is
 * cleaned up here; otherwise the caller cleans it up (after a restartS3, the
 * new environment's).
 */
export async function startS3WithColdObjects(body: Buffer, opts: { multipart: boolean }): Promise<S3Env> {
  const env = await startS3HotAndCold();
  try {
    await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: 'k', Body: body }));
    if (opts.multipart) {
      const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: 'cold', Key: 'mp' }));
      const part = await env.sdk.send(new UploadPartCommand({ Bucket: 'cold', Key: 'mp', UploadId, PartNumber: 1, Body: body }));
      await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'cold', Key: 'mp', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } }));
    }
  } catch (err) {
    await env.cleanup();
    throw err;
  }
  return env;
}

/** [HTTP status, S3 error code] of an SDK call that failed; [200, 'OK'] when it succeeded. Errors with no HTTP answer are thrown. */
export async function outcome(p: Promise<unknown>): Promise<[number, string]> {
  try {
    await p;
    return [200, 'OK'];
  } catch (err) {
    const e = err as S3ServiceException;
    if (e.$metadata?.httpStatusCode === undefined) throw err;
    return [e.$metadata.httpStatusCode, e.name];
  }
}

/** A SIGKILLed daemon's environment, restarted on the same data directory (the old one's cleanup would delete it). */
export async function restartS3(env: S3Env): Promise<S3Env> {
  env.sdk.destroy();
  fs.rmSync(env.home, { recursive: true, force: true });
  return startS3({ dataDir: env.daemon.dataDir });
}

export function sdkClient(endpoint: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });
}

/** Creates `bucket` on the cold tier: x-couchestor-tier: cold is added at the build step, so it is signed like any header. */
export async function createColdBucket(env: S3Env, bucket: string): Promise<void> {
  const creator = sdkClient(env.endpoint, env.accessKeyId, env.secretAccessKey);
  creator.middlewareStack.add(
    (next) => async (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-couchestor-tier'] = 'cold';
      return next(args);
    },
    { step: 'build' },
  );
  try {
    await creator.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    creator.destroy();
  }
}

/** Environment for the aws cli: only our keys, no config or credentials from the real HOME. */
export function cliEnv(env: S3Env): NodeJS.ProcessEnv {
  return {
    PATH: '/usr/bin:/bin',
    HOME: env.home,
    AWS_CONFIG_FILE: path.join(env.home, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(env.home, 'credentials'),
    AWS_ACCESS_KEY_ID: env.accessKeyId,
    AWS_SECRET_ACCESS_KEY: env.secretAccessKey,
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PAGER: '',
    LANG: 'C.UTF-8',
  };
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `/usr/bin/aws --endpoint-url ... ARGS` (Debian's aws cli v2). */
export function aws(env: S3Env, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync('/usr/bin/aws', ['--endpoint-url', env.endpoint, '--no-cli-pager', ...args], {
    env: cliEnv(env),
    encoding: 'utf8',
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 120_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like `aws` but throws unless it exits 0; parses JSON output when there is any. */
export function awsOk(env: S3Env, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): any {
  const r = aws(env, args, opts);
  if (r.status !== 0) throw new Error(`aws ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  const out = r.stdout.trim();
  if (out.startsWith('{') || out.startsWith('[')) return JSON.parse(out);
  return out;
}

/** What the aws cli saw of a call that failed. */
export interface Refusal {
  exit: number | null;
  /** S3 error code the cli printed. */
  code: string | undefined;
  message: string;
  /** HTTP status of the (last) response, from the cli's --debug log. */
  httpStatus: number | undefined;
}

/** Runs a call expected to fail; returns the S3 code, message and HTTP status the cli saw. */
export function awsFail(env: S3Env, args: string[]): Refusal {
  const r = aws(env, [...args, '--debug']);
  assert.notEqual(r.status, 0, `aws ${args.join(' ')} succeeded:\n${r.stdout}`);
  const m = /An error occurred \(([A-Za-z]+)\) when calling the \w+ operation: (.*)/.exec(r.stderr);
  const statuses = [...r.stderr.matchAll(/HTTP\/1\.1" (\d{3}) /g)];
  return { exit: r.status, code: m?.[1], message: m?.[2] ?? '', httpStatus: statuses.length > 0 ? Number(statuses[statuses.length - 1]![1]) : undefined };
}

/** SHA-256 / HMAC-SHA256 in the shape @smithy/signature-v4 expects. */
class NodeSha256 {
  private h: Hash | Hmac;
  constructor(secret?: string | Uint8Array) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', secret);
  }
  update(data: Uint8Array | string): void {
    this.h.update(data);
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {}
}

export function signer(env: S3Env, secretAccessKey = env.secretAccessKey): SignatureV4 {
  return new SignatureV4({ service: 's3', region: 'us-east-1', credentials: { accessKeyId: env.accessKeyId, secretAccessKey }, sha256: NodeSha256 as never, uriEscapePath: false, applyChecksum: false });
}

/** The Code element of an S3 error document. */
export function errorCode(xml: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(xml)?.[1];
}

/** The daemon's /metrics text (Prometheus exposition), scraped once. */
export function scrapeMetrics(env: S3Env): Promise<string> {
  const { host, port } = env.daemon.info.metrics;
  return new Promise<string>((resolve, reject) => {
    http.get({ host, port, path: '/metrics', agent: false }, (res) => {
      let t = '';
      res.on('data', (d: Buffer) => (t += d.toString()));
      res.on('end', () => resolve(t));
    }).on('error', reject);
  });
}

/** The value of series `name` (with `pool`: its {pool="..."} series) in one scrape of the daemon's /metrics; undefined: no such series. */
export async function scrapeValue(env: S3Env, name: string, pool?: string): Promise<number | undefined> {
  const prefix = pool === undefined ? `${name} ` : `${name}{pool="${pool}"} `;
  const line = (await scrapeMetrics(env)).split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(prefix.length));
}

/** couchestor_s3_cold_pools_unverified of cold-0..cold-5 (-1: no series), from one scrape each. */
export async function coldPoolsUnverified(env: S3Env): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < 6; i++) out.push((await scrapeValue(env, 'couchestor_s3_cold_pools_unverified', `cold-${i}`)) ?? -1);
  return out;
}

/** A hand-made request's answer. status -1: none (the connection failed or was cut first). */
export interface RawAnswer {
  status: number;
  body: string;
}

/**
 * Sends a request on its own connection (`headers` already signed) and
 * collects the answer. `send(r, unanswered)` writes the body and ends or
 * cuts the request; `unanswered` resolves status -1 unless an answer came.
 */
export function rawRequest(env: S3Env, method: string, pathWithQuery: string, headers: Record<string, string>, send: (r: http.ClientRequest, unanswered: () => void) => void): Promise<RawAnswer> {
  const u = new URL(env.endpoint);
  return new Promise((resolve) => {
    let answered = false;
    const unanswered = () => {
      if (!answered) resolve({ status: -1, body: '' });
    };
    const r = http.request({ host: u.hostname, port: u.port, method, path: pathWithQuery, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        answered = true;
        resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    r.on('error', unanswered);
    send(r, unanswered);
  });
}

/**
 * The aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) of `data` and
 * the final empty chunk, each chunk's signature chained from the seed
 * request's (`seedHeaders`: the headers signed at `date`, with x-amz-date and
 * authorization). `corruptChunk` (an index, the final chunk included) gets
 * one wrong hex digit; -1: none.
 */
export async function signedChunkedBody(env: S3Env, seedHeaders: Record<string, string>, date: Date, data: Buffer[], corruptChunk = -1): Promise<Buffer> {
  const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  const amzDate = seedHeaders['x-amz-date']!;
  const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  let prev = /Signature=([0-9a-f]{64})/.exec(seedHeaders.authorization!)![1]!;
  const parts: Buffer[] = [];
  for (const [i, chunk] of [...data, Buffer.alloc(0)].entries()) {
    const sts = `AWS4-HMAC-SHA256-PAYLOAD\n${amzDate}\n${scope}\n${prev}\n${sha256hex('')}\n${sha256hex(chunk)}`;
    let sig = await signer(env).sign(sts, { signingDate: date });
    if (i === corruptChunk) sig = sig.slice(0, -1) + (sig.endsWith('0') ? '1' : '0');
    parts.push(Buffer.from(`${chunk.length.toString(16)};chunk-signature=${sig}\r\n`), chunk, Buffer.from('\r\n'));
    prev = sig;
  }
  return Buffer.concat(parts);
}

/**
 * A hand-signed request (UNSIGNED-PAYLOAD, a string body), on a connection
 * of its own (a pooled one can meet the server's keep-alive close between
 * calls): bodies and methods the cli never sends. Rejects if the connection fails.
 */
export async function signedRequest(env: S3Env, method: string, pathname: string, query: Record<string, string>, body = '', headers: Record<string, string> = {}): Promise<RawAnswer> {
  const u = new URL(env.endpoint);
  const req = { method, protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(Buffer.byteLength(body)), ...headers } };
  const s = (await signer(env).sign(req as never)) as unknown as { headers: Record<string, string> };
  const qs = new URLSearchParams(query).toString().replace(/\+/g, '%20');
  return new Promise((resolve, reject) => {
    const r = http.request({ host: u.hostname, port: u.port, method, path: `${pathname}${qs ? `?${qs}` : ''}`, headers: s.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

/** Whether bucket/key exists (HeadObject through the SDK: 404 is false, any other error throws). */
export async function objectExists(env: S3Env, bucket: string, key: string): Promise<boolean> {
  try {
    await env.sdk.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

/** The hot pool's object data files (pools/hot-0/objects/<dir>/<file>), sorted: what uploads leave on disk. */
export function hotObjectFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out: string[] = [];
  for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
  return out.sort();
}

/** The cold pools' segments as GET /v1/compaction lists them. */
function coldSegments(env: S3Env): Promise<{ sizeBytes: number; deadBytes: number }[]> {
  const { host, port } = env.daemon.info.api;
  return new Promise((resolve, reject) => {
    http.get({ host, port, path: '/v1/compaction', agent: false }, (res) => {
      let t = '';
      res.on('data', (d: Buffer) => (t += d.toString()));
      res.on('end', () => resolve((JSON.parse(t) as { segments: { sizeBytes: number; deadBytes: number }[] }).segments));
    }).on('error', reject);
  });
}

/**
 * Bytes the cold pools' segments hold for stripes still in use: their sizes
 * less the bytes told dead (GET /v1/compaction). What a write left behind on
 * the cold tier; compaction, which drops dead bytes, leaves it unchanged.
 */
export async function coldLiveBytes(env: S3Env): Promise<number> {
  return (await coldSegments(env)).reduce((sum, s) => sum + s.sizeBytes - s.deadBytes, 0);
}

/** Bytes the cold pools' segments hold, dead ones included: what every write to the cold tier adds to. */
export async function coldSegmentBytes(env: S3Env): Promise<number> {
  return (await coldSegments(env)).reduce((sum, s) => sum + s.sizeBytes, 0);
}
