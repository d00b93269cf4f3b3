// Test harness: runs a real `couchestor serve` in a temporary data directory
// on ephemeral ports, and waits for its machine-readable ready line.
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import { after } from 'node:test';

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
/** nbdsh is a python3 script: make sure it finds Debian's python3 (with the nbd module). */
export const CLIENT_ENV = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` };

export interface DaemonInfo {
  pid: number;
  nbd: { host: string; port: number; socketPath: string };
  api: { host: string; port: number };
  s3: { host: string; port: number };
  /** Prometheus /metrics endpoint (the ready line always carries it). */
  metrics: { host: string; port: number };
}

export class TestDaemon {
  stderr = '';
  /** stdout lines after the ready line, and who waits for one (line()). */
  private readonly lines: string[] = [];
  private readonly lineWaiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  private constructor(
    readonly dataDir: string,
    readonly proc: ChildProcess,
    readonly info: DaemonInfo,
  ) {}

  /**
   * Starts a daemon; `dataDir` is reused for restart tests. `env` is added to
   * the daemon's environment (test hooks such as COUCHESTOR_TEST_PAUSE_POOL_REBUILD=1).
   */
  static async start(opts: { dataDir?: string; config?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<TestDaemon> {
    const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-test-'));
    if (opts.config !== undefined && !fs.existsSync(path.join(dataDir, 'couchestor.yaml'))) {
      fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), opts.config);
    }
    const proc = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0', ...(opts.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stderr = '';
    let d: TestDaemon | null = null;
    let ready = false;
    const early: string[] = []; // after the ready line, before d exists
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const info = await new Promise<DaemonInfo>((resolve, reject) => {
      const rl = readline.createInterface({ input: proc.stdout! });
      rl.on('line', (line) => {
        if (d !== null) return d.gotLine(line);
        if (ready) return void early.push(line);
        const m = /^couchestor ready (.*)$/.exec(line);
        if (m) (ready = true), resolve(JSON.parse(m[1]!) as DaemonInfo);
      });
      proc.once('exit', (code, sig) => reject(new Error(`daemon exited (${code ?? sig}) before ready:\n${stderr}`)));
    });
    d = new TestDaemon(dataDir, proc, info);
    for (const l of early) d.gotLine(l);
    // A test process that dies without running its cleanup (uncaught error,
    // process.exit) must not leave an orphan daemon behind.
    const reap = () => proc.kill('SIGKILL');
    process.once('exit', reap);
    proc.once('exit', () => process.off('exit', reap));
    proc.stderr!.on('data', (b: Buffer) => (d.stderr += b.toString()));
    d.stderr = stderr;
    return d;
  }

  private gotLine(line: string): void {
    this.lines.push(line);
    for (const w of [...this.lineWaiters]) if (w.re.test(line)) w.resolve(line);
  }

  /**
   * Resolves with the first stdout line after the ready line (seen so far or
   * later) that `re` matches, e.g. a test hook's `couchestor paused ...`;
   * rejects if the daemon exits first or none comes within `timeoutMs`.
   */
  line(re: RegExp, timeoutMs: number): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.reject(new Error(`daemon exited before a line matching ${re}:\n${this.stderr}`));
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, line?: string) => {
        clearTimeout(timer);
        this.proc.off('exit', exited);
        const i = this.lineWaiters.indexOf(waiter);
        if (i >= 0) this.lineWaiters.splice(i, 1);
        if (err) reject(err);
        else resolve(line!);
      };
      const waiter = { re, resolve: (l: string) => done(null, l) };
      const exited = (code: number | null, sig: string | null) => done(new Error(`daemon exited (${code ?? sig}) before a line matching ${re}:\n${this.stderr}`));
      const timer = setTimeout(() => done(new Error(`no line matching ${re} within ${timeoutMs} ms on the daemon's stdout`)), timeoutMs);
      this.lineWaiters.push(waiter);
      this.proc.once('exit', exited);
    });
  }

  /** Base URL of the daemon's S3 endpoint (path-style). */
  get s3Endpoint(): string {
    return `http://127.0.0.1:${this.info.s3.port}`;
  }

  get uri(): string {
    return `nbd://127.0.0.1:${this.info.nbd.port}`;
  }

  exportUri(name: string): string {
    return `${this.uri}/${encodeURIComponent(name)}`;
  }

  unixUri(name: string): string {
    return `nbd+unix:///${encodeURIComponent(name)}?socket=${this.info.nbd.socketPath}`;
  }

  /** Runs the couchestor CLI against this daemon's data directory. */
  cli(...args: string[]): SpawnSyncReturns<string> {
    return spawnSync(process.execPath, [CLI, ...args, '--data-dir', this.dataDir], { encoding: 'utf8' });
  }

  createVolume(name: string, size: string, ...extra: string[]): void {
    const r = this.cli('volumes', 'create', name, size, ...extra);
    if (r.status !== 0) throw new Error(`volumes create failed: ${r.stderr}`);
  }

  /** SIGKILL: no chance to flush anything. */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM and wait for a clean exit. */
  async stop(): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    const exited = new Promise<number | null>((r) => this.proc.once('exit', (code) => r(code)));
    this.proc.kill('SIGTERM');
    return exited;
  }

  async cleanup(): Promise<void> {
    await this.kill();
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Runs a real client; throws with its output when it fails. */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: CLIENT_ENV, input: opts.input, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Runs an nbdsh script (python) and returns its stdout. */
export function nbdsh(script: string): string {
  return run('nbdsh', ['-c', script]);
}

/**
 * One nbdsh client writes `length` bytes of `byte` at `offset` of `uri` and
 * reads them back (throws if they differ, or if it takes over `timeoutMs`:
 * it waited for something the daemon never gave back).
 */
export function nbdshWriteReadBack(uri: string, byte: number, length: number, offset: number, timeoutMs = 8_000): void {
  const bytes = `b"\\x${byte.toString(16).padStart(2, '0')}" * ${length}`;
  const out = run('nbdsh', ['-c', `
h.connect_uri(${JSON.stringify(uri)})
h.pwrite(${bytes}, ${offset})
assert h.pread(${length}, ${offset}) == ${bytes}
print("ok")
`], { timeoutMs });
  if (!/^ok$/m.test(out)) throw new Error(`nbdsh write and read back at ${offset}: ${out}`);
}

/**
 * Crash tests start a daemon, SIGKILL it and start it again on the same data
 * directory. Returns the start function (`launch` defaults to a plain
 * TestDaemon.start); every daemon it starts is cleaned up after the file's tests.
 */
export function crashDaemons(launch: (opts: { dataDir?: string }) => Promise<TestDaemon> = (opts) => TestDaemon.start(opts)): (dataDir?: string) => Promise<TestDaemon> {
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.cleanup();
  });
  return async (dataDir?: string) => {
    const d = await launch(dataDir ? { dataDir } : {});
    daemons.push(d);
    return d;
  };
}

