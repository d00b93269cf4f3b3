// Heat from a real Prometheus server scraping the daemon's /metrics: a cold
// volume under fio load is classified hot from Prometheus' rate() and moved;
// with Prometheus stopped the policy reports HeatSourceAvailable=False, makes
// no migrations, and the daemon stays healthy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { decisionFor, HIGH_IOPS, loadJob, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, status, volume, waitForLog, type FioJob, createVolume } from './helpers/control-loop.js';

// rate() needs two scrapes inside the window: 1 s scrapes, 4 s window.
const SCRAPE_INTERVAL_S = 1;
const WINDOW_S = 4;
const PROMETHEUS_WAIT_MS = 30_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

class PrometheusServer {
  private log = '';
  private readonly exited: Promise<void>;
  private readonly proc;

  constructor(dir: string, port: number, target: string) {
    fs.mkdirSync(dir, { recursive: true });
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(
      config,
      `global:\n  scrape_interval: ${SCRAPE_INTERVAL_S}s\n  evaluation_interval: ${SCRAPE_INTERVAL_S}s\nscrape_configs:\n  - job_name: couchestor\n    static_configs:\n      - targets: ['${target}']\n`,
    );
    this.proc = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=info'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr.on('data', (b: Buffer) => (this.log += b.toString()));
    this.exited = new Promise((r) => this.proc.once('exit', () => r()));
  }

  /** Resolves on Prometheus' own "ready" log line. */
  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (/Server is ready to receive web requests/.test(this.log)) {
          this.proc.stderr.off('data', check);
          resolve();
        }
      };
      this.proc.stderr.on('data', check);
      this.proc.once('exit', (code) => reject(new Error(`prometheus exited (${code}):\n${this.log}`)));
      check();
    });
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
  const promPort = await freePort();
  const promUrl = `http://127.0.0.1:${promPort}`;
  const d = await startControlDaemon({
    policies: { 'tiering.yaml': policyYaml('tiering', { samplingWindow: `${WINDOW_S}s` }) },
    config: { heatSource: { type: 'prometheus', url: promUrl, metrics: 'couchestor' } },
  });
  const prom = new PrometheusServer(path.join(d.dataDir, 'prometheus'), promPort, `127.0.0.1:${d.info.metrics.port}`);
  let load: FioJob | null = null;
  t.after(async () => {
    load?.kill();
    await prom.stop();
    await d.cleanup();
  });
  await prom.ready();
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
  // (The daemon's first pass, before Prometheus was up, already warned once:
  // count only this outage's warnings.)
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
