// Off a pod with kubernetes.nodeName null and no env NODE_NAME, this node's status key is the host name: as the
// kubelet names its Node (lower-cased), and refused at start when it cannot be a Node name. Before, the host name
// was used as is: "Worker-1" wrote status.nodes.Worker-1, no Node has that name (the kubelet's is worker-1), so the
// other nodes' pruner took the live node for departed (GET 404) and removed its entries once older than the bound.
// The host name is set in a UTS namespace of its own (unshare -u, root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const INDEX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../src/control/kube/index.js');

/** KubePolicies.create in a process whose host name is `hostname`: its nodeName, or its error. */
function nodeNameWithHostname(hostname: string): { nodeName?: string; error?: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-kube-hostname-'));
  try {
    const kubeconfig = path.join(dir, 'kubeconfig');
    fs.writeFileSync(kubeconfig, JSON.stringify({ apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:1' } }], users: [{ name: 'u', user: { token: 'x' } }], contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }], 'current-context': 'c' }));
    const script = `
      const { KubePolicies } = await import(${JSON.stringify(INDEX)});
      const cfg = { enabled: true, kubeconfig: ${JSON.stringify(kubeconfig)}, nodeName: null, ecPolicyName: 'standard-ec', statusWriteIntervalMs: 2000, startSyncTimeoutMs: 30000, watchSilenceTimeoutMs: 120000, departedNodeEntryTimeoutMs: 3600000 };
      try { const k = await KubePolicies.create(cfg); console.log(JSON.stringify({ nodeName: k.nodeName })); await k.stop(); }
      catch (err) { console.log(JSON.stringify({ error: err.message })); }`;
    const env = { ...process.env };
    delete env.NODE_NAME;
    delete env.KUBERNETES_SERVICE_HOST;
    const r = spawnSync('unshare', ['-u', 'sh', '-c', 'printf %s "$1" > /proc/sys/kernel/hostname && exec node --input-type=module -e "$2"', 'sh', hostname, script], { env, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { nodeName?: string; error?: string };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const root = process.getuid?.() === 0;

test('the host name as node name: lower-cased as the kubelet does, refused when it cannot be a Node name', { skip: !root && 'unshare -u needs root' }, () => {
  assert.deepEqual(nodeNameWithHostname('Worker-1.Example.com'), { nodeName: 'worker-1.example.com' });
  assert.deepEqual(nodeNameWithHostname('worker-2'), { nodeName: 'worker-2' });
  const bad = nodeNameWithHostname('my_host');
  assert.match(bad.error ?? '', /host name "my_host" is not a Kubernetes node name.*kubernetes\.nodeName.*NODE_NAME/);
});
