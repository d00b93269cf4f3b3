// A watch that cannot resume: the apiserver restarted over an etcd compacted
// past the daemon's last resourceVersion answers 410 Gone (too old). The
// daemon lists again and what changed meanwhile (a policy deleted, another
// created) comes with that list; the loop follows.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeEnv } from './helpers/kube.js';
import type { TestDaemon } from './helpers/daemon.js';
import { metric, reconcile, scrape } from './helpers/control-loop.js';
import { Cluster, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

/** etcd's JSON gateway (v3): a call on the fixture's etcd. */
async function etcd(path: string, body: unknown): Promise<Record<string, unknown>> {
  // The fixture's own etcd URL: a port picked here could be taken before etcd binds it, and the fixture then starts etcd on another.
  const res = await fetch(`${kube.etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(res.status, 200, `etcd ${path}: ${res.status} ${await res.clone().text()}`);
  return (await res.json()) as Record<string, unknown>;
}

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
});

after(() => stopKubeCluster(kube, daemons));

test('apiserver restarted over a compacted etcd: the watch gets 410 Gone, the daemon lists again, a policy deleted and one created meanwhile are followed', async () => {
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-a' });
  daemons.push(d);
  await cluster.create(SP, 'StoragePolicy', 'sp-old', spSpec());
  await untilNodeStatus(cluster, SP, 'sp-old', 'node-a', (s) => s.phase === 'Active');
  // Revisions past the daemon's last resourceVersion (objects it does not watch), then compacted away.
  for (let i = 0; i < 5; i++) assert.equal((await kube.request('POST', '/api/v1/namespaces/default/configmaps', { body: { metadata: { name: `filler-${i}` }, data: { i: String(i) } } })).status, 201);
  const rev = Number(((await etcd('/v3/kv/range', { key: Buffer.from('/').toString('base64') })).header as { revision: string }).revision);
  await etcd('/v3/kv/compaction', { revision: rev, physical: true });

  await kube.restartApiserver();
  // Changed while the daemon's watch is down or just back: it must see both, whether by the relist or the watch.
  await cluster.delete(SP, 'sp-old');
  await cluster.create(SP, 'StoragePolicy', 'sp-new', spSpec({ dryRun: true }));
  await untilNodeStatus(cluster, SP, 'sp-new', 'node-a', (s) => s.phase === 'DryRun', 30_000);
  const names = (await reconcile(d, true)).map((p) => p.name);
  assert.ok(names.includes('sp-new') && !names.includes('sp-old'), `the loop's policies: ${JSON.stringify(names)}`);
  const expired = await until('a 410 Gone counted', async () => {
    const n = metric(await scrape(d), 'couchestor_kube_watch_restarts_total', { resource: SP, reason: 'expired' }) ?? 0;
    return n >= 1 ? n : undefined;
  }, 20_000, 200);
  assert.ok(expired >= 1);
  assert.doesNotMatch(d.stderr, /"level":"error"/);
});
