// The daemon on Kubernetes when the apiserver goes away: restarted under a
// running daemon, the watch resumes (a StoragePolicy created after the
// restart is picked up) and the data path never stopped; down at the
// daemon's start, the daemon still serves NBD and S3, /readyz says the policy
// source has not synced, and the cold tier is off with the reason logged.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { KubeEnv } from './helpers/kube.js';
import { nbdsh, type TestDaemon } from './helpers/daemon.js';
import { createVolume, metric, nbdcopyOut, reconcile, scrape } from './helpers/control-loop.js';
import { awsOk, startS3 } from './helpers/s3-env.js';
import { apiserverPid, Cluster, destagedColdVolume, ECP, httpGet, kubeDaemonConfig, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

before(async () => ({ kube, cluster } = await startKubeCluster()));

after(() => stopKubeCluster(kube, daemons));

/** A write then a read back over NBD (nbdsh): the data path answers. */
function nbdRoundTrip(d: TestDaemon, volumeName: string, fill: number): void {
  const out = nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri(volumeName))})\nh.pwrite(bytes([${fill}]) * 65536, 0)\nh.flush()\nprint(h.pread(65536, 0) == bytes([${fill}]) * 65536)`);
  assert.equal(out.trim(), 'True');
}

test('the apiserver restarted under a running daemon: the watch resumes, a CR created after the restart is picked up, NBD served throughout', async () => {
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-a' });
  daemons.push(d);
  await cluster.create(SP, 'StoragePolicy', 'before-restart', spSpec());
  await untilNodeStatus(cluster, SP, 'before-restart', 'node-a', (s) => s.phase === 'Active');
  await createVolume(d, 'v', 1024 * 1024);

  await kube.restartApiserver();
  nbdRoundTrip(d, 'v', 7);
  await cluster.create(SP, 'StoragePolicy', 'after-restart', spSpec({ dryRun: true }));
  // The watch's retry backoff is at most 10 s.
  const s = await untilNodeStatus(cluster, SP, 'after-restart', 'node-a', (x) => x.phase === 'DryRun', 30_000);
  assert.equal(s.observedGeneration, 1);
  const m = await scrape(d);
  const restarts = ['expired', 'error', 'closed'].reduce((n, reason) => n + (metric(m, 'couchestor_kube_watch_restarts_total', { resource: 'storagepolicies', reason }) ?? 0), 0);
  assert.ok(restarts >= 1, `watch restarts counted: ${restarts}`);
  assert.equal((await httpGet(`http://127.0.0.1:${d.info.api.port}/readyz`)).status, 200, 'listed once: stays ready through the outage');
  nbdRoundTrip(d, 'v', 9);
});

