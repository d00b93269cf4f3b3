// Shared harness of the control-loop and migration tests: a real daemon with a
// fast heat window, StoragePolicy files, the `couchestor` CLI's JSON output,
// a /metrics scraper, and fio / nbdcopy as the real clients.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Decision, PolicyStatus } from '../../src/control/loop.js';
import type { VolumeRecord } from '../../src/dataplane/meta/store.js';
import { CLI, CLIENT_ENV, run, TestDaemon } from './daemon.js';

/** Heat window of every test policy: short, so a volume cools down in seconds. */
export const WINDOW_MS = 2_000;
export const HEAT_SAMPLE_INTERVAL_MS = 200;
/**
 * Time for a heat window to be entirely past an event (load stopped or
 * started): the window plus two samples of slack. The only reason a test sleeps.
 */
export const WINDOW_SETTLE_MS = WINDOW_MS + 3 * HEAT_SAMPLE_INTERVAL_MS;
/**
 * Watermarks: the fio load below runs ~500-1000 IOPS even on a cold volume
 * (whose 4 KiB random reads each read a whole 1 MiB stripe), the verifier ~20.
 */
export const HIGH_IOPS = 200;
export const LOW_IOPS = 50;
/** rate_iops of the load generator (per direction for randrw). */
export const LOAD_RATE_IOPS = 500;

export interface DaemonConfigOptions {
  /** Default: a pass only when a test asks for one (`reconcile`), plus the first at start. */
  reconcileIntervalMs?: number;
  preservationMode?: boolean;
  heatSource?: { type: 'local' } | { type: 'prometheus'; url: string; metrics: 'seed' | 'couchestor' };
  /** Cold-tier destager period (daemon default 5 s). */
  destageIntervalMs?: number;
}

/** couchestor.yaml: embedded pools (hot-0, cold-0..5), no demo volume, fast heat sampling. */
export function daemonConfig(o: DaemonConfigOptions = {}): string {
  return YAML.stringify({
    demoVolume: null,
    control: {
      // An hour: passes run when the test calls `reconcile`, so every
      // decision the test asserts comes from a pass it started.
      reconcileIntervalMs: o.reconcileIntervalMs ?? 3_600_000,
      heatSampleIntervalMs: HEAT_SAMPLE_INTERVAL_MS,
      preservationMode: o.preservationMode ?? false,
      heatSource: o.heatSource ?? { type: 'local' },
    },
    ...(o.destageIntervalMs !== undefined ? { coldTier: { destageIntervalMs: o.destageIntervalMs } } : {}),
  });
}

/** A StoragePolicy spec: the test defaults (watermarks, heat window, ecPolicyRef standard-ec); `spec` entries override (undefined deletes). */
export function policySpec(spec: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    highWatermarkIOPS: HIGH_IOPS,
    lowWatermarkIOPS: LOW_IOPS,
    samplingWindow: `${WINDOW_MS / 1000}s`,
    cooldownPeriod: '0s',
    hotPoolSelector: { matchLabels: { tier: 'hot' } },
    coldPoolSelector: { matchLabels: { tier: 'cold' } },
    ecPolicyRef: 'standard-ec',
    maxConcurrentMigrations: 2,
    enabled: true,
    dryRun: false,
  };
  for (const [k, v] of Object.entries(spec)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base;
}

/** A StoragePolicy document; `spec` entries override the test defaults (undefined deletes). */
export function policyYaml(name: string, spec: Record<string, unknown> = {}): string {
  return YAML.stringify({ apiVersion: 'storage.billyronks.io/v1', kind: 'StoragePolicy', metadata: { name }, spec: policySpec(spec) });
}

/** Starts a daemon whose policies directory holds exactly `policies` (file name -> YAML). */
export async function startControlDaemon(opts: { policies: Record<string, string>; config?: DaemonConfigOptions; args?: string[]; dataDir?: string; env?: NodeJS.ProcessEnv }): Promise<TestDaemon> {
  const dataDir = opts.dataDir ?? fs.mkdtempSync('/tmp/couchestor-ctl-');
  fs.mkdirSync(path.join(dataDir, 'policies'), { recursive: true });
  for (const [file, text] of Object.entries(opts.policies)) fs.writeFileSync(path.join(dataDir, 'policies', file), text);
  return TestDaemon.start({ dataDir, config: daemonConfig(opts.config), args: opts.args, env: opts.env });
}