/**
 * Runs `loops` (each calls `ack()` after every acknowledged write) until
 * `ackedBeforeKill` writes were acknowledged, waits a random 0-300 ms so the
 * kill lands at varied points, SIGKILLs the daemon and waits for the loops.
 * Returns the writes acknowledged before the kill and each loop's outcome
 * (null when it finished, else what it threw).
 */
export async function killDuringWrites(daemon: TestDaemon, loops: ((ack: () => void) => Promise<void>)[], ackedBeforeKill = 20): Promise<{ acked: number; stopped: unknown[] }> {
  let acked = 0;
  let enoughAcked: () => void = () => undefined;
  const someAcked = new Promise<void>((r) => (enoughAcked = r));
  const ack = () => {
    if (++acked === ackedBeforeKill) enoughAcked();
  };
  const running = loops.map((loop) =>
    loop(ack).then(
      () => null,
      (err: unknown) => err,
    ),
  );
  await someAcked;
  await new Promise((r) => setTimeout(r, crypto.randomInt(0, 300)));
  await daemon.kill();
  const stopped = await Promise.all(running);
  return { acked, stopped };
}

/** A `serve` watched through its start: its stdout lines as they come, its exit. */
export interface StartingDaemon {
  proc: ChildProcess;
  /** stderr so far. */
  stderr(): string;
  /** Resolves with the first stdout line (seen so far or later) that `re` matches; rejects if the process exits first. */
  line(re: RegExp): Promise<string>;
  /** Resolves at the exit: code (or signal), stderr, and when (performance.now()). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; atMs: number }>;
}

/**
 * Spawns `serve` on `dataDir` (ephemeral ports) with `env` added, e.g. the
 * start's test hooks (COUCHESTOR_TEST_PAUSE_START=after-open,
 * COUCHESTOR_TEST_START_STEPS=1); `wrap` runs it under another command
 * (`['unshare', '-fp', '--mount-proc']`: PID 1 of a new pid namespace).
 * Killed (SIGKILL) when the test process exits, if still running.
 */
export function spawnServe(dataDir: string, opts: { env?: NodeJS.ProcessEnv; wrap?: string[] } = {}): StartingDaemon {
  const argv = [process.execPath, CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'];
  const [cmd, ...args] = [...(opts.wrap ?? []), ...argv];
  const proc = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  const reap = () => proc.kill('SIGKILL');
  process.once('exit', reap);
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  readline.createInterface({ input: proc.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) if (w.re.test(l)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(l));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; atMs: number }>((resolve) => {
    proc.once('close', (code, signal) => {
      process.off('exit', reap);
      resolve({ code, signal, stderr, atMs: performance.now() });
    });
  });
  return {
    proc,
    stderr: () => stderr,
    exited,
    line(re: RegExp): Promise<string> {
      const seen = lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        void exited.then((e) => reject(new Error(`serve exited (${e.code ?? e.signal}) before a line matching ${re}:\n${lines.join('\n')}\n${e.stderr}`)));
      });
    },
  };
}
