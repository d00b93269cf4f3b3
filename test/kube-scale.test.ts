// The daemon on Kubernetes at cluster scale: every StoragePolicy carries
// every node's status entry, so on a big cluster each object nears etcd's
// ~1.5 MiB bound. Listed in pages, the daemon syncs however many there are
// (an unpaged list of ~33 MiB was refused on every try: never synced,
// /readyz 503 for good), and it keeps only its own entry of each status.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startKube, type KubeEnv } from './helpers/kube.js';
import { access, applyCrds } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, ECP, httpGet, SP, spSpec, startKubeDaemon, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

/** Policies, each with the entries of OTHER_NODES nodes of ~17 KiB (20 decisions at their bounds): ~1.25 MiB an object. */
const POLICIES = 28;
const OTHER_NODES = 75;

function bigEntry(node: number): Record<string, unknown> {
  return {
    phase: 'Active',
    observedGeneration: 1,
    reason: 'r'.repeat(1000),
    decisions: Array.from({ length: 20 }, (_, i) => ({ volume: `${'v'.repeat(240)}-${node}-${i}`, action: 'stay', reason: 'x'.repeat(500) })),
  };
}

before(async () => {
  kube = await startKube();
  await applyCrds(access(kube));
  cluster = new Cluster(kube);
  await cluster.create(ECP, 'ErasureCodingPolicy', 'ec21', { dataShards: 2, parityShards: 1 });
  const nodes = Object.fromEntries(Array.from({ length: OTHER_NODES }, (_, n) => [`other-${n}.example.com`, bigEntry(n)]));
  for (let i = 0; i < POLICIES; i++) {
    const name = `big-${String(i).padStart(2, '0')}`;
    await cluster.create(SP, 'StoragePolicy', name, spSpec({ volumeSelector: { matchLabels: { app: name } } }));
    const r = await kube.request('PATCH', `/apis/storage.billyronks.io/v1/${SP}/${name}/status`, { body: { status: { nodes } }, contentType: 'application/merge-patch+json' });
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 500));
  }
});

after(async () => {
  for (const d of daemons) await d.cleanup();
  await kube?.stop();
});

test(`${POLICIES} StoragePolicies of ~1.25 MiB each (${OTHER_NODES} other nodes' entries): the daemon lists them in pages, syncs, is ready and writes its own entry on each`, async () => {
  const all = await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`);
  const bytes = JSON.stringify(all.body).length;
  assert.ok(bytes > 32 * 1024 * 1024, `the whole list is more than 32 MiB (${bytes} bytes)`);

  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-a.example.com' });
  daemons.push(d);
  for (const name of ['big-00', `big-${POLICIES - 1}`]) await untilNodeStatus(cluster, SP, name, 'node-a.example.com', (s) => s.phase === 'Active', 60_000);
  assert.equal((await httpGet(`http://127.0.0.1:${d.info.api.port}/readyz`)).status, 200);
  // The other nodes' entries are still there: the merge patch touched node-a's key only (a node name with dots is one key).
  const one = await cluster.get(SP, 'big-00');
  assert.equal(Object.keys((one.status as { nodes: Record<string, unknown> }).nodes).length, OTHER_NODES + 1);
  assert.doesNotMatch(d.stderr, /larger than/);
});