/**
 * The daemon env of the migration hold (test hook COUCHESTOR_TEST_HOLD_MIGRATION):
 * the first move holds after its first chunk, so it is still running at the
 * next pass or at a stop whatever the load; heldMove() waits for it,
 * releaseMove() lets it run to its end.
 */
export const HOLD_MIGRATION_ENV = { COUCHESTOR_TEST_HOLD_MIGRATION: '1' };

/** Resolves once the held move of `volume` (HOLD_MIGRATION_ENV) has switched its first chunk and holds. */
export async function heldMove(d: TestDaemon, volume: string): Promise<void> {
  const line = await d.line(/^couchestor held migration /, 120_000);
  const held = (JSON.parse(line.slice('couchestor held migration '.length)) as { volume: string }).volume;
  if (held !== volume) throw new Error(`the move held is ${held}'s, not ${volume}'s`);
}

/** Lets the held move run on (SIGUSR2: the hold's release; moves after it are not held). */
export function releaseMove(d: TestDaemon): void {
  d.proc.kill('SIGUSR2');
}

/** Replaces a policy file atomically (the loop never reads a half-written file). */
export function writePolicy(d: TestDaemon, file: string, text: string): void {
  const target = path.join(d.dataDir, 'policies', file);
  fs.writeFileSync(target + '.tmp', text);
  fs.renameSync(target + '.tmp', target);
}

export interface StatusBody {
  policies: PolicyStatus[];
  activeMigrations: number;
  totals: { succeeded: number; failed: number; aborted: number };
}

/**
 * The admin API the `couchestor` CLI calls (same JSON as its --json output).
 * Tests call it directly: a CLI process costs a second or two of start-up on
 * this shared machine, and spawnSync would stall the test's event loop.
 */
async function api<T>(d: TestDaemon, method: string, urlPath: string, body?: unknown): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}${urlPath}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath} answered ${res.status}: ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

/** `couchestor ... --json` through the real CLI. */
export function cliJson<T>(d: TestDaemon, ...args: string[]): T {
  const r = d.cli(...args, '--json');
  if (r.status !== 0) throw new Error(`couchestor ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export function status(d: TestDaemon): Promise<StatusBody> {
  return api<StatusBody>(d, 'GET', '/v1/status');
}

/** One control-loop pass now (`couchestor reconcile`); with wait, also until the migrations it started finish. */
export async function reconcile(d: TestDaemon, wait: boolean): Promise<PolicyStatus[]> {
  return (await api<{ policies: PolicyStatus[] }>(d, 'POST', `/v1/reconcile${wait ? '?wait=1' : ''}`)).policies;
}

export function policyNamed(policies: PolicyStatus[], name: string): PolicyStatus {
  const p = policies.find((x) => x.name === name);
  if (!p) throw new Error(`no status for policy ${name}: ${JSON.stringify(policies.map((x) => x.name))}`);
  return p;
}

export function decisionFor(p: PolicyStatus, volume: string): Decision {
  const d = p.decisions.find((x) => x.volume === volume);
  if (!d) throw new Error(`policy ${p.name} has no decision for ${volume}: ${JSON.stringify(p.decisions)}`);
  return d;
}

/** `couchestor volumes create` through the API. */
export function createVolume(d: TestDaemon, name: string, sizeBytes: number, extra: { tier?: 'hot' | 'cold'; labels?: Record<string, string> } = {}): Promise<VolumeRecord> {
  return api<VolumeRecord>(d, 'POST', '/v1/volumes', { name, sizeBytes, ...extra });
}

export function volume(d: TestDaemon, name: string): Promise<VolumeRecord> {
  return api<VolumeRecord>(d, 'GET', `/v1/volumes/${encodeURIComponent(name)}`);
}

export interface ColdStatus {
  journalBytes: number;
  stripesWritten: number;
  degradedReads: number;
  stripes: { Healthy: number; Degraded: number; Reconstructing: number; Failed: number };
}

/** `couchestor cold`. */
export function coldStatus(d: TestDaemon): Promise<ColdStatus> {
  return api<ColdStatus>(d, 'GET', '/v1/cold');
}

export async function scrape(d: TestDaemon): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`);
  if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** Value of the sample `name{labels...}` (all given labels must match), or undefined. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[l[1]!] = l[2]!;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/**
 * Resolves once the daemon's stderr matches `re`. CLI calls are synchronous,
 * so log lines written meanwhile are only read once the test yields.
 */
export function waitForLog(d: TestDaemon, re: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = re.exec(d.stderr);
      if (!m) return;
      clearTimeout(timer);
      d.proc.stderr!.off('data', onData);
      resolve(m[0]);
    };
    // Runs after TestDaemon's own listener has appended the chunk.
    const onData = () => setImmediate(check);
    const timer = setTimeout(() => {
      d.proc.stderr!.off('data', onData);
      reject(new Error(`daemon log never matched ${re}:\n${d.stderr}`));
    }, timeoutMs);
    d.proc.stderr!.on('data', onData);
    check();
  });
}

