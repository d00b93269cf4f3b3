// A network partition between the daemon and the apiserver that sends no
// RST (a dropped conntrack entry, a dead NAT): the watch connection stays
// open and silent. The daemon takes a watch with no byte for
// kubernetes.watchSilenceTimeoutMs (120 s by default, longer than the server
// lets one last: 60-90 s) as dead and starts it again, so a policy created
// during the partition is followed once the network is back; the data path
// never waits on it. Run with an 8 s bound (watches of 4-5 s) so the test
// takes seconds, not the default's two minutes: what is proven is the same.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import type { KubeEnv } from './helpers/kube.js';
import { nbdsh, type TestDaemon } from './helpers/daemon.js';
import { createVolume, metric, scrape } from './helpers/control-loop.js';
import { Cluster, kubeconfigWithUser, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];
const cleanups: Array<() => void> = [];

/**
 * A TCP relay to the apiserver. cut(): every connection open now goes silent
 * for good (its bytes dropped, never closed), and new ones are held
 * unconnected until heal(); after heal() new connections relay again.
 */
async function startRelay(target: number) {
  let cut = false;
  const dead = new Set<net.Socket>();
  const live = new Set<[net.Socket, net.Socket]>();
  const held: net.Socket[] = [];
  const relay = (client: net.Socket) => {
    const upstream = net.connect(target, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    live.add(pair);
    client.on('data', (b) => !dead.has(client) && upstream.write(b));
    upstream.on('data', (b) => !dead.has(client) && client.write(b));
    const end = () => {
      live.delete(pair);
      if (dead.has(client)) return; // silent: nothing told to either side
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  };
  const server = net.createServer((client) => (cut ? held.push(client.on('error', () => undefined)) : relay(client)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      cut = true;
      for (const [client] of live) dead.add(client);
    },
    heal() {
      cut = false;
      for (const c of held.splice(0)) c.destroy();
    },
    close() {
      server.close();
      for (const [c, u] of live) (c.destroy(), u.destroy());
      for (const c of held) c.destroy();
    },
  };
}

/** The daemon's watch silence bound here; not 10 s, the list deadline (LIST_TIMEOUT_MS): the log names which request gave up. */
const SILENCE_MS = 8_000;

before(async () => ({ kube, cluster } = await startKubeCluster()));

after(async () => {
  for (const c of cleanups) c();
  await stopKubeCluster(kube, daemons);
});

test('a partition with no RST: the silent watch is dropped after watchSilenceTimeoutMs and started again, a policy created meanwhile is followed, NBD served throughout', { timeout: 120_000 }, async () => {
  const relay = await startRelay(Number(new URL(kube.server).port));
  cleanups.push(() => relay.close());
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-partition-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = kubeconfigWithUser({ server: `https://127.0.0.1:${relay.port}`, caData: kube.caData }, dir, 'admin', { token: kube.adminToken });
  const d = await startKubeDaemon({ kubeconfig, nodeName: 'node-a', watchSilenceTimeoutMs: SILENCE_MS });
  daemons.push(d);
  await createVolume(d, 'v', 1024 * 1024);
  await cluster.create(SP, 'StoragePolicy', 'p1', spSpec());
  await untilNodeStatus(cluster, SP, 'p1', 'node-a', (s) => s.phase === 'Active');

  const cutAt = Date.now();
  relay.cut();
  await cluster.create(SP, 'StoragePolicy', 'p2', spSpec({ dryRun: true }));
  // NBD does not wait on the apiserver.
  const out = nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('v'))})\nh.pwrite(bytes([5]) * 4096, 0)\nh.flush()\nprint(h.pread(4096, 0) == bytes([5]) * 4096)`);
  assert.equal(out.trim(), 'True');
  // The network back 3 s later; the watch connections opened before stay dead (no RST ever comes).
  await new Promise((r) => setTimeout(r, 3_000));
  relay.heal();
  await untilNodeStatus(cluster, SP, 'p2', 'node-a', (s) => s.phase === 'DryRun', 60_000);
  const followedAt = Date.now();
  console.log(`policy created during the partition followed after ${((followedAt - cutAt) / 1000).toFixed(1)} s (silence bound ${SILENCE_MS / 1000} s)`);
  // Given up by the silence bound (its socket's idle deadline; nothing else ends a connection the
  // partition left open), after the cut and before p2 was followed.
  const gaveUp = new RegExp(`^(\\S+) WARN kubernetes list/watch failed.* resource=${SP} err=GET \\S+/${SP}: no answer within ${SILENCE_MS} ms`, 'm').exec(d.stderr);
  assert.ok(gaveUp, `the silent StoragePolicy watch was given up:\n${d.stderr}`);
  const gaveUpAt = Date.parse(gaveUp[1]!);
  assert.ok(gaveUpAt >= cutAt && gaveUpAt <= followedAt, `given up during the partition (${gaveUp[1]}), before p2 was followed`);
  const m = await scrape(d);
  assert.ok((metric(m, 'couchestor_kube_watch_restarts_total', { resource: SP, reason: 'error' }) ?? 0) >= 1);
});
