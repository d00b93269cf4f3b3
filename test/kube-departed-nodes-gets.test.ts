// The departed-node pruner (src/control/kube/prune.ts) asks about a node that exists but stays silent (down, or
// the DaemonSet moved off it: its status objects are kept) once a bound, not every round: every node of the
// cluster runs it, so a GET per silent node per round was N x M requests a minute against the apiserver, for good.
// Counted by the real apiserver's own apiserver_request_total. And a node name that cannot be a Node's
// (".", "", "Worker-1": a hand edit, an old daemon's host name) is never looked up: "." was GET
// /api/v1/nodes/. = a LIST of nodes, refused (403) under deploy/rbac.yaml's get-only role, which stopped
// every round there ("lacks get on nodes" logged) and so no departed node was ever pruned.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { KubeEnv } from './helpers/kube.js';
import { access, bindDeployClusterRole } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, kubeconfigWithUser, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

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
  await cluster.writeNodeStatus(SP, 'gets-sp', 'node-silent', { phase: 'Active', lastReconcileTime: '2020-01-01T00:00:00Z' }, '2020-01-01T00:00:00Z');
  // Rounds every 1.5 s (jittered 1.1-1.9 s): at least 4 in the 9 s below, each a GET of node-silent before the fix.
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-g', departedNodeEntryTimeoutMs: BOUND_MS });
  daemons.push(d);
  await untilNodeStatus(cluster, SP, 'gets-sp', 'node-g', (s) => s.phase === 'Active');
  const before = await nodeGets();
  await new Promise((r) => setTimeout(r, 3 * BOUND_MS));
  const gets = (await nodeGets()) - before;
  // Once a bound: at most 3 in 3 bounds (one when the window opens, the others a bound apart); load only makes fewer.
  assert.ok(gets >= 1 && gets <= 3, `${gets} GETs of node-silent in ${3 * BOUND_MS} ms`);
  assert.ok((await cluster.statusNodes(SP, 'gets-sp')).includes('node-silent'), 'kept: its Node exists');
  await d.stop();
});

test('a node name that cannot be a Node\'s is not looked up: it does not stop the pruning of the others', async () => {
  const { role, binding } = await bindDeployClusterRole(access(kube), 'couchestor-service-accounts', { kind: 'Group', name: 'system:serviceaccounts' });
  assert.equal(role.status, 201);
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-prune-');
  try {
    await cluster.create(SP, 'StoragePolicy', 'keys-sp', spSpec());
    const long = { phase: 'Active', lastReconcileTime: '2020-01-01T00:00:00Z' };
    // node-gone has no Node object: a departed node. '.' (a hand-made object's node annotation) is looked at first.
    for (const node of ['.', 'node-gone']) await cluster.writeNodeStatus(SP, 'keys-sp', node, long, long.lastReconcileTime);
    const token = await kube.serviceAccountToken('default', 'keys');
    const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'keys', { token }), nodeName: 'node-k', departedNodeEntryTimeoutMs: 1_000 });
    daemons.push(d);
    await until('both pruned', async () => ((await cluster.statusNodes(SP, 'keys-sp')).join() === 'node-k' ? true : undefined), 10_000, 100);
    assert.doesNotMatch(d.stderr, /cannot read Node objects/);
    await d.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