/** Waits for a heat window (or a cooldown) to pass: the one thing with no event to wait on. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function randomFile(file: string, lengthBytes: number): void {
  const fd = fs.openSync(file, 'w');
  const piece = 4 * 1024 * 1024;
  for (let at = 0; at < lengthBytes; at += piece) {
    const buf = Buffer.allocUnsafe(Math.min(piece, lengthBytes - at));
    // Random bytes: a zero chunk would be discarded, not striped.
    for (let i = 0; i < buf.length; i += 65536) buf.set(cryptoRandom(Math.min(65536, buf.length - i)), i);
    fs.writeSync(fd, buf);
  }
  fs.closeSync(fd);
}

function cryptoRandom(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/** Copies a local file to the start of an export with nbdcopy (export may be larger). */
export function nbdcopyIn(file: string, uri: string): void {
  run('nbdcopy', [file, uri]);
}

/** Reads an export back with nbdcopy; returns its first `lengthBytes` bytes. */
export function nbdcopyOut(uri: string, scratchFile: string, lengthBytes: number): Buffer {
  run('nbdcopy', [uri, scratchFile]);
  const buf = Buffer.alloc(lengthBytes);
  const fd = fs.openSync(scratchFile, 'r');
  try {
    fs.readSync(fd, buf, 0, lengthBytes, 0);
  } finally {
    fs.closeSync(fd);
  }
  fs.rmSync(scratchFile, { force: true });
  return buf;
}

export interface FioJobResult {
  /** fio exits 128 when stopped by SIGINT; 0 on a normal end. */
  code: number | null;
  stderr: string;
  /** jobs[0] of fio's JSON report. */
  job: { error: number; read: { io_bytes: number; total_ios: number }; write: { io_bytes: number; total_ios: number } };
}

/** fio with --ioengine=nbd, running in the background until it ends or stop() is called. */
export class FioJob {
  private stdout = '';
  private stderrText = '';
  private exitCode: number | null | undefined = undefined;
  private readonly exited: Promise<void>;
  private readonly proc;

