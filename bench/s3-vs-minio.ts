// S3 throughput: CoucheStor's S3 front end beside MinIO in the same run.
// PUT/GET of 4 MiB objects (MiB/s) and of 4 KiB objects (ops/s), at
// concurrency 1 and 32, median of 3 rounds, printed with the ratio ours/MinIO.
//
// MinIO is built from the Go module proxy into /tmp (never committed):
//   GOPATH=/tmp/s3-work/go GOBIN=/tmp/s3-work/bin go install github.com/minio/minio@latest
// Run (after `npx tsc -p tsconfig.json`):
//   MINIO_BIN=/tmp/s3-work/bin/minio node dist/bench/s3-vs-minio.js [secondsPerCell=1.5]
// S3_BENCH_ONLY='4MiB c=1' runs only the cells whose label contains it;
// S3_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/x' is passed to the daemon's node.
// Both servers get the same hand-signed requests (SigV4, UNSIGNED-PAYLOAD)
// from one lean keep-alive client, so neither pays for the AWS SDK.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli.js');
// 1.5 s keeps a whole run (8 cells x 2 servers x 3 rounds, plus start-up) under 2 minutes.
const SECONDS_PER_CELL = Number(process.argv[2] ?? 1.5);
const ROUNDS = 3;
const MINIO_BIN = process.env.MINIO_BIN ?? '/tmp/s3-work/bin/minio';
const WORK = fs.mkdtempSync(path.join(process.env.S3_BENCH_DIR ?? os.tmpdir(), 's3-bench-'));

interface Target {
  name: string;
  host: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
  proc: ChildProcess;
}

const hmac = (k: Buffer | string, s: string) => createHmac('sha256', k).update(s).digest();

