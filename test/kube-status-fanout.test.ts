// Each node's status of a policy is an object of its own (StoragePolicyNodeStatus, src/control/kube/status.ts),
// so a node's write does not touch the policy: its resourceVersion stays, and the policy watch every daemon
// holds gets nothing. Before, every node merge-patched status.nodes.<node> into the policy itself, and each
// write went to every node's watch, whole (O(N^2) a write interval). Several simulated nodes (the daemon's own
// StatusWriter, each with its own client and node name) and one real daemon against one real apiserver; a
// simulated node with no Node object whose last report is old is removed by the daemon's pruner.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeEnv } from './helpers/kube.js';
import type { TestDaemon } from './helpers/daemon.js';
import { reconcile } from './helpers/control-loop.js';
import { Cluster, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';
import { KubeClient } from '../src/control/kube/client.js';
import { StatusWriter } from '../src/control/kube/status.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];
const SIMULATED = 5;

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
});

after(() => stopKubeCluster(kube, daemons));

test(`${SIMULATED} simulated nodes and a daemon write their status: the policy's resourceVersion stays and its watch gets no event; a departed node's object is pruned`, async () => {
  const policy = await cluster.create(SP, 'StoragePolicy', 'fan', spSpec());
  const rv = (policy.metadata as { resourceVersion: string }).resourceVersion;
  // A watcher of the policies, as every daemon is, from the policy's creation on.
  const events: string[] = [];
  const watch = await kube.watch(`/apis/storage.billyronks.io/v1/${SP}?resourceVersion=${rv}&allowWatchBookmarks=false`, (type, obj) => events.push(`${type} ${obj?.metadata?.name}`));
  const clients: KubeClient[] = [];
  const writers: StatusWriter[] = [];
  try {
    // sim-gone: no Node object, last report long ago (a node drained and deleted): the daemon prunes it.
    await cluster.writeNodeStatus(SP, 'fan', 'sim-gone', { phase: 'Active', lastReconcileTime: '2020-01-01T00:00:00Z' }, '2020-01-01T00:00:00Z');
    const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(), nodeName: 'node-a', departedNodeEntryTimeoutMs: 1_000 });
    daemons.push(d);
    for (let i = 0; i < SIMULATED; i++) {
      const client = await KubeClient.load(kube.kubeconfig());
      clients.push(client);
      writers.push(new StatusWriter(client, `sim-${i}`, 50));
    }
    // Three rounds of writes from every simulated node (each a change: a write each), and passes of the daemon.
    for (let round = 0; round < 3; round++) {
      for (const w of writers) {
        const entry = { phase: 'Active', observedGeneration: 1, watchedVolumes: round, lastReconcileTime: new Date().toISOString() };
        w.set(SP, 'fan', (policy.metadata as { uid: string }).uid, entry, JSON.stringify({ ...entry, lastReconcileTime: undefined }));
      }
      await reconcile(d, false);
      await until(`round ${round} written`, async () => {
        const all = await Promise.all(writers.map((w, i) => cluster.nodeStatus(SP, 'fan', `sim-${i}`)));
        return all.every((s) => s?.watchedVolumes === round) ? true : undefined;
      });
    }
    await untilNodeStatus(cluster, SP, 'fan', 'node-a', (s) => s.phase === 'Active');
    // The apiserver applied the last writes before their answers reached the writers: counted once answered.
    await until('the writers settled', () => (writers.every((w) => w.pending() === 0) ? true : undefined), 10_000, 20);
    assert.deepEqual(writers.map((w) => w.writes.ok), Array(SIMULATED).fill(3));
    await until('sim-gone pruned', async () => ((await cluster.statusNodes(SP, 'fan')).includes('sim-gone') ? undefined : true), 10_000);
    assert.deepEqual(await cluster.statusNodes(SP, 'fan'), ['node-a', ...writers.map((_, i) => `sim-${i}`)]);

    // 15 node-status writes and a prune later: the policy object is as it was created.
    const now = await cluster.get(SP, 'fan');
    assert.equal((now.metadata as { resourceVersion: string }).resourceVersion, rv);
    assert.deepEqual(now.status ?? {}, {});
    // A spec change is the watch's first event since: nothing was sent before it (the watch is in order).
    await cluster.patchSpec(SP, 'fan', { dryRun: true });
    await until('the spec change watched', () => (events.length > 0 ? true : undefined), 10_000, 50);
    assert.deepEqual(events, ['MODIFIED fan']);
    await d.stop();
  } finally {
    for (const w of writers) await w.stop();
    for (const c of clients) c.close();
    watch.close();
  }
});
