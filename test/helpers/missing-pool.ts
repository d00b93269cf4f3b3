// Missing-pool / journal-pool test setup: a cold daemon (with volume c1, or a configuration of its own) beside a
// temp work dir, every daemon started on its data dir removed after the test; acknowledged writes left in the
// cold tier's journal; `pools:` YAML for the six default cold pools after the hot/warm ones a test lists; a start
// that may be refused; a warm daemon started with its warm pool's directory gone; an S3 object on the larger of two
// hot pools; a data dir as a build before the pool identity left it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { TestDaemon, run } from './daemon.js';
import { patternBytes, startColdDaemon, startWithColdVolume } from './cold.js';
import { startWarmDaemon } from './hot-warm.js';
import { aws, startS3, type S3Env } from './s3-env.js';
import { MetaStore } from '../../src/dataplane/meta/store.js';

export interface DaemonWork {
  /** A temp directory for the test's files (nbdcopy sources, exports read back). */
  work: string;
  dataDir: string;
  /** The daemon first started. */
  d: TestDaemon;
  /** Starts a daemon again on `dataDir`; it is killed after the test like the first. */
  restart(): Promise<TestDaemon>;
}

/**
 * A temp work dir (`prefix`) and the daemon `start` gives. After the test (once `beforeRemove`, if given, has run):
 * every daemon from it or `restart` killed, the data dir and the work dir removed.
 */
export async function daemonWithWork(t: TestContext, prefix: string, start: (work: string) => Promise<TestDaemon>, beforeRemove?: () => void): Promise<DaemonWork> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  let d: TestDaemon;
  try {
    d = await start(work);
  } catch (err) {
    fs.rmSync(work, { recursive: true, force: true });
    throw err;
  }
  const daemons = [d];
  t.after(async () => {
    beforeRemove?.();
    for (const x of daemons) await x.kill();
    fs.rmSync(d.dataDir, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  });
  return {
    work,
    dataDir: d.dataDir,
    d,
    async restart() {
      const next = await TestDaemon.start({ dataDir: d.dataDir });
      daemons.push(next);
      return next;
    },
  };
}

/** daemonWithWork on startWithColdVolume: cold volume c1 of `volumeBytes`, its first `patternLengthBytes` written (`seed`) and destaged; `model` is its bytes. */
export async function coldVolumeWithWork(t: TestContext, prefix: string, volumeBytes: number, patternLengthBytes: number, seed: number, beforeRemove?: () => void): Promise<DaemonWork & { model: Buffer }> {
  let model: Buffer = Buffer.alloc(0);
  const fx = await daemonWithWork(
    t,
    prefix,
    async (work) => {
      const started = await startWithColdVolume(work, volumeBytes, patternLengthBytes, seed);
      model = started.model;
      return started.d;
    },
    beforeRemove,
  );
  return { ...fx, model };
}

/** daemonWithWork on startColdDaemon(`config`) (the manual-destage configuration by default). */
export function coldDaemonWithWork(t: TestContext, prefix: string, config?: string): Promise<DaemonWork> {
  return daemonWithWork(t, prefix, () => startColdDaemon(config));
}

/**
 * Writes `lengthBytes` of pattern `seed` at offset 0 of c1 through nbdcopy (acknowledged and flushed; with destage
 * manual they stay in the journal) and into `model`. Returns the bytes written.
 */
export function writeJournaled(d: TestDaemon, work: string, model: Buffer, lengthBytes: number, seed: number): Buffer {
  const more = patternBytes(lengthBytes, seed);
  fs.writeFileSync(path.join(work, 'more.bin'), more);
  run('nbdcopy', [path.join(work, 'more.bin'), d.exportUri('c1')]);
  more.copy(model, 0);
  return more;
}

/** A couchestor.yaml `pools:` section: `lead` ([name, tier, path?], path pools/NAME by default), then cold-0..cold-5. */
export function poolsYaml(...lead: [name: string, tier: string, dir?: string][]): string {
  const pool = (name: string, tier: string, dir = `pools/${name}`) => `  - { name: ${name}, tier: ${tier}, path: ${dir}, capacity: auto }\n`;
  return 'pools:\n' + lead.map(([name, tier, dir]) => pool(name, tier, dir)).join('') + Array.from({ length: 6 }, (_, i) => pool(`cold-${i}`, 'cold')).join('');
}