function sign(t: Target, method: string, p: string, extra: Record<string, string>): Record<string, string> {
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers: Record<string, string> = { host: `${t.host}:${t.port}`, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-date': amzDate, ...extra };
  const names = Object.keys(headers).sort();
  const canonical = `${method}\n${p}\n\n${names.map((n) => `${n}:${headers[n]}\n`).join('')}\n${names.join(';')}\nUNSIGNED-PAYLOAD`;
  const scope = `${date}/us-east-1/s3/aws4_request`;
  const sts = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
  const key = hmac(hmac(hmac(hmac('AWS4' + t.secretAccessKey, date), 'us-east-1'), 's3'), 'aws4_request');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${t.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${createHmac('sha256', key).update(sts).digest('hex')}`;
  return headers;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(t: Target, method: string, p: string, body?: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers = sign(t, method, p, body ? { 'content-length': String(body.length) } : {});
    const req = http.request({ host: t.host, port: t.port, method, path: p, headers, agent }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => (res.statusCode! < 300 ? resolve(bytes) : reject(new Error(`${t.name} ${method} ${p}: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function startOurs(): Promise<Target> {
  const dataDir = path.join(WORK, 'couchestor');
  const nodeArgs = process.env.S3_BENCH_NODE_ARGS ? process.env.S3_BENCH_NODE_ARGS.split(' ') : [];
  const proc = spawn(process.execPath, [...nodeArgs, CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stderr!.resume();
  const port = await new Promise<number>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout! }).on('line', (l) => {
      const m = /^couchestor ready (.*)$/.exec(l);
      if (m) resolve((JSON.parse(m[1]!) as { s3: { port: number } }).s3.port);
    });
    proc.once('exit', (c) => reject(new Error(`couchestor exited ${c}`)));
  });
  const k = (JSON.parse(fs.readFileSync(path.join(dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] }).keys[0]!;
  return { name: 'couchestor', host: '127.0.0.1', port, ...k, proc };
}

async function startMinio(): Promise<Target> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const accessKeyId = 'BENCHMINIOKEY0000001';
  const secretAccessKey = 'bench-minio-secret-0000000001';
  const proc = spawn(MINIO_BIN, ['server', path.join(WORK, 'minio'), '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${port + 1}`, '--quiet'], {
    env: { ...process.env, MINIO_ROOT_USER: accessKeyId, MINIO_ROOT_PASSWORD: secretAccessKey, MINIO_BROWSER: 'off' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr!.resume();
  const t: Target = { name: 'minio', host: '127.0.0.1', port, accessKeyId, secretAccessKey, proc };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const ok = await new Promise<boolean>((resolve) => http.get({ host: t.host, port, path: '/minio/health/ready', agent }, (r) => { r.resume(); resolve(r.statusCode === 200); }).on('error', () => resolve(false)));
      if (ok) return t;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error('minio did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs `op(i)` from `concurrency` workers until the time is up; returns completed ops and bytes. */
async function timed(concurrency: number, seconds: number, op: (i: number) => Promise<number>): Promise<{ ops: number; bytes: number; seconds: number }> {
  const start = process.hrtime.bigint();
  const endNs = start + BigInt(Math.round(seconds * 1e9));
  let next = 0;
  let ops = 0;
  let bytes = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (process.hrtime.bigint() < endNs) {
        // Not `bytes += await ...`: that reads `bytes` before the await and loses other workers' updates.
        const n = await op(next++);
        bytes += n;
        ops++;
      }
    }),
  );
  const r = { ops, bytes, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
  if (process.env.S3_BENCH_DEBUG) process.stderr.write(`timed c=${concurrency}: ${JSON.stringify(r)}\n`);
  return r;
}

interface Cell {
  label: string;
  unit: 'MiB/s' | 'ops/s';
  run(t: Target, round: number): Promise<number>;
}

function cells(): Cell[] {
  const big = randomBytes(4 * 1024 * 1024);
  const small = randomBytes(4 * 1024);
  const written = new Map<string, number>(); // target/size/conc -> objects written (for the GETs)
  const out: Cell[] = [];
  for (const [sizeLabel, body] of [['4MiB', big], ['4KiB', small]] as const) {
    const unit = sizeLabel === '4MiB' ? 'MiB/s' : 'ops/s';
    for (const conc of [1, 32]) {
      out.push({
        label: `PUT ${sizeLabel} c=${conc}`,
        unit,
        async run(t, round) {
          const prefix = `/bench/r${round}-${sizeLabel}-c${conc}`;
          const r = await timed(conc, SECONDS_PER_CELL, async (i) => {
            await request(t, 'PUT', `${prefix}-${i}`, body);
            return body.length;
          });
          written.set(`${t.name}/${round}/${sizeLabel}/${conc}`, r.ops);
          return unit === 'MiB/s' ? r.bytes / 1048576 / r.seconds : r.ops / r.seconds;
        },
      });
      out.push({
        label: `GET ${sizeLabel} c=${conc}`,
        unit,
        async run(t, round) {
          const n = written.get(`${t.name}/${round}/${sizeLabel}/${conc}`) ?? 0;
          if (n === 0) throw new Error('nothing written to read');
          const prefix = `/bench/r${round}-${sizeLabel}-c${conc}`;
          const r = await timed(conc, SECONDS_PER_CELL, (i) => request(t, 'GET', `${prefix}-${i % n}`));
          return unit === 'MiB/s' ? r.bytes / 1048576 / r.seconds : r.ops / r.seconds;
        },
      });
    }
  }
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const targets = [await startOurs(), await startMinio()];
  try {
    for (const t of targets) await request(t, 'PUT', '/bench');
    // S3_BENCH_ONLY='4MiB c=1' keeps the cells whose label contains it (PUT and GET of a size/concurrency go together).
    const only = process.env.S3_BENCH_ONLY;
    const list = cells().filter((c) => only === undefined || c.label.includes(only));
    const results = new Map<string, number[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of list) {
        // Alternate who goes first so neither always meets a warmer page cache.
        const order = round % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) {
          const v = await c.run(t, round);
          const key = `${c.label}|${t.name}`;
          results.set(key, [...(results.get(key) ?? []), v]);
        }
      }
    }
    process.stdout.write(`S3 on ${os.cpus().length} cores, ${SECONDS_PER_CELL}s per cell, median of ${ROUNDS} rounds; client: one Node process, keep-alive, SigV4 UNSIGNED-PAYLOAD\n`);
    process.stdout.write(`${'case'.padEnd(18)} ${'couchestor'.padStart(12)} ${'minio'.padStart(12)} ${'ratio'.padStart(7)}\n`);
    for (const c of list) {
      const ours = median(results.get(`${c.label}|couchestor`)!);
      const theirs = median(results.get(`${c.label}|minio`)!);
      process.stdout.write(`${c.label.padEnd(18)} ${ours.toFixed(1).padStart(8)} ${c.unit.padEnd(5)}${theirs.toFixed(1).padStart(8)} ${c.unit.padEnd(5)} ${(ours / theirs).toFixed(2).padStart(5)}x\n`);
    }
  } finally {
    for (const t of targets) {
      const exited = new Promise((r) => t.proc.once('exit', r));
      t.proc.kill('SIGTERM');
      await exited;
    }
    agent.destroy();
    fs.rmSync(WORK, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  process.stderr.write(`s3-vs-minio: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
