// couchestor.yaml's kubernetes section is checked like the rest: a misspelt
// setting or a bad value stops `couchestor serve` with one line naming the
// file, the setting and the value; enabled with no kubeconfig outside a pod
// (the service account it would use is not there), it says so and exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from './helpers/daemon.js';

const CASES: { yaml: string; message: RegExp }[] = [
  { yaml: 'kubernetes: {enabled: yes please}', message: /kubernetes\.enabled must be true or false, got "yes please"$/ },
  { yaml: 'kubernetes: {enabled: true, kubeConfig: /x}', message: /: kubernetes\.kubeConfig is not a setting \(known: enabled, kubeconfig, nodeName, ecPolicyName, statusWriteIntervalMs, startSyncTimeoutMs, watchSilenceTimeoutMs, departedNodeEntryTimeoutMs\)$/ },
  { yaml: 'kubernetes: {nodeName: Node_A}', message: /kubernetes\.nodeName must be a Kubernetes node name \(an RFC 1123 DNS subdomain: at most 253 characters, lowercase letters, digits, '-' and '\.', each '\.'-separated part starting and ending with a letter or digit\), got "Node_A"$/ },
  // Names the old check took and the apiserver refuses (422 on every status write): an empty part, a part starting
  // or ending with '-'.
  { yaml: 'kubernetes: {nodeName: a..b}', message: /kubernetes\.nodeName must be a Kubernetes node name \(an RFC 1123 DNS subdomain: .*\), got "a\.\.b"$/ },
  { yaml: 'kubernetes: {nodeName: a.-b}', message: /kubernetes\.nodeName must be a Kubernetes node name \(an RFC 1123 DNS subdomain: .*\), got "a\.-b"$/ },
  { yaml: 'kubernetes: {nodeName: worker-.example}', message: /kubernetes\.nodeName must be a Kubernetes node name \(an RFC 1123 DNS subdomain: .*\), got "worker-\.example"$/ },
  { yaml: 'kubernetes: {ecPolicyName: ""}', message: /kubernetes\.ecPolicyName must be a non-empty string, got ""$/ },
  { yaml: 'kubernetes: {statusWriteIntervalMs: 0}', message: /kubernetes\.statusWriteIntervalMs must be a whole number of milliseconds from 100 to 2147483647, got 0$/ },
  { yaml: 'kubernetes: {startSyncTimeoutMs: 1h}', message: /kubernetes\.startSyncTimeoutMs must be a whole number of milliseconds from 100 to 600000, got "1h"$/ },
  { yaml: 'kubernetes: {watchSilenceTimeoutMs: 1000}', message: /kubernetes\.watchSilenceTimeoutMs must be a whole number of milliseconds from 4000 to 3600000, got 1000$/ },
  { yaml: 'kubernetes: {watchSilenceTimeoutMs: 2m}', message: /kubernetes\.watchSilenceTimeoutMs must be a whole number of milliseconds from 4000 to 3600000, got "2m"$/ },
  { yaml: 'kubernetes: {departedNodeEntryTimeoutMs: 500}', message: /kubernetes\.departedNodeEntryTimeoutMs must be a whole number of milliseconds from 1000 to 2678400000, got 500$/ },
  { yaml: 'kubernetes: {departedNodeEntryTimeoutMs: 1h}', message: /kubernetes\.departedNodeEntryTimeoutMs must be a whole number of milliseconds from 1000 to 2678400000, got "1h"$/ },
  { yaml: 'kubernetes: true', message: /: kubernetes must be a mapping, got true$/ },
];

function serve(dir: string, env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dir, '--nbd-port', '0', '--api-port', '0', '--s3-port', '0', '--metrics-port', '0'], { encoding: 'utf8', timeout: 30_000, env });
}

test('serve refuses a bad kubernetes section with one line naming the file, the setting and the value', (t) => {
  for (const c of CASES) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-config-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'couchestor.yaml');
    fs.writeFileSync(file, c.yaml + '\n');
    const r = serve(dir);
    assert.equal(r.status, 1, `${c.yaml}: exit ${r.status}, stderr ${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${c.yaml}: one line:\n${r.stderr}`);
    assert.ok(lines[0]!.startsWith(`couchestor: ${file}: `), lines[0]);
    assert.match(lines[0]!, c.message, c.yaml);
  }
});

test('enabled with kubeconfig null outside a pod (or in one with no node name): serve says why and exits', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-config-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'couchestor.yaml'), 'demoVolume: null\nkubernetes: {enabled: true}\n');
  const env = { ...process.env };
  delete env.KUBERNETES_SERVICE_HOST;
  delete env.NODE_NAME;
  const r = serve(dir, env);
  assert.equal(r.status, 1, r.stderr);
  assert.doesNotMatch(r.stdout, /couchestor ready/);
  assert.match(r.stderr, /kubernetes\.kubeconfig is null \(the pod's service account\) but KUBERNETES_SERVICE_HOST is not set: not in a pod; name a kubeconfig file/);
  // In a pod (KUBERNETES_SERVICE_HOST set) with no node name: the host name would be the pod's, a new status key per pod.
  const r1 = serve(dir, { ...env, KUBERNETES_SERVICE_HOST: '127.0.0.1' });
  assert.equal(r1.status, 1, r1.stderr);
  assert.doesNotMatch(r1.stdout, /couchestor ready/);
  assert.match(r1.stderr, /kubernetes\.nodeName is null and env NODE_NAME is not set: in a pod the host name is the pod's name/);
  const r1b = serve(dir, { ...env, KUBERNETES_SERVICE_HOST: '127.0.0.1', NODE_NAME: 'Node_A' });
  assert.equal(r1b.status, 1, r1b.stderr);
  assert.match(r1b.stderr, /env NODE_NAME must be a Kubernetes node name \(an RFC 1123 DNS subdomain: .*\), got "Node_A"/);
  // One the old check took, refused by the apiserver.
  const r1c = serve(dir, { ...env, KUBERNETES_SERVICE_HOST: '127.0.0.1', NODE_NAME: 'a..b' });
  assert.equal(r1c.status, 1, r1c.stderr);
  assert.doesNotMatch(r1c.stdout, /couchestor ready/);
  assert.match(r1c.stderr, /env NODE_NAME must be a Kubernetes node name \(an RFC 1123 DNS subdomain: .*\), got "a\.\.b"/);
  // Nor a kubeconfig that is not there.
  fs.writeFileSync(path.join(dir, 'couchestor.yaml'), 'demoVolume: null\nkubernetes: {enabled: true, kubeconfig: /nonexistent/kubeconfig}\n');
  const r2 = serve(dir, env);
  assert.equal(r2.status, 1, r2.stderr);
  assert.match(r2.stderr, /kubeconfig \/nonexistent\/kubeconfig: ENOENT/);
});

test('a kubeconfig that is not valid YAML: serve names the file and the line, never the text around it (a token)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-config-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = path.join(dir, 'kubeconfig');
  const token = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXRleHQ';
  fs.writeFileSync(kubeconfig, ['apiVersion: v1', 'kind: Config', 'users:', '- name: u', `  user: {token: ${token}, x: [}`, ''].join('\n'));
  fs.writeFileSync(path.join(dir, 'couchestor.yaml'), `demoVolume: null\nkubernetes: {enabled: true, kubeconfig: ${kubeconfig}}\n`);
  const r = serve(dir);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`kubeconfig ${kubeconfig}: not valid YAML \\(line 5, column \\d+\\)`));
  assert.ok(!r.stderr.includes(token.slice(0, 12)) && !r.stdout.includes(token.slice(0, 12)), `the token printed:\n${r.stderr}`);
});
