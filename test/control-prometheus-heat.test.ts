// Heat from a real Prometheus server scraping the daemon's /metrics: a cold
// volume under fio load is classified hot from Prometheus' rate() and moved;
// with Prometheus stopped the policy reports HeatSourceAvailable=False, makes
// no migrations, and the daemon stays healthy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestDaemon } from './helpers/daemon.js';
import { decisionFor, HIGH_IOPS, loadJob, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, status, volume, waitForLog, type FioJob, createVolume } from './helpers/control-loop.js';

// rate() needs two scrapes inside the window: 1 s scrapes, 4 s window.
const SCRAPE_INTERVAL_S = 1;
const WINDOW_S = 4;
const PROMETHEUS_WAIT_MS = 30_000;

/**
 * A real Prometheus on a port it binds itself (127.0.0.1:0, read back from its
 * "Listening on" log line: a port picked here and bound later could be taken
 * in between, e.g. by one of the daemon's own ephemeral listeners), started
 * with nothing to scrape; scrape() points it at the daemon and reloads it.
 */
class PrometheusServer {
  private log = '';
  private readonly exited: Promise<void>;
  private readonly proc;
  private readonly config: string;

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.config = path.join(dir, 'prometheus.yml');
    this.writeConfig(null);
    this.proc = spawn('prometheus', [`--config.file=${this.config}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, '--web.listen-address=127.0.0.1:0', '--log.level=info'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr.on('data', (b: Buffer) => (this.log += b.toString()));
    this.exited = new Promise((r) => this.proc.once('exit', () => r()));
  }

  private writeConfig(target: string | null): void {
    const scrape = target === null ? 'scrape_configs: []\n' : `scrape_configs:\n  - job_name: couchestor\n    static_configs:\n      - targets: ['${target}']\n`;
    fs.writeFileSync(this.config, `global:\n  scrape_interval: ${SCRAPE_INTERVAL_S}s\n  evaluation_interval: ${SCRAPE_INTERVAL_S}s\n${scrape}`);
  }

  /** Resolves once `found` holds of the log (checked as stderr arrives); rejects if Prometheus exits first. */
  private logged<T>(found: (log: string) => T | null): Promise<T> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`prometheus exited (${code}):\n${this.log}`));
      const check = () => {
        const v = found(this.log);
        if (v !== null) {
          this.proc.stderr.off('data', check);
          this.proc.off('exit', onExit);
          resolve(v);
        }
      };
      this.proc.stderr.on('data', check);
      this.proc.once('exit', onExit);
      check();
    });
  }

  /** Waits for Prometheus' own "ready" log line; returns its base URL (the port it bound, from its "Listening on" line). */
  ready(): Promise<string> {
    return this.logged((log) => {
      const address = /msg="Listening on" address=(127\.0\.0\.1:\d+)/.exec(log)?.[1];
      return address !== undefined && /Server is ready to receive web requests/.test(log) ? `http://${address}` : null;
    });
  }

  /** Scrapes `target` from now on: the config rewritten, SIGHUP, and its reload logged. */
  async scrape(target: string): Promise<void> {
    const reloads = (log: string) => log.match(/Completed loading of configuration file/g)?.length ?? 0;
    const before = reloads(this.log);
    this.writeConfig(target);
    this.proc.kill('SIGHUP');
    await this.logged((log) => (reloads(log) > before ? true : null));
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    await this.exited;
  }
}

async function promQuery(url: string, q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  return body.data.result;
}

