// GET /metrics over real HTTP: valid Prometheus text, the exact couchestor_
// samples for a source with known counters, values read at scrape time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createMetrics,
  startMetricsServer,
  type MetricsSource,
  type MigrationResult,
  type PoolUsage,
  type StripeState,
  type VolumeCounters,
} from '../src/control/metrics/index.js';

const HOST = '127.0.0.1';

/**
 * A dataplane-shaped source: plain counters bumped by "I/O", read by the
 * metrics at scrape time. Nothing in it knows about Prometheus.
 */
class CounterBoard implements MetricsSource {
  readonly vols = new Map<string, VolumeCounters>();
  readonly poolList: PoolUsage[] = [];
  readonly done: Record<MigrationResult, number> = { succeeded: 0, failed: 0, aborted: 0 };
  active = 0;
  degraded = 0;
  journal = 0;
  reconFailures = { poolRetryFailures: 0, timerFailures: 0 };
  stripeCounts: Partial<Record<StripeState, number>> = {};

  addVolume(volume: string, tier: VolumeCounters['tier']): void {
    this.vols.set(volume, { volume, tier, readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0, readIops: 0, writeIops: 0 });
  }
  read(volume: string, lengthBytes: number): void {
    const v = this.vols.get(volume);
    assert.ok(v);
    v.readOps++;
    v.readBytes += lengthBytes;
  }
  write(volume: string, lengthBytes: number): void {
    const v = this.vols.get(volume);
    assert.ok(v);
    v.writeOps++;
    v.writeBytes += lengthBytes;
  }

  volumes(): Iterable<VolumeCounters> {
    return this.vols.values();
  }
  pools(): Iterable<PoolUsage> {
    return this.poolList;
  }
  migrations() {
    return { completedTotal: this.done, active: this.active };
  }
  degradedReadsTotal(): number {
    return this.degraded;
  }
  journalBytes(): number {
    return this.journal;
  }
  stripes() {
    return this.stripeCounts;
  }
  reconstructionFailures() {
    return this.reconFailures;
  }
}

function loadedBoard(): CounterBoard {
  const board = new CounterBoard();
  board.addVolume('db-0', 'hot');
  board.addVolume('logs', 'cold');
  for (let i = 0; i < 3; i++) board.read('db-0', 4096);
  board.write('db-0', 65536);
  board.write('logs', 1048576);
  board.write('logs', 4096);
  const db = board.vols.get('db-0');
  assert.ok(db);
  db.readIops = 250.5;
  db.writeIops = 12;
  board.poolList.push({ pool: 'hot-0', tier: 'hot', capacityBytes: 500_000_000_000, usedBytes: 68_719_476_736 });
  board.poolList.push({ pool: 'cold-0', tier: 'cold', capacityBytes: 4_000_000_000_000, usedBytes: 0 });
  board.done.succeeded = 4;
  board.done.failed = 1;
  board.active = 2;
  board.degraded = 9;
  board.journal = 1_052_672;
  board.reconFailures = { poolRetryFailures: 2, timerFailures: 3 };
  board.stripeCounts = { healthy: 120, degraded: 3 };
  return board;
}

const EXPECTED_SAMPLES = `couchestor_migrations_total{result="succeeded"} 4
couchestor_migrations_total{result="failed"} 1
couchestor_migrations_total{result="aborted"} 0
couchestor_active_migrations 2
couchestor_volume_read_ops_total{volume="db-0"} 3
couchestor_volume_read_ops_total{volume="logs"} 0
couchestor_volume_write_ops_total{volume="db-0"} 1
couchestor_volume_write_ops_total{volume="logs"} 2
couchestor_volume_read_bytes_total{volume="db-0"} 12288
couchestor_volume_read_bytes_total{volume="logs"} 0
couchestor_volume_write_bytes_total{volume="db-0"} 65536
couchestor_volume_write_bytes_total{volume="logs"} 1052672
couchestor_volume_iops{volume="db-0",direction="read"} 250.5
couchestor_volume_iops{volume="db-0",direction="write"} 12
couchestor_volume_iops{volume="logs",direction="read"} 0
couchestor_volume_iops{volume="logs",direction="write"} 0
couchestor_volume_tier{volume="db-0",tier="hot"} 1
couchestor_volume_tier{volume="db-0",tier="warm"} 0
couchestor_volume_tier{volume="db-0",tier="cold"} 0
couchestor_volume_tier{volume="logs",tier="hot"} 0
couchestor_volume_tier{volume="logs",tier="warm"} 0
couchestor_volume_tier{volume="logs",tier="cold"} 1
couchestor_pool_capacity_bytes{pool="hot-0",tier="hot"} 500000000000
couchestor_pool_capacity_bytes{pool="cold-0",tier="cold"} 4000000000000
couchestor_pool_used_bytes{pool="hot-0",tier="hot"} 68719476736
couchestor_pool_used_bytes{pool="cold-0",tier="cold"} 0
couchestor_degraded_reads_total 9
couchestor_rebuild_retry_failures_total 2
couchestor_reconstruction_timer_failures_total 3
couchestor_journal_bytes 1052672
couchestor_journal_spare_bytes 0
couchestor_stripes{state="healthy"} 120
couchestor_stripes{state="degraded"} 3
couchestor_stripes{state="rebuilding"} 0
couchestor_stripes{state="unrecoverable"} 0`;

