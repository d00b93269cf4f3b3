// StoragePolicy fields the schema let through although the policy could not
// mean them, each now phase Error with a reason naming the field (real
// daemon, status over the admin API and the CLI's table):
// - samplingWindow: 0s (or below a second): heat is averaged between two
//   samples, so no reading ever came and every volume stayed "no-data";
// - a selector with matchExpressions (or a misspelt key) beside matchLabels:
//   the rest was ignored, so the policy matched more volumes than it said;
// - a malformed duration's reason said "invalid ErasureCodingPolicy" (the
//   duration parser's kind), in a StoragePolicy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { policyNamed, policyYaml, reconcile, startControlDaemon } from './helpers/control-loop.js';

const CASES: { name: string; spec: Record<string, unknown>; reason: RegExp }[] = [
  { name: 'zero-window', spec: { samplingWindow: '0s' }, reason: /^spec\.samplingWindow must be at least 1s, got "0s"$/ },
  { name: 'tiny-window', spec: { samplingWindow: '500ms' }, reason: /^spec\.samplingWindow must be at least 1s, got "500ms"$/ },
  {
    name: 'expressions',
    spec: { volumeSelector: { matchLabels: { app: 'db' }, matchExpressions: [{ key: 'env', operator: 'In', values: ['prod'] }] } },
    reason: /^spec\.volumeSelector\.matchExpressions is not supported: a selector here has matchLabels only$/,
  },
  { name: 'misspelt-selector', spec: { coldPoolSelector: { matchLabel: { tier: 'cold' } } }, reason: /^spec\.coldPoolSelector\.matchLabel is not supported/ },
  { name: 'bad-cooldown', spec: { cooldownPeriod: '-1h' }, reason: /^spec\.cooldownPeriod: expected a duration like "24h", "30m" or "90s" \(units ms, s, m, h, d\), got "-1h"$/ },
];

test('a zero sampling window, matchExpressions and a bad duration: phase Error naming the field', async (t) => {
  const policies: Record<string, string> = {};
  for (const c of CASES) policies[`${c.name}.yaml`] = policyYaml(c.name, c.spec);
  policies['valid.yaml'] = policyYaml('valid', { samplingWindow: '1s', dryRun: true });
  const d = await startControlDaemon({ policies });
  t.after(() => d.cleanup());
  const all = await reconcile(d, false);
  for (const c of CASES) {
    const p = policyNamed(all, c.name);
    assert.equal(p.phase, 'Error', `${c.name}: ${p.reason}`);
    assert.match(p.reason ?? '', c.reason, c.name);
    assert.doesNotMatch(p.reason ?? '', /ErasureCodingPolicy/);
  }
  assert.equal(policyNamed(all, 'valid').phase, 'DryRun');
  const text = d.cli('status');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /policy zero-window: Error \(spec\.samplingWindow must be at least 1s/);
});
