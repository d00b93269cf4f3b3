// Review of the node-status objects (af21b1a, 0847b46) against a real apiserver.
//
// The daemon's client keeps at most one idle connection to the apiserver: a burst of requests at start (both
// lists, this node's own status read, a first status write) left every socket it opened connected, idle, for
// good; kube-apiserver-outage "hung apiserver" then counted 4 connections where 2 watches and 1 write are all.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { KubeEnv } from './helpers/kube.js';
import { startKubeCluster, stopKubeCluster } from './helpers/kube-daemon.js';
import { KubeClient } from '../src/control/kube/client.js';

let kube: KubeEnv;

before(async () => ({ kube } = await startKubeCluster()));

after(() => stopKubeCluster(kube, []));

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
