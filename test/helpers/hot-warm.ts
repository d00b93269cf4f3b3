// Harness of the hot <-> warm migration tests: a daemon config with a warm
// pool beside the hot one (and the six cold pools policies select), the
// migrate/release/pool calls of the admin API, and where a volume's data
// file lives on each pool.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { MigrationProgress } from '../../src/dataplane/volumes/migration.js';
import type { VolumeRecord } from '../../src/dataplane/meta/store.js';
import { TestDaemon } from './daemon.js';
import { HEAT_SAMPLE_INTERVAL_MS } from './control-loop.js';

/** couchestor.yaml: hot-0, warm-0, cold-0..5; no demo volume; control passes only when a test asks. */
export function warmConfig(o: { preservationMode?: boolean } = {}): string {
  return YAML.stringify({
    demoVolume: null,
    pools: [
      { name: 'hot-0', tier: 'hot', path: 'pools/hot-0', capacity: 'auto' },
      { name: 'warm-0', tier: 'warm', path: 'pools/warm-0', capacity: 'auto' },
      ...Array.from({ length: 6 }, (_, i) => ({ name: `cold-${i}`, tier: 'cold', path: `pools/cold-${i}`, capacity: 'auto' })),
    ],
    control: {
      reconcileIntervalMs: 3_600_000,
      heatSampleIntervalMs: HEAT_SAMPLE_INTERVAL_MS,
      preservationMode: o.preservationMode ?? false,
      heatSource: { type: 'local' },
    },
  });
}

export function startWarmDaemon(opts: { dataDir?: string; preservationMode?: boolean; policies?: Record<string, string> } = {}): Promise<TestDaemon> {
  const dataDir = opts.dataDir ?? fs.mkdtempSync('/tmp/couchestor-warm-');
  if (opts.policies) {
    fs.mkdirSync(path.join(dataDir, 'policies'), { recursive: true });
    for (const [file, text] of Object.entries(opts.policies)) fs.writeFileSync(path.join(dataDir, 'policies', file), text);
  }
  return TestDaemon.start({ dataDir, config: warmConfig(opts) });
}

export async function api<T>(d: TestDaemon, method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}${urlPath}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** POST /v1/volumes/:name/migrate (`couchestor volumes migrate`); throws unless it ends Done. */
export async function migrate(d: TestDaemon, name: string, tier: 'hot' | 'warm' | 'cold', preserve = false): Promise<MigrationProgress> {
  const r = await api<MigrationProgress & { message?: string }>(d, 'POST', `/v1/volumes/${encodeURIComponent(name)}/migrate`, { tier, preserve });
  if (r.status !== 200 || r.body.phase !== 'Done') throw new Error(`migrate ${name} to ${tier} answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function volumeRecord(d: TestDaemon, name: string): Promise<VolumeRecord> {
  return (await api<VolumeRecord>(d, 'GET', `/v1/volumes/${encodeURIComponent(name)}`)).body;
}

/** The volume's data file on `pool` (pools/<pool>/volumes/<id>.dat). */
export function volumeFile(d: TestDaemon, pool: string, volumeId: number): string {
  return path.join(d.dataDir, 'pools', pool, 'volumes', `${volumeId}.dat`);
}

/** couchestor_pool_used_bytes{pool} from /metrics. */
export async function poolUsedBytes(d: TestDaemon, pool: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  const m = new RegExp(`^couchestor_pool_used_bytes\\{[^}]*pool="${pool}"[^}]*\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no couchestor_pool_used_bytes for pool ${pool}`);
  return Number(m[1]);
}

/** Reads `lengthBytes` at `offsetBytes` of a file straight from disk. */
export function readFileRange(file: string, offsetBytes: number, lengthBytes: number): Buffer {
  const buf = Buffer.alloc(lengthBytes);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, buf, 0, lengthBytes, offsetBytes);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}
