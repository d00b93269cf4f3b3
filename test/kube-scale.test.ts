// The daemon on Kubernetes at cluster scale. Up to session 13 every
// StoragePolicy carried every node's status entry (status.nodes.<node>), so on
// a big cluster each object neared etcd's ~1.5 MiB bound and the list of them
// passed 32 MiB. An upgraded cluster still holds those entries in etcd: the new
// CRD's schema has no status.nodes, so the apiserver drops them on read, and
// the daemon's list is small again; each node's status is an object of its
// own (test kube-status-fanout). And a node writing to its cold tier does not
// rewrite its ErasureCodingPolicy status after every pass.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startKube, type KubeEnv } from './helpers/kube.js';
import { access, applyCrds } from './helpers/kube-manifests.js';
import { nbdsh, type TestDaemon } from './helpers/daemon.js';
import { createVolume, metric, reconcile, scrape } from './helpers/control-loop.js';
import { Cluster, ECP, httpGet, SP, spSpec, startKubeDaemon, until, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

/** Policies, each with the old layout's entries of OTHER_NODES nodes of ~17 KiB (20 decisions at their bounds): ~1.25 MiB an object. */
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
  // The previous version's CRD kept status.nodes: stand-in, a status schema that keeps anything.
  const crdPath = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/storagepolicies.storage.billyronks.io';
  const crd = (await kube.request('GET', crdPath)).body;
  crd.spec.versions[0].schema.openAPIV3Schema.properties.status = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
  assert.equal((await kube.request('PUT', crdPath, { body: crd })).status, 200);
  await waitStatusSchema(true);
  const nodes = Object.fromEntries(Array.from({ length: OTHER_NODES }, (_, n) => [`other-${n}.example.com`, bigEntry(n)]));
  for (let i = 0; i < POLICIES; i++) {
    const name = `big-${String(i).padStart(2, '0')}`;
    await cluster.create(SP, 'StoragePolicy', name, spSpec({ volumeSelector: { matchLabels: { app: name } } }));
    const r = await kube.request('PATCH', `/apis/storage.billyronks.io/v1/${SP}/${name}/status`, { body: { status: { nodes } }, contentType: 'application/merge-patch+json' });
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 500));
  }
  const all = await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`);
  oldListBytes = JSON.stringify(all.body).length;
  // The upgrade: deploy/crds applied again.
  await applyCrds(access(kube));
  await waitStatusSchema(false);
});

let oldListBytes = 0;

/** Polls until the apiserver serves the StoragePolicy schema that keeps (true) or drops (false) status.nodes. */
async function waitStatusSchema(keeps: boolean): Promise<void> {
  await until(`the StoragePolicy schema ${keeps ? 'keeps' : 'drops'} status.nodes`, async () => {
    const probe = await kube.request('PATCH', `/apis/storage.billyronks.io/v1/${SP}/probe/status`, { body: { status: { nodes: { n: { phase: 'Active' } } } }, contentType: 'application/merge-patch+json' });
    if (probe.status === 404) {
      await cluster.create(SP, 'StoragePolicy', 'probe', spSpec({ enabled: false, volumeSelector: { matchLabels: { app: 'probe' } } }));
      return undefined;
    }
    return (probe.body?.status?.nodes !== undefined) === keeps ? true : undefined;
  }, 20_000, 100);
}

after(async () => {
  for (const d of daemons) await d.cleanup();
  await kube?.stop();
});

test(`an upgraded cluster, ${POLICIES} StoragePolicies of ~1.25 MiB each in etcd (${OTHER_NODES} nodes' old entries): the list is small, the daemon syncs, is ready and writes its own status of each`, async () => {
  assert.ok(oldListBytes > 32 * 1024 * 1024, `the whole list was more than 32 MiB (${oldListBytes} bytes)`);
  const all = await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`);
  const bytes = JSON.stringify(all.body).length;
  assert.ok(bytes < 256 * 1024, `the list after the upgrade: ${bytes} bytes`);

  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-a.example.com' });
  daemons.push(d);
  for (const name of ['big-00', `big-${POLICIES - 1}`]) await untilNodeStatus(cluster, SP, name, 'node-a.example.com', (s) => s.phase === 'Active', 60_000);
  assert.equal((await httpGet(`http://127.0.0.1:${d.info.api.port}/readyz`)).status, 200);
  // The old entries are not shown; node-a's status is its own object (a node name with dots makes one name).
  assert.equal(((await cluster.get(SP, 'big-00')).status as { nodes?: unknown } | undefined)?.nodes, undefined);
  assert.deepEqual(await cluster.statusNodes(SP, 'big-00'), ['node-a.example.com']);
  assert.doesNotMatch(d.stderr, /larger than/);
});

test('a node writing to its cold tier: the growing healthy stripe count alone rewrites its ErasureCodingPolicy entry only when it doubles, not after every pass', async () => {
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-w' });
  daemons.push(d);
  const MiB = 1024 * 1024;
  await createVolume(d, 'cv', 64 * MiB, { tier: 'cold' });
  const scraped = async () => {
    const m = await scrape(d);
    return { ok: metric(m, 'couchestor_kube_status_writes_total', { result: 'ok' }) ?? 0, pending: metric(m, 'couchestor_kube_status_writes_pending'), healthy: metric(m, 'couchestor_stripes', { state: 'healthy' }) ?? 0 };
  };
  const settled = (what: string) => until(what, async () => {
    const s = await scraped();
    return s.pending === 0 ? s : undefined;
  });
  /** 2 MiB at `offset` (two 2+1 stripes once destaged), then a pass. */
  const writeAndPass = async (offset: number) => {
    nbdsh(`import os\nh.connect_uri(${JSON.stringify(d.exportUri('cv'))})\nh.pwrite(os.urandom(${2 * MiB}), ${offset})\nh.flush()`);
    const destaged = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/destage`, { method: 'POST' });
    assert.equal(destaged.status, 200, await destaged.text());
    await reconcile(d, false);
  };
  // 20 MiB: ~20 healthy stripes (between 16 and 31), written and settled.
  for (let i = 0; i < 10; i++) await writeAndPass(i * 2 * MiB);
  await untilNodeStatus(cluster, ECP, 'ec21', 'node-w', (s) => (s.stripes?.healthy ?? 0) >= 16);
  const before = await settled('status writes settled');
  // Four more passes, each with two more stripes (still below 32): nothing else changed.
  for (let i = 10; i < 14; i++) await writeAndPass(i * 2 * MiB);
  const after = await settled('status writes settled after the writes');
  assert.ok(after.healthy >= before.healthy + 8 && after.healthy < 31, `stripes grew: ${before.healthy} -> ${after.healthy}`);
  console.log(`status writes for 4 passes, stripes ${before.healthy} -> ${after.healthy}: ${after.ok - before.ok}`);
  assert.equal(after.ok - before.ok, 0, 'a growing healthy count alone writes nothing until it doubles');
  assert.equal((await cluster.nodeStatus(ECP, 'ec21', 'node-w'))?.phase, 'Active');
});