const COUCHESTOR_TYPES: Record<string, 'counter' | 'gauge'> = {
  couchestor_migrations_total: 'counter',
  couchestor_active_migrations: 'gauge',
  couchestor_volume_read_ops_total: 'counter',
  couchestor_volume_write_ops_total: 'counter',
  couchestor_volume_read_bytes_total: 'counter',
  couchestor_volume_write_bytes_total: 'counter',
  couchestor_volume_iops: 'gauge',
  couchestor_volume_tier: 'gauge',
  couchestor_pool_capacity_bytes: 'gauge',
  couchestor_pool_used_bytes: 'gauge',
  couchestor_degraded_reads_total: 'counter',
  couchestor_rebuild_retry_failures_total: 'counter',
  couchestor_reconstruction_timer_failures_total: 'counter',
  couchestor_journal_bytes: 'gauge',
  couchestor_journal_spare_bytes: 'gauge',
  couchestor_stripes: 'gauge',
};

interface ParsedExposition {
  types: Map<string, string>;
  samples: { name: string; line: string }[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"';
const SAMPLE_RE = new RegExp(`^(${NAME})(\\{${LABEL}(?:,${LABEL})*\\})? ((?:NaN|Nan)|[+-]Inf|-?\\d+(?:\\.\\d+)?(?:e[+-]?\\d+)?)$`);

/**
 * Checks the Prometheus 0.0.4 text format line by line and groups samples
 * under their TYPE. prom-client prints NaN as "Nan" (the event-loop lag before
 * its first sample); Prometheus parses values with Go's ParseFloat, which
 * accepts either spelling.
 */
function parseExposition(text: string): ParsedExposition {
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const types = new Map<string, string>();
  const samples: { name: string; line: string }[] = [];
  let family: string | null = null;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = /^# HELP (\S+) .+$/.exec(line);
    if (help) continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      assert.ok(!types.has(type[1] as string), `TYPE for ${type[1]} declared once`);
      types.set(type[1] as string, type[2] as string);
      family = type[1] as string;
      continue;
    }
    const sample = SAMPLE_RE.exec(line);
    assert.ok(sample, `sample line is well formed: ${JSON.stringify(line)}`);
    const name = sample[1] as string;
    assert.ok(family !== null && (name === family || /^(.*)_(bucket|sum|count)$/.exec(name)?.[1] === family), `${name} belongs to family ${family}`);
    samples.push({ name, line });
  }
  return { types, samples };
}

async function scrape(port: number, path = '/metrics'): Promise<{ status: number; contentType: string | null; text: string }> {
  const res = await fetch(`http://${HOST}:${port}${path}`);
  return { status: res.status, contentType: res.headers.get('content-type'), text: await res.text() };
}

test('/metrics is valid Prometheus text with default process metrics and the exact couchestor_ samples', async () => {
  const board = loadedBoard();
  const server = await startMetricsServer({ host: HOST, port: 0, registry: createMetrics(board) });
  try {
    assert.ok(server.port > 0 && server.port !== 8080);
    const { status, contentType, text } = await scrape(server.port);
    assert.equal(status, 200);
    assert.equal(contentType, 'text/plain; version=0.0.4; charset=utf-8');
    const parsed = parseExposition(text);

    for (const [name, type] of Object.entries(COUCHESTOR_TYPES)) assert.equal(parsed.types.get(name), type, `TYPE of ${name}`);
    const ours = parsed.samples.filter((s) => s.name.startsWith('couchestor_')).map((s) => s.line);
    assert.equal(ours.join('\n'), EXPECTED_SAMPLES);

    // Default process metrics sit beside ours, unprefixed as dashboards expect.
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
      assert.ok(parsed.samples.some((s) => s.name === name), `default metric ${name}`);
    }
  } finally {
    await server.close();
  }
});

