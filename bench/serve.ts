// A real `couchestor serve` process for benches that compare two builds
// (this one and a peer's dist directory, compiled apart): ephemeral ports,
// the ready line parsed, a SIGTERM stop waited for. Shared so every bench
// starts and stops daemons the same way.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import readline from 'node:readline';

export interface Ready {
  pid: number;
  nbd: { port: number; socketPath: string };
  api: { port: number };
  metrics: { port: number };
}

/** Starts `serve` from `dist` on `dataDir`; resolves at its ready line with the time that took. */
export async function serve(dist: string, dataDir: string): Promise<{ proc: ChildProcess; ready: Ready; startMs: number }> {
  const t0 = performance.now();
  const proc = spawn(process.execPath, [path.join(dist, 'src/cli.js'), 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const ready = await new Promise<Ready>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      const m = /^couchestor ready (.*)$/.exec(line);
      if (m) resolve(JSON.parse(m[1]!) as Ready);
    });
    proc.once('exit', (code) => reject(new Error(`serve exited ${code}:\n${stderr}`)));
  });
  return { proc, ready, startMs: performance.now() - t0 };
}

/** SIGTERM, then waits for the exit. */
export async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `once` back to back until stop(); the slowest call's ms (reset() takes it and starts again). */
export function prober(once: () => Promise<unknown>): { stop: () => Promise<number>; reset: () => number; count: () => number } {
  let running = true;
  let worst = 0;
  let n = 0;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      await once();
      worst = Math.max(worst, performance.now() - t0);
      n++;
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return worst;
    },
    reset: () => {
      const w = worst;
      worst = 0;
      return w;
    },
    count: () => n,
  };
}

/** Measures the event loop's longest hold over `work` (a 1 ms timer's largest lateness, and perf_hooks' histogram). */
export async function holdDuring<T>(work: () => Promise<T>): Promise<{ ms: number; holdMs: number; result: T }> {
  let hold = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    hold = Math.max(hold, now - last - 1);
    last = now;
  }, 1);
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await sleep(5);
  hold = 0;
  h.reset();
  last = performance.now();
  const t0 = performance.now();
  const result = await work();
  const ms = performance.now() - t0;
  await sleep(5);
  clearInterval(timer);
  h.disable();
  return { ms, holdMs: Math.max(hold, h.max / 1e6), result };
}
