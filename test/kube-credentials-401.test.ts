// A 401 from the apiserver re-reads the credentials at once (src/control/kube/client.ts):
// a token file replaced and the old token revoked (a projected service-account token the
// kubelet rotated, an exec plugin's token that expired early) costs one refused request,
// not the library's 60 s re-read period plus backoff; a token that stays bad is retried
// once per try and the tries back off (never a loop of requests).
//
// A watch refused with 401 re-reads the credentials (src/control/kube/client.ts), as a request does.
// A watch is reopened every minute or so; once the token it was opened with is revoked (a rotated
// token file, an exec plugin's token that expired early) the reopen is a 401. Before, only
// request() re-read on a 401: the informers retried the watch with the library's cached token
// (a token file re-read every 60 s, an exec token until its stated expiry, up to hours) and,
// on a quiet node (no status write due for 5 min), saw no policy change meanwhile.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeEnv } from './helpers/kube.js';
import { access, bindDeployClusterRole } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { Cluster, kubeconfigWithUser, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];
const dirs: string[] = [];

before(async () => {
  ({ kube, cluster } = await startKubeCluster());
  const { role, binding } = await bindDeployClusterRole(access(kube), 'couchestor-service-accounts', { kind: 'Group', name: 'system:serviceaccounts' });
  assert.equal(role.status, 201);
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
});

after(async () => {
  await stopKubeCluster(kube, daemons);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function reloads(d: TestDaemon): Promise<{ ok: number; failed: number }> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  const n = (result: string) => Number(new RegExp(`^couchestor_kube_credential_reloads_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { ok: n('ok'), failed: n('failed') };
}

test('the token file replaced and the old token revoked: the first 401 re-reads it and the write goes through within seconds', async () => {
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-401-');
  dirs.push(dir);
  const tokenFile = path.join(dir, 'token');
  const t1 = await kube.serviceAccountToken('default', 'r401-1');
  fs.writeFileSync(tokenFile, t1);
  const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'rotating', { tokenFile }), nodeName: 'node-401' });
  daemons.push(d);
  await cluster.create(SP, 'StoragePolicy', 'r401-a', spSpec());
  await untilNodeStatus(cluster, SP, 'r401-a', 'node-401', (s) => s.phase === 'Active');
  assert.deepEqual(await reloads(d), { ok: 0, failed: 0 });

  const t2 = await kube.serviceAccountToken('default', 'r401-2');
  fs.writeFileSync(`${tokenFile}.new`, t2);
  fs.renameSync(`${tokenFile}.new`, tokenFile);
  const t1Sa = await kube.request('DELETE', '/api/v1/namespaces/default/serviceaccounts/r401-1');
  assert.equal(t1Sa.status, 200);
  await until('the old token refused', async () => ((await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`, { token: t1 })).status === 401 ? true : undefined), 30_000, 100);

  // The daemon's watch (opened with the old token) sees the new policy; its status write gets a 401, re-reads
  // the token file and goes through: seconds, where the library re-reads the file only every 60 s.
  const t0 = Date.now();
  await cluster.create(SP, 'StoragePolicy', 'r401-b', spSpec({ dryRun: true }));
  const s = await untilNodeStatus(cluster, SP, 'r401-b', 'node-401', (x) => x.phase === 'DryRun', 8_000);
  assert.equal(s.observedGeneration, 1);
  assert.ok(Date.now() - t0 < 8_000);
  const r = await reloads(d);
  assert.ok(r.ok >= 1, `credential re-reads ${JSON.stringify(r)}`);
  for (const t of [t1, t2]) assert.ok(!d.stderr.includes(t), 'no token in the daemon log');
  await d.stop();
});

test('a token that stays bad: each try is retried once after a re-read, and the tries back off', async () => {
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-401-');
  dirs.push(dir);
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, 'not-a-token-the-apiserver-knows');
  const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'bad', { tokenFile }), nodeName: 'node-bad', startSyncTimeoutMs: 1_000 });
  daemons.push(d);
  const t0 = Date.now();
  const first = await until('a re-read after a 401', async () => ((await reloads(d)).ok >= 1 ? true : undefined), 10_000, 100);
  assert.ok(first);
  // 6 s of two informers retrying with a doubling backoff (0.25 s up): ~5 tries each. Without a backoff, or with a
  // retry loop on 401, thousands.
  await new Promise((res) => setTimeout(res, Math.max(0, 6_000 - (Date.now() - t0))));
  const r = await reloads(d);
  const secs = (Date.now() - t0) / 1000;
  assert.ok(r.ok >= 2 && r.ok <= 30, `credential re-reads in ${secs.toFixed(1)} s: ${JSON.stringify(r)}`);
  assert.match(d.stderr.replace(/^\S+Z /gm, ''), /\b401\b/, 'a 401 logged (timestamps left out: ".401Z" is not one)');
  const ready = await fetch(`http://127.0.0.1:${d.info.api.port}/readyz`);
  assert.equal(ready.status, 503);
  await d.stop();
});

test('a watch reopened after its token was revoked gets a 401, re-reads the token file and sees the next policy within seconds', async () => {
  const dir = fs.mkdtempSync('/tmp/couchestor-kube-w401-');
  dirs.push(dir);
  const tokenFile = path.join(dir, 'token');
  const t1 = await kube.serviceAccountToken('default', 'w401-1');
  fs.writeFileSync(tokenFile, t1);
  await cluster.create(SP, 'StoragePolicy', 'w401-a', spSpec());
  // Watches of 2-3 s: reopened often, so the revoked token is refused within seconds.
  const d = await startKubeDaemon({ kubeconfig: kubeconfigWithUser(kube, dir, 'rotating', { tokenFile }), nodeName: 'node-w401', watchSilenceTimeoutMs: 4_000 });
  daemons.push(d);
  await untilNodeStatus(cluster, SP, 'w401-a', 'node-w401', (s) => s.phase === 'Active');

  const t2 = await kube.serviceAccountToken('default', 'w401-2');
  fs.writeFileSync(`${tokenFile}.new`, t2);
  fs.renameSync(`${tokenFile}.new`, tokenFile);
  assert.equal((await kube.request('DELETE', '/api/v1/namespaces/default/serviceaccounts/w401-1')).status, 200);
  await until('the old token refused', async () => ((await kube.request('GET', `/apis/storage.billyronks.io/v1/${SP}`, { token: t1 })).status === 401 ? true : undefined), 30_000, 100);

  // Nothing else asks the apiserver now (the status is written; the next refresh is minutes away): only the
  // watches' reopens meet the 401, and they must re-read the token themselves.
  await until('a credentials re-read after a watch 401', async () => ((await reloads(d)).ok >= 1 ? true : undefined), 10_000, 100);
  const t0 = Date.now();
  await cluster.create(SP, 'StoragePolicy', 'w401-b', spSpec({ dryRun: true }));
  await untilNodeStatus(cluster, SP, 'w401-b', 'node-w401', (x) => x.phase === 'DryRun', 8_000);
  assert.ok(Date.now() - t0 < 8_000);
  for (const t of [t1, t2]) assert.ok(!d.stderr.includes(t), 'no token in the daemon log');
  await d.stop();
});