/** TCP connections the process holds to the apiserver's port (ss). */
function connectionsTo(pid: number, server: string): number {
  const port = new URL(server).port;
  const out = spawnSync('ss', ['-tnpH', 'state', 'established', `dport = :${port}`], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter((l) => l.includes(`pid=${pid},`)).length;
}

test('a hung apiserver (SIGSTOP): passes and NBD go on, status writes wait one at a time (no pile-up), the newest entry is written once it answers', async () => {
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-hung' });
  daemons.push(d);
  await cluster.create(SP, 'StoragePolicy', 'hung', spSpec({ volumeSelector: { matchLabels: { app: 'hung' } } }));
  await untilNodeStatus(cluster, SP, 'hung', 'node-hung', (s) => s.phase === 'Active');
  await createVolume(d, 'hv0', 1024 * 1024, { labels: { app: 'hung' } });
  const pid = apiserverPid(kube.server);
  process.kill(pid, 'SIGSTOP');
  try {
    // Each pass changes the status (one more volume each): a write is due after every one.
    const t0 = Date.now();
    for (let i = 1; i <= 20; i++) {
      await createVolume(d, `hv${i}`, 1024 * 1024, { labels: { app: 'hung' } });
      await reconcile(d, false);
    }
    const passesMs = Date.now() - t0;
    nbdRoundTrip(d, 'hv0', 3);
    const m = await scrape(d);
    console.log(`20 passes with the apiserver hung: ${passesMs} ms; connections to it: ${connectionsTo(d.proc.pid!, kube.server)}; pending entries: ${metric(m, 'couchestor_kube_status_writes_pending')}`);
    assert.ok(passesMs < 10_000, `20 passes (each with a volume created) took ${passesMs} ms with the apiserver hung`);
    // Two watches and at most one status write: nothing queued up behind the hung one.
    assert.ok(connectionsTo(d.proc.pid!, kube.server) <= 3, `connections: ${connectionsTo(d.proc.pid!, kube.server)}`);
    // At most one entry per resource waits (3 StoragePolicies, 1 ErasureCodingPolicy), the newest, however many passes.
    const pending = metric(m, 'couchestor_kube_status_writes_pending')!;
    assert.ok(pending >= 1 && pending <= 4, `pending entries: ${pending}`);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  const s = await untilNodeStatus(cluster, SP, 'hung', 'node-hung', (x) => x.watchedVolumes === 21, 60_000);
  assert.equal((s.decisions ?? []).length, 20, 'at most 20 decisions kept (21 made)');
  assert.equal(s.decisionsTotal, 21);
});

test('an apiserver down at start: the daemon serves NBD and S3, /readyz says the policy source is not synced, the cold tier is off with the reason', async () => {
  // A kubeconfig naming a port nothing listens on: the apiserver is down.
  const port = await new Promise<number>((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
  const down = path.join(kube.dir, 'kubeconfig-down.yaml');
  fs.writeFileSync(down, fs.readFileSync(kube.kubeconfig(), 'utf8').replace(kube.server, `https://127.0.0.1:${port}`));
  const env = await startS3({ config: kubeDaemonConfig({ kubeconfig: down, nodeName: 'node-down', startSyncTimeoutMs: 1500 }) });
  daemons.push(env.daemon);
  const d = env.daemon;
  assert.match(d.stderr, /cold tier disabled: ErasureCodingPolicy ec21 not read: the apiserver \(https:\/\/127\.0\.0\.1:\d+\) did not answer within 1500 ms/);

  const ready = await httpGet(`http://127.0.0.1:${d.info.api.port}/readyz`);
  assert.equal(ready.status, 503);
  const reasons = (JSON.parse(ready.body) as { reasons: string[] }).reasons;
  assert.ok(reasons.some((r) => /policy source not synced: storagepolicies not listed yet from the apiserver/.test(r)), JSON.stringify(reasons));
  assert.equal(metric(await scrape(d), 'couchestor_kube_policy_source_synced', { resource: 'storagepolicies' }), 0);

  await createVolume(d, 'v', 1024 * 1024);
  nbdRoundTrip(d, 'v', 5);
  awsOk(env, ['s3', 'mb', 's3://bucket']);
  const file = path.join(env.home, 'obj.txt');
  fs.writeFileSync(file, 'served without the apiserver\n');
  awsOk(env, ['s3', 'cp', file, 's3://bucket/obj.txt']);
  awsOk(env, ['s3', 'cp', 's3://bucket/obj.txt', path.join(env.home, 'back.txt')]);
  assert.equal(fs.readFileSync(path.join(env.home, 'back.txt'), 'utf8'), 'served without the apiserver\n');
  fs.rmSync(env.home, { recursive: true, force: true });
});

test('a node restarted while the apiserver hangs (a reboot during a control-plane outage): the cold tier runs the ErasureCodingPolicy as last read, cold data reads back; once the apiserver answers, its status is Active', async () => {
  const MiB = 1024 * 1024;
  const opts = { kubeconfig: kube.kubeconfig(), nodeName: 'node-reboot', startSyncTimeoutMs: 1500 };
  let d = await startKubeDaemon(opts);
  daemons.push(d);
  const src = await destagedColdVolume(d, 'cv', 'cold.bin');
  assert.equal(await d.stop(), 0);

  const pid = apiserverPid(kube.server);
  process.kill(pid, 'SIGSTOP');
  try {
    d = await startKubeDaemon({ ...opts, dataDir: d.dataDir });
    daemons.push(d);
    assert.doesNotMatch(d.stderr, /cold tier disabled/);
    assert.match(d.stderr, /ErasureCodingPolicy ec21 not read: the apiserver .* did not answer within 1500 ms .*the cold tier runs it as last read from the cluster/);
    assert.ok(nbdcopyOut(d.exportUri('cv'), path.join(d.dataDir, 'out.bin'), 2 * MiB).equals(fs.readFileSync(src)), 'cold data read back');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await reconcile(d, false);
  const s = await untilNodeStatus(cluster, ECP, 'ec21', 'node-reboot', (x) => x.phase === 'Active', 60_000);
  assert.equal(s.activeDataShards, 2);
});