  constructor(name: string, uri: string, args: string[]) {
    this.proc = spawn('fio', [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', ...args], { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (b: Buffer) => (this.stdout += b.toString()));
    this.proc.stderr.on('data', (b: Buffer) => (this.stderrText += b.toString()));
    this.exited = new Promise((resolve) => this.proc.once('close', (code) => { this.exitCode = code; resolve(); }));
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Waits for the end (time_based runtime or an error). */
  async done(): Promise<FioJobResult> {
    await this.exited;
    return this.result();
  }

  /** SIGINT: fio stops its job cleanly and still prints its report. */
  async stop(): Promise<FioJobResult> {
    if (this.running) this.proc.kill('SIGINT');
    return this.done();
  }

  /** For test cleanup after a failure: never leave a client running. */
  kill(): void {
    if (this.running) this.proc.kill('SIGKILL');
  }

  private result(): FioJobResult {
    // fio prints "connected to NBD server" and signal notices before the JSON.
    const at = this.stdout.indexOf('\n{');
    const text = at >= 0 ? this.stdout.slice(at + 1) : this.stdout.startsWith('{') ? this.stdout : '';
    if (!text) throw new Error(`fio printed no JSON report (exit ${this.exitCode}):\n${this.stdout}\n${this.stderrText}`);
    const report = JSON.parse(text) as { jobs: FioJobResult['job'][] };
    return { code: this.exitCode ?? null, stderr: this.stderrText, job: report.jobs[0]! };
  }
}

/**
 * The load generator: random 4 KiB writes and reads (80/20: writes keep the
 * rate up on a cold volume, where reads are slow) at up to LOAD_RATE_IOPS
 * each on [offsetBytes, offsetBytes + lengthBytes), until stopped.
 */
export function loadJob(uri: string, offsetBytes: number, lengthBytes: number): FioJob {
  return new FioJob('load', uri, ['--rw=randrw', '--rwmixread=20', '--bs=4k', '--iodepth=8', `--offset=${offsetBytes}`, `--size=${lengthBytes}`, `--rate_iops=${LOAD_RATE_IOPS}`, '--time_based', '--runtime=600']);
}

/**
 * The verifier: random 64 KiB writes with a CRC32C header, each read back and
 * checked soon after (verify_backlog), stopping at the first bad block.
 * ~10 writes + ~10 verify reads a second, below LOW_IOPS.
 */
export function verifyJob(uri: string, offsetBytes: number, lengthBytes: number): FioJob {
  return new FioJob('verify', uri, [
    '--rw=randwrite',
    '--bs=64k',
    '--iodepth=1',
    `--offset=${offsetBytes}`,
    `--size=${lengthBytes}`,
    '--verify=crc32c',
    '--verify_backlog=2',
    '--verify_fatal=1',
    // No verify-state file dropped in the working directory on SIGINT.
    '--verify_state_save=0',
    '--rate_iops=10',
    '--time_based',
    '--runtime=600',
  ]);
}

/** Sequential 1 MiB writes of fio's random buffers: fills a volume fast. */
export function fioFill(uri: string, lengthBytes: number): void {
  run('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=4', `--size=${lengthBytes}`, '--output-format=terse']);
}

/**
 * A control daemon with `policies` holding hot volume `big` (id `bigId`) of `bytes` random
 * bytes, written with nbdcopy (flushed) from the returned `src` file. The daemon and the file
 * are cleaned up after `t`.
 */
export async function bigHotVolume(t: { after(fn: () => unknown): void }, bytes: number, policies: Record<string, string> = {}, env?: NodeJS.ProcessEnv): Promise<{ d: TestDaemon; src: string; bigId: number }> {
  const d = await startControlDaemon({ policies, env });
  t.after(() => d.cleanup());
  const bigId = (await createVolume(d, 'big', bytes)).id;
  const src = path.join(d.dataDir, '..', `${path.basename(d.dataDir)}-big.bin`);
  t.after(() => fs.rmSync(src, { force: true }));
  randomFile(src, bytes);
  nbdcopyIn(src, d.exportUri('big'));
  return { d, src, bigId };
}

/** `couchestor ARGS...` run in the background: the process (to signal it) and its exit code and output. */
export function cliInBackground(...args: string[]): { proc: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> } {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const reap = () => proc.kill('SIGKILL');
  process.once('exit', reap);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    proc.once('close', (code, signal) => {
      process.off('exit', reap);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { proc, done };
}

/**
 * A control daemon moving volume `big` (`bytes` of random data, read back from the returned
 * `src` file) hot -> cold under policy `tiering` (`spec`), returned once the move has striped
 * a chunk: a stop now lands mid-migration. The daemon and the file are cleaned up after `t`.
 */
export async function bigMoveToColdUnderWay(t: { after(fn: () => unknown): void }, bytes: number, spec: Record<string, unknown>): Promise<{ d: TestDaemon; src: string }> {
  // The move holds after its first chunk (test hook) until the stop aborts it: still running at the stop, whatever the load.
  const { d, src } = await bigHotVolume(t, bytes, { 'tiering.yaml': policyYaml('tiering', spec) }, HOLD_MIGRATION_ENV);
  await sleep(WINDOW_SETTLE_MS);
  const p = policyNamed(await reconcile(d, false), 'tiering');
  if (decisionFor(p, 'big').action !== 'migrate') throw new Error(`no move decided: ${decisionFor(p, 'big').reason}`);
  await heldMove(d, 'big');
  if ((await coldStatus(d)).stripesWritten < 1) throw new Error('the move held striped no chunk');
  return { d, src };
}