test('counters are read from the source at scrape time: new I/O and removed volumes show on the next scrape', async () => {
  const board = loadedBoard();
  const server = await startMetricsServer({ host: HOST, port: 0, registry: createMetrics(board) });
  try {
    await scrape(server.port);
    board.read('db-0', 8192);
    board.vols.delete('logs');
    board.degraded += 1;
    board.done.aborted = 2;
    board.active = 0;
    const lines = parseExposition((await scrape(server.port)).text).samples.map((s) => s.line);
    assert.ok(lines.includes('couchestor_volume_read_ops_total{volume="db-0"} 4'));
    assert.ok(lines.includes('couchestor_volume_read_bytes_total{volume="db-0"} 20480'));
    assert.ok(lines.includes('couchestor_degraded_reads_total 10'));
    assert.ok(lines.includes('couchestor_migrations_total{result="aborted"} 2'));
    assert.ok(lines.includes('couchestor_active_migrations 0'));
    assert.deepEqual(lines.filter((l) => l.includes('volume="logs"')), [], 'a deleted volume leaves no series');
  } finally {
    await server.close();
  }
});

test('before the store is open (source ref returns null) project metrics read zero and volumes have no series', async () => {
  let board: CounterBoard | null = null;
  const registry = createMetrics(() => board);
  const server = await startMetricsServer({ host: HOST, port: 0, registry });
  try {
    let lines = parseExposition((await scrape(server.port)).text).samples.map((s) => s.line).filter((l) => l.startsWith('couchestor_'));
    assert.deepEqual(lines, [
      'couchestor_migrations_total{result="succeeded"} 0',
      'couchestor_migrations_total{result="failed"} 0',
      'couchestor_migrations_total{result="aborted"} 0',
      'couchestor_active_migrations 0',
      'couchestor_degraded_reads_total 0',
      'couchestor_rebuild_retry_failures_total 0',
      'couchestor_reconstruction_timer_failures_total 0',
      'couchestor_journal_bytes 0',
      'couchestor_journal_spare_bytes 0',
      'couchestor_stripes{state="healthy"} 0',
      'couchestor_stripes{state="degraded"} 0',
      'couchestor_stripes{state="rebuilding"} 0',
      'couchestor_stripes{state="unrecoverable"} 0',
    ]);
    board = loadedBoard();
    lines = parseExposition((await scrape(server.port)).text).samples.map((s) => s.line).filter((l) => l.startsWith('couchestor_'));
    assert.equal(lines.join('\n'), EXPECTED_SAMPLES);
  } finally {
    await server.close();
  }
});

test('the NBD in-flight budget: its four samples when the source reports it, no series (not a 0 limit) when it does not', async () => {
  class WithBudget extends CounterBoard {
    nbdInflight() {
      return { usedBytes: 2 * 1024 * 1024, capacityBytes: 8 * 1024 * 1024, peakBytes: 8 * 1024 * 1024, pausesTotal: 57 };
    }
  }
  const board = new WithBudget();
  const server = await startMetricsServer({ host: HOST, port: 0, registry: createMetrics(board) });
  try {
    const lines = parseExposition((await scrape(server.port)).text).samples.map((s) => s.line).filter((l) => l.startsWith('couchestor_nbd_inflight'));
    assert.deepEqual(lines, [
      'couchestor_nbd_inflight_bytes 2097152',
      'couchestor_nbd_inflight_limit_bytes 8388608',
      'couchestor_nbd_inflight_peak_bytes 8388608',
      'couchestor_nbd_inflight_pauses_total 57',
    ]);
  } finally {
    await server.close();
  }
  const without = parseExposition(await createMetrics(new CounterBoard()).metrics()).samples.filter((s) => s.name.startsWith('couchestor_nbd_inflight'));
  assert.deepEqual(without, []);
});

test('one scrape reads each source method once, however many metrics derive from it', async () => {
  const board = loadedBoard();
  const calls = { volumes: 0, pools: 0, migrations: 0 };
  const counting: MetricsSource = {
    volumes: () => (calls.volumes++, board.volumes()),
    pools: () => (calls.pools++, board.pools()),
    migrations: () => (calls.migrations++, board.migrations()),
    degradedReadsTotal: () => board.degradedReadsTotal(),
    journalBytes: () => board.journalBytes(),
    stripes: () => board.stripes(),
  };
  const registry = createMetrics(counting);
  await registry.metrics();
  assert.deepEqual(calls, { volumes: 1, pools: 1, migrations: 1 });
});

test('a source that throws gives a 500 naming the failure; unknown paths are 404', async () => {
  class ClosedTable extends CounterBoard {
    override volumes(): Iterable<VolumeCounters> {
      throw new Error('volume table closed');
    }
  }
  const broken = new ClosedTable();
  const server = await startMetricsServer({ host: HOST, port: 0, registry: createMetrics(broken) });
  try {
    const res = await scrape(server.port);
    assert.equal(res.status, 500);
    assert.equal(res.text, 'metrics collection failed: volume table closed\n');
    assert.equal((await scrape(server.port, '/')).status, 404);
    assert.equal((await scrape(server.port, '/metricz')).status, 404);
    assert.equal((await scrape(server.port, '/healthz')).status, 404);
  } finally {
    await server.close();
  }
});
