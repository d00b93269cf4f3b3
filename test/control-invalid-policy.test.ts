// Invalid StoragePolicies: each one shows phase Error with the reason, in
// status and in the CLI's table, while a valid policy in the same directory
// keeps working; fixing a file makes it valid on the next pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decisionFor, fioFill, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, volume, WINDOW_SETTLE_MS, writePolicy, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const selectVolume = (v: string) => ({ volumeSelector: { matchLabels: { 'couchestor.io/volume': v } } });

const INVALID: { file: string; name: string; spec: Record<string, unknown>; reason: RegExp }[] = [
  { file: 'a-low-high.yaml', name: 'low-not-below-high', spec: { lowWatermarkIOPS: 300, highWatermarkIOPS: 300 }, reason: /lowWatermarkIOPS \(300\) must be below highWatermarkIOPS \(300\)/ },
  { file: 'b-duration.yaml', name: 'bad-duration', spec: { samplingWindow: '5 minutes' }, reason: /spec\.samplingWindow: .*"5 minutes"/ },
  { file: 'c-no-pool.yaml', name: 'no-pool', spec: { coldPoolSelector: { matchLabels: { tier: 'glacier' } } }, reason: /spec\.coldPoolSelector \{"tier":"glacier"\} matches no pool/ },
  { file: 'd-ec.yaml', name: 'unknown-ec', spec: { ecPolicyRef: 'no-such-ec' }, reason: /spec\.ecPolicyRef: no ErasureCodingPolicy named no-such-ec \(have: standard-ec\)/ },
  { file: 'e-field.yaml', name: 'unknown-field', spec: { replicas: 3 }, reason: /spec\.replicas is not a StoragePolicy field/ },
];

test('invalid policies: phase Error with the reason; a valid neighbour keeps migrating', async (t) => {
  const policies: Record<string, string> = { 'z-valid.yaml': policyYaml('valid', selectVolume('good')) };
  // Every invalid policy would also claim `good` if it were read as valid.
  for (const i of INVALID) policies[i.file] = policyYaml(i.name, { ...selectVolume('good'), ...i.spec });
  const d = await startControlDaemon({ policies });
  t.after(() => d.cleanup());
  await createVolume(d, 'good', 8 * MiB);
  fioFill(d.exportUri('good'), 8 * MiB);
  await sleep(WINDOW_SETTLE_MS);

  const all = await reconcile(d, true);
  for (const i of INVALID) {
    const p = policyNamed(all, i.name);
    assert.equal(p.phase, 'Error', i.name);
    assert.match(p.reason ?? '', i.reason);
    const valid = p.conditions.find((c) => c.type === 'Valid');
    assert.equal(valid?.status, 'False');
    assert.match(valid!.message, i.reason);
    assert.deepEqual(p.decisions, [], `${i.name} makes no decisions`);
  }
  const v = policyNamed(all, 'valid');
  assert.equal(v.phase, 'Active');
  const dec = decisionFor(v, 'good');
  assert.equal(dec.action, 'migrate', dec.reason);
  assert.deepEqual(v.migrationHistory.map((h) => `${h.volume}:${h.from}->${h.to}:${h.result}`), ['good:hot->cold:succeeded']);
  assert.equal((await volume(d, 'good')).tier, 'cold');

  // The human-readable status names each broken policy and why.
  const text = d.cli('status');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /policy low-not-below-high: Error \(lowWatermarkIOPS \(300\) must be below/);
  assert.match(text.stdout, /policy unknown-field: Error \(spec\.replicas is not a StoragePolicy field\)/);

  // Policies are re-read every pass: a fixed file turns valid.
  writePolicy(d, 'a-low-high.yaml', policyYaml('low-not-below-high', { ...selectVolume('nothing-here'), lowWatermarkIOPS: 10 }));
  const fixed = policyNamed(await reconcile(d, false), 'low-not-below-high');
  assert.equal(fixed.phase, 'Active');
  assert.equal(fixed.reason, undefined);
  assert.equal(fixed.conditions.find((c) => c.type === 'Valid')?.status, 'True');
});
