// Departed nodes' status objects are pruned (src/control/kube/prune.ts): a
// node whose Node object is gone and whose last report is older than
// kubernetes.departedNodeEntryTimeoutMs loses its node-status object of every
// policy; a node that exists keeps its objects however silent; a daemon that
// may not read Node objects says so once and prunes nothing. Against the real
// apiserver, Node objects created through the API (the fixture has no kubelet).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { KubeEnv } from './helpers/kube.js';
import { access, bindDeployClusterRole } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, ECP, kubeconfigWithUser, nodeStatusPlural, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';
import { nodeStatusName } from '../src/control/kube/status.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];
const BOUND_MS = 2_000;
const LONG_AGO = '2020-01-01T00:00:00Z';

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
});

after(() => stopKubeCluster(kube, daemons));

async function createNode(name: string): Promise<void> {
  const res = await kube.request('POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name } } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

/** The node-status object of a node that reported long ago and went silent. */
async function oldEntry(plural: string, name: string, node: string): Promise<void> {
  const entry = plural === SP ? { phase: 'Active', lastReconcileTime: LONG_AGO } : { phase: 'Unused', lastUpdateTime: LONG_AGO };
  await cluster.writeNodeStatus(plural, name, node, entry, LONG_AGO);
}

function nodeKeys(plural: string, name: string): Promise<string[]> {
  return cluster.statusNodes(plural, name);
}

test('a deleted Node loses its status objects once older than the bound; an existing silent node keeps its own', async () => {
  for (const n of ['node-a', 'node-b', 'node-c']) await createNode(n);
  await cluster.create(SP, 'StoragePolicy', 'prune-sp', spSpec());
  const [a, b] = await Promise.all(['node-a', 'node-b'].map((nodeName) => startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName, departedNodeEntryTimeoutMs: BOUND_MS })));
  daemons.push(a!, b!);
  await Promise.all(['node-a', 'node-b'].flatMap((n) => [untilNodeStatus(cluster, SP, 'prune-sp', n, (s) => s.phase === 'Active'), untilNodeStatus(cluster, ECP, 'ec21', n, (s) => s.phase === 'Active')]));
  // node-c exists but has said nothing since 2020 (down): never pruned while its Node object exists.
  await oldEntry(SP, 'prune-sp', 'node-c');
  await oldEntry(ECP, 'ec21', 'node-c');

  // node-b drained and deleted: its daemon gone, then its Node object.
  await b!.stop();
  const bLast = Date.parse((await cluster.nodeStatusObject(SP, 'prune-sp', 'node-b'))!.metadata.annotations!['storage.billyronks.io/last-report-time']!);
  assert.equal((await kube.request('DELETE', '/api/v1/nodes/node-b')).status, 200);
  const t0 = Date.now();

  // Removed from both kinds within the bound after it went stale (a round every bound/2, jittered: 1.5 bound at most).
  await until('node-b pruned from both policies', async () => ((await nodeKeys(SP, 'prune-sp')).includes('node-b') || (await nodeKeys(ECP, 'ec21')).includes('node-b') ? undefined : true), 3 * BOUND_MS + 5_000, 100);
  const removedAt = Date.now();
  assert.ok(removedAt - bLast >= BOUND_MS, `removed ${removedAt - bLast} ms after its last write: before the bound`);
  assert.ok(removedAt - t0 <= 3 * BOUND_MS + 2_000, `removed ${removedAt - t0} ms after the Node was deleted`);
  // node-c's objects were as stale as node-b's in the rounds that removed node-b's, and stay: its Node exists.
  assert.deepEqual(await nodeKeys(SP, 'prune-sp'), ['node-a', 'node-c']);
  assert.deepEqual(await nodeKeys(ECP, 'ec21'), ['node-a', 'node-c']);
  // The removal's guard against a node that came back meanwhile: a delete on an older resourceVersion is refused.
  const stale = await kube.request('DELETE', `/apis/storage.billyronks.io/v1/${nodeStatusPlural(SP)}/${nodeStatusName('prune-sp', 'node-a')}`, { body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { resourceVersion: '1' } } });
  assert.equal(stale.status, 409, JSON.stringify(stale.body));
  assert.deepEqual(await nodeKeys(SP, 'prune-sp'), ['node-a', 'node-c']);
  const metrics = await (await fetch(`http://127.0.0.1:${a!.info.metrics.port}/metrics`)).text();
  assert.match(metrics, /^couchestor_kube_departed_node_entries_pruned_total [1-9]/m);
  await a!.stop();
});

test('a daemon whose ClusterRole has no get on nodes says so once and removes nothing', async () => {
  // A role with only what the daemon needs but the pruner: its policies, and its node-status objects.
  const role = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: 'couchestor-no-nodes' },
    rules: [
      { apiGroups: ['storage.billyronks.io'], resources: ['storagepolicies', 'erasurecodingpolicies'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['storage.billyronks.io'], resources: ['storagepolicynodestatuses', 'erasurecodingpolicynodestatuses'], verbs: ['get', 'list', 'create', 'patch', 'delete'] },
    ],
  };
  assert.equal((await kube.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', { body: role })).status, 201);
  const binding = { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'couchestor-no-nodes' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'couchestor-no-nodes' }, subjects: [{ kind: 'ServiceAccount', name: 'no-nodes', namespace: 'default' }] };
  assert.equal((await kube.request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', { body: binding })).status, 201);
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-prune-');
  try {
    const token = await kube.serviceAccountToken('default', 'no-nodes');
    await cluster.create(SP, 'StoragePolicy', 'prune-rbac', spSpec());
    // node-x has no Node object and reported long ago: a prune candidate, if the daemon could look.
    await oldEntry(SP, 'prune-rbac', 'node-x');
    const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'no-nodes', { token }), nodeName: 'node-d', departedNodeEntryTimeoutMs: 1_000 });
    daemons.push(d);
    await untilNodeStatus(cluster, SP, 'prune-rbac', 'node-d', (s) => s.phase === 'Active');
    await until('the missing permission logged', () => (/cannot read Node objects/.test(d.stderr) ? true : undefined), 10_000);
    // Rounds every 0.5 s: a few more pass, none logs again, and the daemon carries on.
    await new Promise((r) => setTimeout(r, 2_500));
    assert.equal(d.stderr.match(/cannot read Node objects/g)?.length, 1, 'logged once');
    assert.deepEqual(await nodeKeys(SP, 'prune-rbac'), ['node-d', 'node-x']);
    assert.equal((await fetch(`http://127.0.0.1:${d.info.api.port}/healthz`)).status, 200);
    await d.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
