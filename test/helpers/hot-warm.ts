// Harness of the hot <-> warm migration tests: a daemon config with a warm
// pool beside the hot one (and the six cold pools policies select), the
// migrate/release/pool calls of the admin API, and where a volume's data
// file lives on each pool; in process, a VolumeManager with hot/warm pools
// and the data files this process holds open.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import type { MigrationProgress } from '../../src/dataplane/volumes/migration.js';
import type { VolumeRecord } from '../../src/dataplane/meta/store.js';
import { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import type { Volume } from '../../src/dataplane/volumes/volume.js';
import { writeVolume } from './volume.js';
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

const MiB = 1024 * 1024;

/**
 * In process: a VolumeManager over a fresh temp dir (`prefix` names it) with
 * pools hot-0 and warm-0 of 256 MiB (and cold-0 when `coldPool`, for policies
 * that name a cold tier). Closed and removed after the test.
 */
export async function hotWarmManager(
  t: { after(fn: () => unknown): void },
  opts: { coldPool?: boolean; prefix?: string } = {},
): Promise<{ dir: string; m: VolumeManager }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), opts.prefix ?? 'couchestor-hw-'));
  const m = VolumeManager.open(path.join(dir, 'meta'));
  t.after(async () => {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const tiers = opts.coldPool ? (['hot', 'warm', 'cold'] as const) : (['hot', 'warm'] as const);
  for (const tier of tiers) await m.putPool({ name: `${tier}-0`, path: path.join(dir, `${tier}-0`), tier, capacityBytes: 256 * MiB, labels: { tier } });
  return { dir, m };
}

/**
 * hotWarmManager() with volume `v` of `chunks` MiB written with random bytes
 * and flushed.
 */
export async function hotWarmVolume(
  t: { after(fn: () => unknown): void },
  chunks: number,
  opts: { coldPool?: boolean } = {},
): Promise<{ dir: string; m: VolumeManager; vol: Volume; want: Buffer }> {
  const { dir, m } = await hotWarmManager(t, opts);
  await m.createVolume({ name: 'v', sizeBytes: chunks * MiB });
  const vol = m.openVolume('v');
  const want = crypto.randomBytes(chunks * MiB);
  await writeVolume(vol, 0, want);
  await vol.flush();
  return { dir, m, vol, want };
}

/** Where each descriptor this process has open points (/proc/self/fd). */
export function openDescriptorTargets(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      out.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the descriptor readdir itself used, closed since
    }
  }
  return out;
}

/** Pools whose data file of volume `id` under `dir` this process has open, one per descriptor, sorted ("(deleted)" marks an unlinked file). */
export function openVolumeFiles(dir: string, id: number): string[] {
  const out: string[] = [];
  for (const target of openDescriptorTargets()) {
    const m = new RegExp(`^${dir}/([^/]+)/volumes/${id}\\.dat( \\(deleted\\))?$`).exec(target);
    if (m) out.push(m[1]! + (m[2] ?? ''));
  }
  return out.sort();
}
