// The Kubernetes fixture (helpers/kube.ts) is a real apiserver: it serves its
// version over TLS trusted from the fixture's CA, accepts a CRD and its
// resources, rejects schema-invalid ones, enforces RBAC, streams watch events,
// and keeps its data in etcd across an apiserver restart. A test process
// killed without running its cleanup leaves neither etcd nor the apiserver
// nor the temp dir behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { VersionApi } from '@kubernetes/client-node';
import YAML from 'yaml';
import { startKube, type KubeEnv } from './helpers/kube.js';

const GROUP = 'fixture.example.com';
const PLURAL = 'widgets';
const WIDGETS = `/apis/${GROUP}/v1/namespaces/default/${PLURAL}`;

let kube: KubeEnv;
before(async () => {
  kube = await startKube({ users: ['nobody'] });
});
after(async () => {
  await kube?.stop();
});

const widget = (name: string, size: unknown) => ({ apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name }, spec: { size } });

test('kube fixture: apiserver answers its pinned version (raw and via kc()); the kubeconfig file carries server, CA and token', async () => {
  const v = await kube.request('GET', '/version');
  assert.equal(v.status, 200);
  assert.equal(v.body.gitVersion, 'v1.37.2');
  // The same through @kubernetes/client-node, verifying the serving cert against caData.
  assert.equal((await kube.kc().makeApiClient(VersionApi).getCode()).gitVersion, 'v1.37.2');

  // What kubectl or client-node would read from kubeconfig(): TLS verified against its CA, the token authenticates.
  const cfg = YAML.parse(fs.readFileSync(kube.kubeconfig('nobody'), 'utf8'));
  const { server, 'certificate-authority-data': ca } = cfg.clusters[0].cluster;
  const token = cfg.users[0].user.token;
  const review = await new Promise<{ status: number; body: any }>((resolve, reject) => { // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON
    const req = https.request(`${server}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
      method: 'POST', ca: Buffer.from(ca, 'base64'), headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }));
  });
  assert.equal(review.status, 201);
  assert.equal(review.body.status.userInfo.username, 'nobody');
  assert.deepEqual(review.body.status.userInfo.groups, ['system:authenticated']);
});

test('kube fixture: CRD and custom resource, schema enforced, RBAC enforced, watch, data survives an apiserver restart', async () => {
  const crd = await kube.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
    body: {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `${PLURAL}.${GROUP}` },
      spec: {
        group: GROUP,
        scope: 'Namespaced',
        names: { plural: PLURAL, singular: 'widget', kind: 'Widget' },
        versions: [{
          name: 'v1', served: true, storage: true,
          schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', required: ['size'], properties: { size: { type: 'integer', minimum: 1 } } } } } },
        }],
      },
    },
  });
  assert.equal(crd.status, 201, JSON.stringify(crd.body));
  await kube.waitCrdEstablished(`${PLURAL}.${GROUP}`);

  // A watch opened before the create sees it as ADDED. The watch cache of a
  // just-established resource answers 429 until it has initialised, as on a
  // real cluster: retry that, on a deadline.
  let resolveAdded!: (name: string) => void;
  const added = new Promise<string>((r) => (resolveAdded = r));
  let watch;
  for (const deadline = Date.now() + 30_000; ;) {
    try {
      watch = await kube.watch(WIDGETS, (type, obj) => {
        if (type === 'ADDED') resolveAdded(obj.metadata.name);
      });
      break;
    } catch (err) {
      assert.ok((err as { status?: number }).status === 429 && Date.now() < deadline, String(err));
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const created = await kube.request('POST', WIDGETS, { body: widget('w1', 3) });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(await added, 'w1');
  watch.close();
  await watch.ended;

  // Schema: size must be an integer >= 1.
  for (const size of ['big', 0]) {
    const bad = await kube.request('POST', WIDGETS, { body: widget('bad', size) });
    assert.equal(bad.status, 422, JSON.stringify(bad.body));
    assert.match(bad.body.message, /spec\.size/);
  }

  // RBAC: an authenticated user, or a fresh ServiceAccount, with no bindings may neither read nor create.
  assert.equal((await kube.request('GET', `${WIDGETS}/w1`, { user: 'nobody' })).status, 403);
  assert.equal((await kube.request('POST', WIDGETS, { user: 'nobody', body: widget('w2', 1) })).status, 403);
  const saToken = await kube.serviceAccountToken('default', 'fixture-sa');
  const asSa = await kube.request('GET', WIDGETS, { token: saToken });
  assert.equal(asSa.status, 403);
  assert.match(asSa.body.message, /system:serviceaccount:default:fixture-sa/);

  // etcd holds the data: the restarted apiserver serves the CRD and the resource.
  await kube.restartApiserver();
  const again = await kube.request('GET', `${WIDGETS}/w1`);
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.spec.size, 3);
});

/** Pids of the processes whose command line names `needle` (read from /proc). */
function pidsNaming(needle: string): number[] {
  const pids: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(needle))) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

test('kube fixture: a test process killed (SIGKILL, or SIGTERM with no handler) leaves no etcd, no apiserver and no temp dir behind', async () => {
  const helper = new URL('./helpers/kube.js', import.meta.url).href;
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    // A test file's process: starts the fixture, says where, then waits to be killed.
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      const { startKube } = await import(${JSON.stringify(helper)});
      const kube = await startKube();
      process.stdout.write(JSON.stringify({ dir: kube.dir }) + '\\n');
      setInterval(() => undefined, 60_000);
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const started = Date.now();
    while (!out.includes('\n')) {
      assert.equal(child.exitCode, null, 'the child exited before the fixture started');
      assert.ok(Date.now() - started < 120_000, 'fixture not started in the child within 120 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    const { dir } = JSON.parse(out) as { dir: string };
    const fixture = () => [...pidsNaming(`--data-dir=${dir}/etcd`), ...pidsNaming(`--cert-dir=${dir}/certs`)];
    try {
      assert.equal(fixture().length, 2, `etcd and kube-apiserver running under ${dir}`);
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
      const deadline = Date.now() + 30_000;
      while (fixture().length > 0 || fs.existsSync(dir)) {
        assert.ok(Date.now() < deadline, `${signal} of the test process: 30 s later still running ${JSON.stringify(fixture())}, temp dir ${fs.existsSync(dir) ? 'still there' : 'gone'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      for (const pid of fixture()) process.kill(pid, 'SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('kube fixture: a port taken between its pick and the bind (another fixture, any client) costs a retry on new ports, not a failed start', async () => {
  // Two ports held by someone else, handed to the first attempt as if freePort() had just picked them.
  const held = await Promise.all([0, 1].map(() => new Promise<net.Server>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const [etcdClient, apiserver] = held.map((s) => (s.address() as net.AddressInfo).port);
  let k: KubeEnv | undefined;
  try {
    k = await startKube({ firstPortsForTest: { etcdClient, apiserver } });
    assert.notEqual(new URL(k.server).port, String(apiserver));
    assert.match(fs.readFileSync(`${k.dir}/etcd.log`, 'utf8'), /address already in use/);
    assert.match(k.apiserverLog(), /address already in use/);
    assert.equal((await k.request('GET', '/version')).body.gitVersion, 'v1.37.2');
  } finally {
    await k?.stop();
    for (const s of held) s.close();
  }
});