/** Starts serve on `dataDir`: the daemon, or the error it exited with before ready (a refused start). */
export function startOrError(dataDir: string): Promise<TestDaemon | Error> {
  return TestDaemon.start({ dataDir }).then(
    (wrongly) => wrongly,
    (err: Error) => err,
  );
}

/**
 * A warm daemon (hot-0, warm-0, cold-0..5) with hot volume `good` and warm volume `v` (4 MiB each), restarted with
 * warm-0's directory moved away (a disk not mounted); `remount` puts it back. Removed after the test.
 */
export async function warmPoolGoneAtStart(t: TestContext): Promise<{ d: TestDaemon; remount: () => void }> {
  const d0 = await startWarmDaemon();
  let d = d0;
  t.after(() => d.cleanup());
  d.createVolume('good', '4M');
  d.createVolume('v', '4M', '--tier', 'warm');
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  if ((await d.stop()) !== 0) throw new Error(`daemon stop failed:\n${d.stderr}`);
  fs.renameSync(warm0, `${warm0}.unmounted`);
  d = await TestDaemon.start({ dataDir: d0.dataDir });
  return { d, remount: () => fs.renameSync(`${warm0}.unmounted`, warm0) };
}

/**
 * "Unmounts" pool directory `dir`: its contents (the disk) move to `${dir}.disk` and an empty directory, the
 * mount point, stays at `dir`.
 */
export function unmountPool(dir: string): void {
  fs.renameSync(dir, `${dir}.disk`);
  fs.mkdirSync(dir);
}

/** "Mounts" the disk unmountPool moved aside back at `dir`; throws if anything was written into the empty mount point. */
export function mountPool(dir: string): void {
  const written = fs.readdirSync(dir);
  if (written.length > 0) throw new Error(`written into the empty mount point ${dir}: ${written.join(', ')}`);
  fs.rmdirSync(dir);
  fs.renameSync(`${dir}.disk`, dir);
}

/** /readyz of `d`: its status and reasons. */
export async function readyz(d: TestDaemon): Promise<{ status: number; reasons: string[] }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/readyz`);
  return { status: res.status, reasons: ((await res.json()) as { reasons: string[] }).reasons };
}

/** The value of couchestor_pool_online for `pool` in one /metrics scrape of `d` (undefined: no series). */
export async function poolOnlineGauge(d: TestDaemon, pool: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('couchestor_pool_online{') && l.includes(`pool="${pool}"`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

const GiB = 1024 ** 3;
/** hot-0 (1 GiB) and hot-1 (4 GiB), cold-0..5: hot-1 the larger, so placement (most free bytes) puts new hot objects there; the journal stays on hot-0. */
const TWO_HOT_POOLS_CONFIG =
  'demoVolume: null\npools:\n' +
  `  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: ${GiB} }\n` +
  `  - { name: hot-1, tier: hot, path: pools/hot-1, capacity: ${4 * GiB} }\n` +
  [0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

/**
 * An S3 daemon on two hot pools (TWO_HOT_POOLS_CONFIG; removed after the test) with bucket `bkt` and object `key`
 * PUT with `body` (from `src`, in env.home): placement stores it on hot-1, whose directory is `hot1`.
 */
export async function s3ObjectOnHot1(t: TestContext, key: string, body: Buffer): Promise<{ env: S3Env; hot1: string; src: string }> {
  const env = await startS3({ config: TWO_HOT_POOLS_CONFIG });
  t.after(() => env.cleanup());
  const hot1 = path.join(env.daemon.dataDir, 'pools', 'hot-1');
  const src = path.join(env.home, 'obj.bin');
  fs.writeFileSync(src, body);
  assert.equal(aws(env, ['s3api', 'create-bucket', '--bucket', 'bkt']).status, 0);
  assert.equal(aws(env, ['s3api', 'put-object', '--bucket', 'bkt', '--key', key, '--body', src]).status, 0);
  return { env, hot1, src };
}

/**
 * The stopped daemon's data dir as a build before the pool identity left it: no identity file in pools/NAME for
 * each of `pools`, no uuid in the index's pool records.
 */
export async function asBeforePoolIdentity(dataDir: string, pools: string[]): Promise<void> {
  for (const n of pools) fs.rmSync(path.join(dataDir, 'pools', n, '.couchestor-pool'));
  const meta = MetaStore.open(dataDir);
  for (const rec of meta.listPools()) {
    const { uuid: _uuid, ...old } = rec;
    await meta.pools.put(rec.name, old);
  }
  await meta.durable();
  await meta.close();
}
