// The departed-node pruner (src/control/kube/prune.ts) asks about a node that exists but stays silent (down, or
// the DaemonSet moved off it: its entries are kept) once a bound, not every round: every node of the cluster
// runs it, so a GET per silent node per round was N x M requests a minute against the apiserver, for good.
// Counted by the real apiserver's own apiserver_request_total.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeEnv } from './helpers/kube.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];
const BOUND_MS = 3_000;

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
});

after(() => stopKubeCluster(kube, daemons));

/** GETs of single Node objects the apiserver has answered, all clients and codes. */
async function nodeGets(): Promise<number> {
  const res = await kube.request('GET', '/metrics');
  assert.equal(res.status, 200);
  let n = 0;
  for (const line of String(res.body).split('\n')) {
    if (!line.startsWith('apiserver_request_total{') || !/[{,]resource="nodes"/.test(line) || !/[{,]verb="GET"/.test(line) || /subresource="[^"]/.test(line)) continue;
    n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

test('a silent node that exists is looked up once a bound, not every round', async () => {
  assert.equal((await kube.request('POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-silent' } } })).status, 201);
  await cluster.create(SP, 'StoragePolicy', 'gets-sp', spSpec());
  const old = await kube.request('PATCH', `/apis/storage.billyronks.io/v1/${SP}/gets-sp/status`, { body: { status: { nodes: { 'node-silent': { phase: 'Active', lastReconcileTime: '2020-01-01T00:00:00Z' } } } }, contentType: 'application/merge-patch+json' });
  assert.equal(old.status, 200, JSON.stringify(old.body));
  // Rounds every 1.5 s (jittered 1.1-1.9 s): at least 4 in the 9 s below, each a GET of node-silent before the fix.
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-g', departedNodeEntryTimeoutMs: BOUND_MS });
  daemons.push(d);
  await untilNodeStatus(cluster, SP, 'gets-sp', 'node-g', (s) => s.phase === 'Active');
  const before = await nodeGets();
  await new Promise((r) => setTimeout(r, 3 * BOUND_MS));
  const gets = (await nodeGets()) - before;
  // Once a bound: at most 3 in 3 bounds (one when the window opens, the others a bound apart); load only makes fewer.
  assert.ok(gets >= 1 && gets <= 3, `${gets} GETs of node-silent in ${3 * BOUND_MS} ms`);
  assert.ok(Object.keys(((await cluster.get(SP, 'gets-sp')).status as { nodes: Record<string, unknown> }).nodes).includes('node-silent'), 'kept: its Node exists');
  await d.stop();
});
