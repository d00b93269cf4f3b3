// A real `couchestor serve` process for benches that compare two builds
// (this one and a peer's dist directory, compiled apart): ephemeral ports,
// the ready line parsed, a SIGTERM stop waited for. Shared so every bench
// starts and stops daemons the same way.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
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
