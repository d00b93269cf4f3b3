// Review of the node-status objects (af21b1a, 0847b46) against a real apiserver.
//
// A policy deleted and created again under the same name while a daemon's watch was away (its watch expired and
// it listed again, so it saw no DELETED event, only the policy with a new uid): the node's status object must point
// its ownerReference at the new policy. Before, the writer wrote only when the entry changed (or every 5 minutes),
// so the object kept the old uid; on a cluster with a garbage collector (every real one) the object is then deleted
// as the dependent of a policy that is gone, and the node's status of the policy is missing until the refresh.
// The daemon's own StatusWriter against a real apiserver.
//
// The daemon's client keeps at most one idle connection to the apiserver: a burst of requests at start (both
// lists, this node's own status read, a first status write) left every socket it opened connected, idle, for
// good; kube-apiserver-outage "hung apiserver" then counted 4 connections where 2 watches and 1 write are all.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { KubeEnv } from './helpers/kube.js';
import { Cluster, SP, spSpec, startKubeCluster, stopKubeCluster, until } from './helpers/kube-daemon.js';
import { KubeClient } from '../src/control/kube/client.js';
import { StatusWriter } from '../src/control/kube/status.js';

let kube: KubeEnv;
let cluster: Cluster;

before(async () => ({ kube, cluster } = await startKubeCluster()));

after(() => stopKubeCluster(kube, []));

test('the policy re-created (a new uid) with the same entry: the status object is written again with the new owner uid', async () => {
  const client = await KubeClient.load(kube.kubeconfig());
  const writer = new StatusWriter(client, 'node-a', 50);
  try {
    const first = await cluster.create(SP, 'StoragePolicy', 'again', spSpec());
    const uid1 = first.metadata.uid!;
    const entry = { phase: 'Active', observedGeneration: 1, watchedVolumes: 0 };
    const key = JSON.stringify(entry);
    writer.set(SP, 'again', uid1, entry, key);
    const owner = async () => (await cluster.nodeStatusObject(SP, 'again', 'node-a'))?.metadata.ownerReferences?.[0]?.uid;
    assert.equal(await until('the first write', async () => ((await owner()) === uid1 ? uid1 : undefined), 10_000, 50), uid1);

    // Deleted and created again behind the writer's back (the status object stays: this apiserver has no garbage collector).
    await cluster.delete(SP, 'again');
    const second = await cluster.create(SP, 'StoragePolicy', 'again', spSpec());
    const uid2 = second.metadata.uid!;
    assert.notEqual(uid2, uid1);
    // What the next pass after the relist hands the writer: the same entry, the new uid.
    writer.set(SP, 'again', uid2, entry, key);
    await until('the owner uid updated', async () => ((await owner()) === uid2 ? true : undefined), 10_000, 50);
    assert.equal(writer.writes.ok, 2);
  } finally {
    await writer.stop();
    client.close();
  }
});

/** Local ports of this process's established TCP connections to the apiserver (ss). */
function portsToApiserver(): Set<string> {
  const port = new URL(kube.server).port;
  const out = spawnSync('ss', ['-tnpH', 'state', 'established', `dport = :${port}`], { encoding: 'utf8' }).stdout;
  return new Set(out.split('\n').filter((l) => l.includes(`pid=${process.pid},`)).map((l) => l.trim().split(/\s+/)[2]!));
}

test('a burst of concurrent requests leaves at most one idle connection to the apiserver', async () => {
  const before = portsToApiserver();
  const client = await KubeClient.load(kube.kubeconfig());
  try {
    const list = '/apis/storage.billyronks.io/v1/storagepolicies';
    await Promise.all([1, 2, 3, 4].map(() => client.request('GET', list, { timeoutMs: 10_000 })));
    const idle = [...portsToApiserver()].filter((p) => !before.has(p));
    assert.ok(idle.length <= 1, `idle connections after 4 concurrent requests: ${idle.length}`);
    // The one kept is used again: a next request opens none.
    await client.request('GET', list, { timeoutMs: 10_000 });
    assert.ok([...portsToApiserver()].filter((p) => !before.has(p)).length <= 1);
  } finally {
    client.close();
  }
});