test('Prometheus as the heat source: load seen through rate() moves a cold volume hot; Prometheus down -> HeatSourceAvailable=False, nothing moves', async (t) => {
  // Prometheus first, so the daemon's config can name its URL; then told to scrape the daemon.
  const dataDir = fs.mkdtempSync('/tmp/couchestor-ctl-');
  const prom = new PrometheusServer(path.join(dataDir, 'prometheus'));
  let daemon: TestDaemon | null = null;
  let load: FioJob | null = null;
  t.after(async () => {
    load?.kill();
    await prom.stop();
    if (daemon) await daemon.cleanup();
    else fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const promUrl = await prom.ready();
  const d = (daemon = await startControlDaemon({
    dataDir,
    policies: { 'tiering.yaml': policyYaml('tiering', { samplingWindow: `${WINDOW_S}s` }) },
    config: { heatSource: { type: 'prometheus', url: promUrl, metrics: 'couchestor' } },
  }));
  await prom.scrape(`127.0.0.1:${d.info.metrics.port}`);
  await createVolume(d, 'pv', 16 * 1024 * 1024, { tier: 'cold' });
  assert.equal((await volume(d, 'pv')).tier, 'cold');
  load = loadJob(d.exportUri('pv'), 0, 16 * 1024 * 1024);

  // Wait until Prometheus itself reports the load (the same query the daemon runs).
  const q = `sum by (volume) (rate(couchestor_volume_read_ops_total[${WINDOW_S}s]) + rate(couchestor_volume_write_ops_total[${WINDOW_S}s]))`;
  let promIops = 0;
  for (const start = Date.now(); ; ) {
    const r = (await promQuery(promUrl, q)).find((x) => x.metric.volume === 'pv');
    promIops = r ? Number(r.value[1]) : 0;
    if (promIops >= HIGH_IOPS) break;
    assert.ok(Date.now() - start < PROMETHEUS_WAIT_MS, `Prometheus never saw the load (last ${promIops} IOPS)`);
    await sleep(SCRAPE_INTERVAL_S * 1000);
  }
  let p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(p.conditions.find((c) => c.type === 'HeatSourceAvailable')?.status, 'True');
  const dec = decisionFor(p, 'pv');
  assert.equal(dec.action, 'migrate', dec.reason);
  assert.equal(dec.targetTier, 'hot');
  // The reading is Prometheus' rate(), not the daemon's own counters: same order of magnitude as our query.
  assert.ok(dec.iops! >= HIGH_IOPS && dec.iops! < promIops * 3, `decision ${dec.iops} IOPS, Prometheus ${promIops}`);
  assert.equal((await volume(d, 'pv')).tier, 'hot');
  assert.deepEqual(p.migrationHistory.map((h) => `${h.from}->${h.to}:${h.result}`), ['cold->hot:succeeded']);
  const r = await load.stop();
  assert.equal(r.job.error, 0, r.stderr);

  // Prometheus goes away. The volume is now idle (so it would be moved to
  // cold if the loop guessed); after a window, passes make no migration.
  // (Passes before this, e.g. the first at start, before Prometheus scraped the
  // daemon, may have warned too: count only this outage's warnings.)
  await sleep(0);
  const logBeforeOutage = d.stderr.length;
  await prom.stop();
  await sleep(WINDOW_S * 1000 + 500);
  p = policyNamed(await reconcile(d, true), 'tiering');
  const cond = p.conditions.find((c) => c.type === 'HeatSourceAvailable');
  assert.equal(cond?.status, 'False');
  assert.equal(cond?.reason, 'Unreachable');
  assert.ok(cond!.message.length > 0);
  const idle = decisionFor(p, 'pv');
  assert.equal(idle.action, 'no-data', idle.reason);
  assert.match(idle.reason, /heat source unavailable/);
  p = policyNamed(await reconcile(d, true), 'tiering');
  assert.equal(decisionFor(p, 'pv').action, 'no-data');
  assert.equal((await volume(d, 'pv')).tier, 'hot');
  assert.equal(p.migrationHistory.length, 1);
  assert.equal((await status(d)).totals.succeeded, 1);
  // The daemon itself is healthy and serving.
  for (const probe of ['healthz', 'readyz']) {
    const res = await fetch(`http://127.0.0.1:${d.info.api.port}/${probe}`);
    assert.equal(res.status, 200, `${probe}: ${await res.text()}`);
  }
  assert.equal(d.proc.exitCode, null);
  // Warned once, not every pass (read after the awaits above let the log in).
  await waitForLog(d, /heat source unavailable: no migrations this pass/);
  assert.equal(d.stderr.slice(logBeforeOutage).match(/heat source unavailable: no migrations this pass/g)?.length, 1, d.stderr);
});
