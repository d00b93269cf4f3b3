// The daemon on Kubernetes at cluster scale: every StoragePolicy carries
// every node's status entry, so on a big cluster each object nears etcd's
// ~1.5 MiB bound. Listed in pages, the daemon syncs however many there are
// (an unpaged list of ~33 MiB was refused on every try: never synced,
// /readyz 503 for good), and it keeps only its own entry of each status.
// Every status write goes to every node's watch, whole: a node writing to its
// cold tier does not rewrite its ErasureCodingPolicy entry after every pass.
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
