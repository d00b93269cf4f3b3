// The policies directory as an operator edits it: two files naming the same
// policy, a kind written with quotes, a link left dangling (a ConfigMap mount
// mid-update, a file removed between the listing and the read). Before: the
// second file of a name silently took over the first's status (its decisions
// gone, every volume of the first shown "managed by policy <itself>"), a
// quoted `kind: "StoragePolicy"` was skipped without a word, and one
// unreadable file failed the whole pass (`reconcile` answered 500, no policy
// decided anything). Now each is its own status entry with the reason, and
// the other policies decide as before. So are a misspelt kind (skipped
// without a word) and a misspelt top-level field (`specs:` left a policy of
// defaults that selected every volume).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { PolicyStatus } from '../src/control/loop.js';
import { createVolume, decisionFor, policyNamed, policyYaml, reconcile, sleep, startControlDaemon, WINDOW_SETTLE_MS } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const selectVolume = (v: string) => ({ volumeSelector: { matchLabels: { 'couchestor.io/volume': v } }, dryRun: true });

function fromFile(all: PolicyStatus[], file: string): PolicyStatus {
  const p = all.find((x) => path.basename(x.file) === file);
  if (!p) throw new Error(`no status for ${file}: ${JSON.stringify(all.map((x) => [x.name, x.file]))}`);
  return p;
}

test('duplicate policy names, a quoted kind and a dangling link: each reported on its own, the others still decide', async (t) => {
  const d = await startControlDaemon({
    policies: {
      'a-first.yaml': policyYaml('tiering', selectVolume('good')),
      'b-copy.yaml': policyYaml('tiering', selectVolume('other')),
      'c-quoted.yaml': policyYaml('quoted', selectVolume('third')).replace('kind: StoragePolicy', 'kind: "StoragePolicy" # quoted'),
      // A misspelt kind, and a misspelt `spec:` (which left a policy of defaults, selecting every volume).
      'e-kind-typo.yaml': policyYaml('typo', selectVolume('good')).replace('kind: StoragePolicy', 'kind: StoragePolicyy'),
      'f-specs.yaml': policyYaml('specs', selectVolume('good')).replace(/^spec:/m, 'specs:'),
    },
  });
  t.after(() => d.cleanup());
  fs.symlinkSync(path.join(d.dataDir, 'policies', 'gone.yaml'), path.join(d.dataDir, 'policies', 'd-dangling.yaml'));
  for (const v of ['good', 'other', 'third']) await createVolume(d, v, 4 * MiB);
  await sleep(WINDOW_SETTLE_MS); // idle volumes: a full heat window of 0 IOPS

  const all = await reconcile(d, false);
  // The first file (by name) keeps the policy and its decisions.
  const first = fromFile(all, 'a-first.yaml');
  assert.equal(first.name, 'tiering');
  assert.equal(first.phase, 'DryRun');
  assert.equal(decisionFor(first, 'good').action, 'would-migrate', decisionFor(first, 'good').reason);
  assert.equal(policyNamed(all, 'tiering'), first, 'the first file is the one found by name');
  // The second is an error naming the first, and decides nothing.
  const copy = fromFile(all, 'b-copy.yaml');
  assert.equal(copy.phase, 'Error');
  assert.match(copy.reason ?? '', /metadata\.name tiering is already the name of the StoragePolicy in .*a-first\.yaml/);
  assert.deepEqual(copy.decisions, []);
  // A quoted kind is a StoragePolicy like any other.
  const quoted = policyNamed(all, 'quoted');
  assert.equal(quoted.phase, 'DryRun');
  assert.equal(decisionFor(quoted, 'third').action, 'would-migrate', decisionFor(quoted, 'third').reason);
  // The unreadable file: an error of its own, the pass went on.
  const dangling = fromFile(all, 'd-dangling.yaml');
  assert.equal(dangling.phase, 'Error');
  assert.match(dangling.reason ?? '', /cannot read .*d-dangling\.yaml: ENOENT/);

  // A kind that is neither StoragePolicy nor ErasureCodingPolicy, and an unknown top-level field: errors naming them.
  const kindTypo = fromFile(all, 'e-kind-typo.yaml');
  assert.equal(kindTypo.phase, 'Error');
  assert.match(kindTypo.reason ?? '', /kind StoragePolicyy is neither StoragePolicy nor ErasureCodingPolicy: this file is ignored/);
  const specs = fromFile(all, 'f-specs.yaml');
  assert.equal(specs.phase, 'Error');
  assert.match(specs.reason ?? '', /specs is not a StoragePolicy field \(apiVersion, kind, metadata, spec, status\)/);
  assert.deepEqual(specs.decisions, []);

  // The human-readable status names both entries of the name.
  const text = d.cli('status');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /policy tiering: Error \(metadata\.name tiering is already the name/);

  // Fixed (renamed, link removed): the next pass has three valid policies and no error entries.
  fs.rmSync(path.join(d.dataDir, 'policies', 'd-dangling.yaml'));
  fs.rmSync(path.join(d.dataDir, 'policies', 'e-kind-typo.yaml'));
  fs.rmSync(path.join(d.dataDir, 'policies', 'f-specs.yaml'));
  fs.writeFileSync(path.join(d.dataDir, 'policies', 'b-copy.yaml'), policyYaml('tiering-other', selectVolume('other')));
  const fixed = await reconcile(d, false);
  assert.deepEqual(fixed.map((p) => `${p.name}:${p.phase}`).sort(), ['quoted:DryRun', 'tiering-other:DryRun', 'tiering:DryRun']);
  assert.equal(decisionFor(policyNamed(fixed, 'tiering-other'), 'other').action, 'would-migrate');
});
