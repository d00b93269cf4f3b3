// The metrics server closes (the daemon's stop step "the metrics server") at once with a scrape
// in flight. GET /metrics is built over many turns of the event loop and streamed; the close waited
// for it to end: forever for a client that stopped reading (a hung scraper, `curl | less`), and
// for one reading it whole, until the keep-alive timeout (72 s) after its end. A stop then hung
// there until the orchestrator's SIGKILL. Before streaming the whole text was sent in one turn and
// the close cut the connection. Both clients are other processes (node: fetch, a raw socket).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createMetrics, startMetricsServer, type MetricsSource, type VolumeCounters } from '../src/control/metrics/index.js';
import type { RunningHttpServer } from '../src/control/health/http.js';

/** How long a close may take: a few ms when nothing holds it; the bug held it 72 s or forever. */
const CLOSE_BOUND_MS = 5_000;

function source(n: number, during?: { at: number; run: () => void }): MetricsSource {
  const vols: VolumeCounters[] = Array.from({ length: n }, (_, i) => ({ volume: `pvc-${i}`, tier: 'hot', readOps: i, writeOps: 0, readBytes: 0, writeBytes: 0, readIops: 0, writeIops: 0 }));
  return {
    *volumes() {
      for (let i = 0; i < vols.length; i++) {
        if (during !== undefined && i === during.at) during.run();
        yield vols[i]!;
      }
    },
    pools: () => [],
    migrations: () => ({ completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 }),
    degradedReadsTotal: () => 0,
    journalBytes: () => 0,
    stripes: () => ({}),
  };
}

/** server.close()'s time, or null when it has not ended within CLOSE_BOUND_MS. */
async function closeMs(server: RunningHttpServer): Promise<number | null> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), CLOSE_BOUND_MS)));
  const ms = await Promise.race([server.close().then(() => performance.now() - t0), bound]);
  clearTimeout(timer);
  return ms;
}

test('the metrics server closes at once with a scrape client that stopped reading', async (t) => {
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, registry: createMetrics(source(10_000)) });
  // Sends GET /metrics (~5 MB) and never reads the answer.
  const client = spawn(process.execPath, ['-e', `const s = require('net').connect(${server.port}, '127.0.0.1', () => { s.write('GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); s.pause(); console.log('sent'); }); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => client.kill('SIGKILL'));
  await once(client.stdout, 'data');
  // The answer started: the server's first bytes are queued to the client (its window full).
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; ) {
    if (await connectionsBusy(server.port)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const ms = await closeMs(server);
  assert.notEqual(ms, null, `close not ended within ${CLOSE_BOUND_MS} ms`);
});

test('the metrics server closes at once with a scrape in flight whose client reads it', async (t) => {
  let server: RunningHttpServer | null = null;
  let closing: Promise<number | null> | null = null;
  // The close starts while the scrape is between two slices of its volumes.
  const registry = createMetrics(source(3_000, { at: 1_500, run: () => (closing = closeMs(server!)) }));
  server = await startMetricsServer({ host: '127.0.0.1', port: 0, registry });
  // A client that keeps its connection alive after the answer, as Prometheus does (Go's idle
  // connections: 90 s; node's fetch here takes the server's keep-alive hint, 72 s).
  const client = spawn(process.execPath, ['-e', `fetch('http://127.0.0.1:${server.port}/metrics').then((r) => r.text()).then((b) => console.log('read', b.length), (e) => console.log('failed', e.cause?.code ?? e.message)); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => client.kill('SIGKILL'));
  const [line] = (await once(client.stdout, 'data')) as [Buffer];
  assert.ok(closing !== null, `the scrape reached its second slice (client: ${line.toString().trim()})`);
  const ms = await (closing as Promise<number | null>);
  assert.notEqual(ms, null, `close not ended within ${CLOSE_BOUND_MS} ms`);
});

/** Whether a connection to `port` has bytes queued that its client has not read (ss: Send-Q > 0). */
async function connectionsBusy(port: number): Promise<boolean> {
  const ss = spawn('ss', ['-tnH', 'state', 'established', `( sport = :${port} )`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  ss.stdout.on('data', (b: Buffer) => (out += b.toString()));
  await once(ss, 'close');
  return out.split('\n').some((l) => Number(l.trim().split(/\s+/)[1] ?? 0) > 0);
}
