// A kubeconfig whose exec plugin prints a bare token instead of an ExecCredential: neither
// path that runs the plugin (the TLS agent, the request headers) may quote what it printed in
// its error, since that error reaches /readyz and the log. The agent's path quoted the first
// characters ("Unexpected token 'e', "eyJhbGciOi"... is not valid JSON"); kube-credentials
// saw it only when /readyz was read while the agent's error was the last one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAccess } from '../src/control/kube/kubeconfig.js';

test('an exec plugin printing a bare token: agent() and headers() fail without quoting it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-kube-exec-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const secret = 'eyJhbGciOiSECRETtoken0123456789';
  fs.writeFileSync(path.join(dir, 'plugin.sh'), `#!/bin/sh\necho ${secret}\n`, { mode: 0o755 });
  fs.writeFileSync(
    path.join(dir, 'kubeconfig'),
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
      `users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ${path.join(dir, 'plugin.sh')}, interactiveMode: Never}}}]`,
      'contexts: [{name: x, context: {cluster: c, user: u}}]',
      'current-context: x',
      '',
    ].join('\n'),
  );
  const access = await loadAccess(path.join(dir, 'kubeconfig'));
  for (const [name, call] of [['agent', () => access.agent()], ['headers', () => access.headers()]] as const) {
    const err = await call().then(
      () => assert.fail(`${name}() succeeded with a plugin that printed no ExecCredential`),
      (e: Error) => e,
    );
    assert.match(err.message, /not an ExecCredential/, `${name}(): ${err.message}`);
    for (const piece of [secret, secret.slice(0, 10), secret.slice(0, 6)]) assert.ok(!err.message.includes(piece), `${name}() quotes the plugin's output: ${err.message}`);
  }
});
