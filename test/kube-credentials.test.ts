// The daemon's credentials on Kubernetes: a token file that rotates (a
// projected service-account token is replaced about hourly, the old one
// revoked) is read again, so the daemon carries on with the new token; an
// exec plugin (every EKS, GKE and AKS kubeconfig) gives the token; no token
// is ever printed, not even one a broken plugin prints.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeEnv } from './helpers/kube.js';
import { access, bindDeployClusterRole } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, httpGet, kubeconfigWithUser, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
  // Every service account may do what deploy/rbac.yaml's ClusterRole allows.
  const { role, binding } = await bindDeployClusterRole(access(kube), 'couchestor-service-accounts', { kind: 'Group', name: 'system:serviceaccounts' });
  assert.equal(role.status, 201);
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
});

after(() => stopKubeCluster(kube, daemons));

test('the token file is replaced and the old token revoked: the daemon reads the new one and carries on (status written with it), printing neither', async () => {
  const tokenDir = fs.mkdtempSync('/tmp/couchestor-kube-token-');
  const tokenFile = path.join(tokenDir, 'token');
  try {
    const t1 = await kube.serviceAccountToken('default', 'rot-1');
    // With a newline at its end, as an editor or `echo` writes it: not part of the header.
    fs.writeFileSync(tokenFile, `${t1}\n`);
    const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, tokenDir, 'rotating', { tokenFile }), nodeName: 'node-r' });
    daemons.push(d);
    await cluster.create(SP, 'StoragePolicy', 'rot-a', spSpec());
    await untilNodeStatus(cluster, SP, 'rot-a', 'node-r', (s) => s.phase === 'Active');

    // Rotation as the kubelet does it: the new token in place (rename), then the old one stops working.
    const t2 = await kube.serviceAccountToken('default', 'rot-2');
    fs.writeFileSync(`${tokenFile}.new`, t2);
    fs.renameSync(`${tokenFile}.new`, tokenFile);
    assert.equal((await kube.request('DELETE', '/api/v1/namespaces/default/serviceaccounts/rot-1')).status, 200);
    await until('the old token refused', async () => ((await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`, { token: t1 })).status === 401 ? true : undefined), 30_000, 250);

    // A policy made after: the daemon sees it and writes its status, which needs a token that works.
    // The token file is read again at most every 60 s, and a failed write backs off up to 60 s.
    await cluster.create(SP, 'StoragePolicy', 'rot-b', spSpec({ dryRun: true }));
    const s = await untilNodeStatus(cluster, SP, 'rot-b', 'node-r', (x) => x.phase === 'DryRun', 180_000);
    assert.equal(s.observedGeneration, 1);
    assert.equal((await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`, { token: t2 })).status, 200, 'the new token works');
    for (const t of [t1, t2]) assert.ok(!d.stderr.includes(t), 'no token in the daemon log');
  } finally {
    fs.rmSync(tokenDir, { recursive: true, force: true });
  }
});

test('a kubeconfig user with an exec plugin (as EKS, GKE, AKS write them): the daemon runs it for its token; a plugin printing a bare token gets an error that does not show it', async () => {
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-exec-');
  try {
    const token = await kube.serviceAccountToken('default', 'exec-1');
    const plugin = path.join(dir, 'plugin.mjs');
    fs.writeFileSync(plugin, `process.stdout.write(JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1beta1', kind: 'ExecCredential', status: { token: ${JSON.stringify(token)} } }));\n`);
    const exec = { apiVersion: 'client.authentication.k8s.io/v1beta1', command: process.execPath, args: [plugin], interactiveMode: 'Never' };
    const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'exec', { exec }), nodeName: 'node-e' });
    daemons.push(d);
    await cluster.create(SP, 'StoragePolicy', 'exec-a', spSpec());
    await untilNodeStatus(cluster, SP, 'exec-a', 'node-e', (s) => s.phase === 'Active');
    assert.ok(!d.stderr.includes(token), 'no token in the daemon log');
    await d.stop();

    // A plugin that prints the token itself, not an ExecCredential: the daemon says so without printing it.
    const bare = path.join(dir, 'bare.mjs');
    fs.writeFileSync(bare, `process.stdout.write(${JSON.stringify(token)});\n`);
    const d2 = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'bare', { exec: { ...exec, args: [bare] } }), nodeName: 'node-f', startSyncTimeoutMs: 2_000 });
    daemons.push(d2);
    await until('the plugin failure logged', () => (/not an ExecCredential/.test(d2.stderr) ? true : undefined), 20_000);
    const ready = await httpGet(`http://127.0.0.1:${d2.info.api.port}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(ready.body, /not an ExecCredential/);
    for (const text of [d2.stderr, ready.body]) assert.ok(!text.includes(token.slice(0, 20)), `the token printed: ${text.slice(0, 2000)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
