// deploy/ on a real kube-apiserver (test/helpers/kube.ts, one for the file):
// the CRDs are accepted and Established; the example CRs are accepted and
// pass our own parsers, with the apiserver's defaults equal to the parsers';
// every spec the parsers refuse the apiserver refuses too (422 naming the
// field), and the edge values both accept; status is an object per policy
// and node (StoragePolicyNodeStatus, ErasureCodingPolicyNodeStatus), the
// policy itself untouched by it and an old status.nodes dropped; the
// ClusterRole lets the daemon read policies and write its status objects, not
// specs; the
// DaemonSet, ServiceAccount, Namespace, ConfigMap and NetworkPolicy pass a
// server-side dry run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { startKube, type KubeEnv } from './helpers/kube.js';
import {
  access,
  applyCrds,
  collectionPath,
  createObject,
  DEPLOY_DIR,
  ECP_PATH,
  GROUP,
  kubeRequest,
  loadManifests,
  SP_PATH,
  type KubeAccess,
  type KubeObject,
  type KubeResponse,
} from './helpers/kube-manifests.js';
import { checkAgainst, parseStoragePolicy } from '../src/control/policy.js';
import { nodeStatusName } from '../src/control/kube/status.js';
import { InvalidPolicy, parsePolicyYaml, validatePolicy, type ErasureCodingPolicySpec } from '../src/dataplane/ec/policy.js';
import { loadConfig, type DaemonConfig } from '../src/config.js';

let kube: KubeEnv;
let admin: KubeAccess;

before(async () => {
  kube = await startKube();
  admin = access(kube);
  await applyCrds(admin);
});

after(async () => {
  await kube?.stop();
});

/** The fixture's unprivileged user (no bindings of its own). */
const UNPRIVILEGED = 'user';

/** Enough cold pools that k+m never limits a spec the table means to test otherwise. */
const MANY_COLD_POOLS = 20;

const apiVersion = `${GROUP}/v1`;
const sp = (name: string, spec: Record<string, unknown>): KubeObject => ({ apiVersion, kind: 'StoragePolicy', metadata: { name }, spec });
const ecp = (name: string, spec: Record<string, unknown>): KubeObject => ({ apiVersion, kind: 'ErasureCodingPolicy', metadata: { name }, spec });

const SP_MINIMAL = {
  highWatermarkIOPS: 100,
  lowWatermarkIOPS: 10,
  hotPoolSelector: { matchLabels: { tier: 'hot' } },
  coldPoolSelector: { matchLabels: { tier: 'cold' } },
};
const ECP_MINIMAL = { dataShards: 4, parityShards: 2 };

/** Our parser on the object as the daemon gets it (a YAML document of the resource). */
function parseSp(obj: KubeObject) {
  return parseStoragePolicy(YAML.stringify(obj));
}
function parseEcp(obj: KubeObject) {
  return parsePolicyYaml(YAML.stringify(obj), MANY_COLD_POOLS);
}

let seq = 0;
const uniq = (base: string) => `${base}-${++seq}`;

test('the CRDs of deploy/crds are accepted, Established, cluster-scoped: sp / ecp with a status subresource, spns / ecpns', async () => {
  // before() applied them (applyCrds waits for Established); discovery says what they serve
  // (updated a moment after Established, by its own controller: polled).
  let res: KubeResponse | undefined;
  await pollUntil(async () => {
    res = await kubeRequest(admin, 'GET', `/apis/${GROUP}/v1`);
    return res.status === 200 && res.body.resources?.length === 6;
  }, 'discovery lists the four kinds and the policies\' status');
  const byName = new Map<string, { namespaced: boolean; shortNames?: string[]; categories?: string[]; kind: string }>(
    res!.body.resources.map((r: { name: string }) => [r.name, r]),
  );
  // The policies keep their status subresource; the per-node status objects have none (the
  // daemon writes each whole).
  for (const [plural, kind, short, status] of [
    ['storagepolicies', 'StoragePolicy', 'sp', true],
    ['erasurecodingpolicies', 'ErasureCodingPolicy', 'ecp', true],
    ['storagepolicynodestatuses', 'StoragePolicyNodeStatus', 'spns', false],
    ['erasurecodingpolicynodestatuses', 'ErasureCodingPolicyNodeStatus', 'ecpns', false],
  ] as const) {
    const r = byName.get(plural);
    assert.ok(r, `${plural} served`);
    assert.equal(r.kind, kind);
    assert.equal(r.namespaced, false, `${plural} is cluster-scoped`);
    assert.deepEqual(r.shortNames, [short]);
    assert.deepEqual(r.categories, ['couchestor']);
    assert.equal(byName.has(`${plural}/status`), status, `${plural}/status subresource: ${status ? 'served' : 'none (the daemon writes the object whole)'}`);
  }
});

test('every example CR is accepted (strict field validation) and its spec passes our parser', async () => {
  const dir = path.join(DEPLOY_DIR, 'examples');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  const kinds = new Set<string>();
  for (const f of files) {
    for (const obj of loadManifests(path.join(dir, f))) {
      kinds.add(obj.kind);
      const parsedFile = obj.kind === 'StoragePolicy' ? parseSp(obj) : parseEcp(obj);
      const res = await createObject(admin, obj, { fieldValidation: 'Strict' });
      assert.equal(res.status, 201, `${f}: ${JSON.stringify(res.body.message)}`);
      assert.deepEqual(res.warnings, [], `${f}: no warning`);
      // As stored (defaults applied), the daemon parses the same policy.
      const stored = res.body as KubeObject;
      assert.deepEqual(obj.kind === 'StoragePolicy' ? parseSp(stored) : parseEcp(stored), parsedFile, f);
    }
  }
  assert.deepEqual([...kinds].sort(), ['ErasureCodingPolicy', 'StoragePolicy']);
});

test('the apiserver writes the parsers\' defaults: a minimal spec stored parses as the minimal spec does', async () => {
  const s = sp(uniq('minimal'), SP_MINIMAL);
  const sRes = await createObject(admin, s);
  assert.equal(sRes.status, 201, JSON.stringify(sRes.body.message));
  assert.deepEqual(sRes.body.spec, {
    ...SP_MINIMAL,
    samplingWindow: '1h',
    cooldownPeriod: '24h',
    maxConcurrentMigrations: 2,
    enabled: true,
    dryRun: false,
  });
  assert.deepEqual(parseSp(sRes.body), parseSp(s));
  const e = ecp(uniq('minimal'), ECP_MINIMAL);
  const eRes = await createObject(admin, e);
  assert.equal(eRes.status, 201, JSON.stringify(eRes.body.message));
  assert.deepEqual(eRes.body.spec, {
    ...ECP_MINIMAL,
    stripeSizeBytes: 1048576,
    algorithm: 'ReedSolomon',
    compression: 'none',
    scrubbingEnabled: true,
    scrubInterval: '24h',
  });
  assert.deepEqual(parseEcp(eRes.body), parseEcp(e));
});

/**
 * Specs our parsers refuse. `field`: the path the apiserver's 422 names (and
 * the EC parser's InvalidPolicy.field; the StoragePolicy parser's message
 * names its last part).
 */
const REFUSED: { what: string; obj: KubeObject; field: string }[] = [
  { what: 'negative high watermark', obj: sp('x', { ...SP_MINIMAL, highWatermarkIOPS: -1 }), field: 'spec.highWatermarkIOPS' },
  { what: 'negative low watermark', obj: sp('x', { ...SP_MINIMAL, lowWatermarkIOPS: -5 }), field: 'spec.lowWatermarkIOPS' },
  { what: 'low above high', obj: sp('x', { ...SP_MINIMAL, lowWatermarkIOPS: 600, highWatermarkIOPS: 500 }), field: 'spec.lowWatermarkIOPS' },
  { what: 'low equal to high', obj: sp('x', { ...SP_MINIMAL, lowWatermarkIOPS: 500, highWatermarkIOPS: 500 }), field: 'spec.lowWatermarkIOPS' },
  { what: 'watermark as a string', obj: sp('x', { ...SP_MINIMAL, highWatermarkIOPS: '5000' }), field: 'spec.highWatermarkIOPS' },
  { what: 'no high watermark', obj: sp('x', { ...SP_MINIMAL, highWatermarkIOPS: undefined }), field: 'spec.highWatermarkIOPS' },
  { what: 'no hot pool selector', obj: sp('x', { ...SP_MINIMAL, hotPoolSelector: undefined }), field: 'spec.hotPoolSelector' },
  { what: 'duration in words', obj: sp('x', { ...SP_MINIMAL, samplingWindow: '1 hour' }), field: 'spec.samplingWindow' },
  { what: 'duration without a unit', obj: sp('x', { ...SP_MINIMAL, samplingWindow: '30' }), field: 'spec.samplingWindow' },
  { what: 'sampling window below 1s', obj: sp('x', { ...SP_MINIMAL, samplingWindow: '500ms' }), field: 'spec.samplingWindow' },
  { what: 'sampling window of zero', obj: sp('x', { ...SP_MINIMAL, samplingWindow: '0h0m0s' }), field: 'spec.samplingWindow' },
  { what: 'unknown duration unit', obj: sp('x', { ...SP_MINIMAL, cooldownPeriod: '1y' }), field: 'spec.cooldownPeriod' },
  { what: 'no concurrent migration', obj: sp('x', { ...SP_MINIMAL, maxConcurrentMigrations: 0 }), field: 'spec.maxConcurrentMigrations' },
  { what: 'too many concurrent migrations', obj: sp('x', { ...SP_MINIMAL, maxConcurrentMigrations: 65 }), field: 'spec.maxConcurrentMigrations' },
  { what: 'fractional concurrent migrations', obj: sp('x', { ...SP_MINIMAL, maxConcurrentMigrations: 1.5 }), field: 'spec.maxConcurrentMigrations' },
  { what: 'enabled as a string', obj: sp('x', { ...SP_MINIMAL, enabled: 'yes' }), field: 'spec.enabled' },
  { what: 'dryRun as a number', obj: sp('x', { ...SP_MINIMAL, dryRun: 1 }), field: 'spec.dryRun' },
  { what: 'label value not a string', obj: sp('x', { ...SP_MINIMAL, hotPoolSelector: { matchLabels: { tier: 1 } } }), field: 'spec.hotPoolSelector.matchLabels.tier' },
  { what: 'selector with matchExpressions', obj: sp('x', { ...SP_MINIMAL, coldPoolSelector: { matchLabels: {}, matchExpressions: [{ key: 'tier', operator: 'In', values: ['cold'] }] } }), field: 'spec.coldPoolSelector.matchExpressions' },
  { what: 'selector without matchLabels', obj: sp('x', { ...SP_MINIMAL, coldPoolSelector: {} }), field: 'spec.coldPoolSelector.matchLabels' },
  { what: 'ecPolicyRef not a name', obj: sp('x', { ...SP_MINIMAL, ecPolicyRef: 5 }), field: 'spec.ecPolicyRef' },
  { what: 'k below 2', obj: ecp('x', { ...ECP_MINIMAL, dataShards: 1 }), field: 'spec.dataShards' },
  { what: 'k above 16', obj: ecp('x', { ...ECP_MINIMAL, dataShards: 17 }), field: 'spec.dataShards' },
  { what: 'fractional k', obj: ecp('x', { ...ECP_MINIMAL, dataShards: 2.5 }), field: 'spec.dataShards' },
  { what: 'm of 0', obj: ecp('x', { ...ECP_MINIMAL, parityShards: 0 }), field: 'spec.parityShards' },
  { what: 'm above 4', obj: ecp('x', { ...ECP_MINIMAL, parityShards: 5 }), field: 'spec.parityShards' },
  { what: 'no m', obj: ecp('x', { dataShards: 4 }), field: 'spec.parityShards' },
  { what: 'stripe not a multiple of k x 4096', obj: ecp('x', { ...ECP_MINIMAL, stripeSizeBytes: 1_000_000 }), field: 'spec.stripeSizeBytes' },
  { what: 'default stripe (1 MiB) not a multiple for k = 3', obj: ecp('x', { dataShards: 3, parityShards: 1 }), field: 'spec.stripeSizeBytes' },
  { what: 'stripe above 64 MiB', obj: ecp('x', { ...ECP_MINIMAL, stripeSizeBytes: 128 * 1024 * 1024 }), field: 'spec.stripeSizeBytes' },
  { what: 'stripe below one block per data shard', obj: ecp('x', { ...ECP_MINIMAL, stripeSizeBytes: 4096 }), field: 'spec.stripeSizeBytes' },
  { what: 'unknown algorithm', obj: ecp('x', { ...ECP_MINIMAL, algorithm: 'Cauchy' }), field: 'spec.algorithm' },
  { what: 'unknown compression', obj: ecp('x', { ...ECP_MINIMAL, compression: 'gzip' }), field: 'spec.compression' },
  { what: 'scrub interval below 1m', obj: ecp('x', { ...ECP_MINIMAL, scrubInterval: '30s' }), field: 'spec.scrubInterval' },
  { what: 'scrub interval of 59999ms', obj: ecp('x', { ...ECP_MINIMAL, scrubInterval: '59999ms' }), field: 'spec.scrubInterval' },
  { what: 'scrub interval of zero days and 59s', obj: ecp('x', { ...ECP_MINIMAL, scrubInterval: '0d59s' }), field: 'spec.scrubInterval' },
  { what: 'sampling window of zero days', obj: sp('x', { ...SP_MINIMAL, samplingWindow: '0d' }), field: 'spec.samplingWindow' },
  { what: 'scrub interval in words', obj: ecp('x', { ...ECP_MINIMAL, scrubInterval: '24 hours' }), field: 'spec.scrubInterval' },
  { what: 'scrubbingEnabled as a string', obj: ecp('x', { ...ECP_MINIMAL, scrubbingEnabled: 'true' }), field: 'spec.scrubbingEnabled' },
];

/** Edge values both must accept (a CEL rule or pattern stricter than the parser fails here). */
const ACCEPTED: { what: string; obj: KubeObject }[] = [
  ...['1s', '1000ms', '0h1s', '1h30m', '7d', '1m', '90s'].map((w) => ({ what: `samplingWindow ${w}`, obj: sp('x', { ...SP_MINIMAL, samplingWindow: w }) })),
  ...['0s', '10m', '2d12h'].map((w) => ({ what: `cooldownPeriod ${w}`, obj: sp('x', { ...SP_MINIMAL, cooldownPeriod: w }) })),
  { what: 'low 0, high 0.5', obj: sp('x', { ...SP_MINIMAL, lowWatermarkIOPS: 0, highWatermarkIOPS: 0.5 }) },
  { what: 'empty matchLabels (every pool)', obj: sp('x', { ...SP_MINIMAL, hotPoolSelector: { matchLabels: {} } }) },
  { what: 'every selector, 64 migrations', obj: sp('x', { ...SP_MINIMAL, warmPoolSelector: { matchLabels: { tier: 'warm' } }, volumeSelector: { matchLabels: { app: 'db' } }, maxConcurrentMigrations: 64, ecPolicyRef: 'standard-ec' }) },
  ...['0d2s', '00d1500ms', '0d0h1s'].map((w) => ({ what: `samplingWindow ${w} (zero days)`, obj: sp('x', { ...SP_MINIMAL, samplingWindow: w }) })),
  ...['1m', '60s', '60000ms', '90s', '1h', '7d', '1d0h', '0d61s', '10d'].map((w) => ({ what: `scrubInterval ${w}`, obj: ecp('x', { ...ECP_MINIMAL, scrubInterval: w }) })),
  { what: 'k = 3, stripe 84 x 12 KiB', obj: ecp('x', { dataShards: 3, parityShards: 1, stripeSizeBytes: 84 * 3 * 4096 }) },
  { what: 'k = 16, m = 4, stripe 64 MiB, lz4', obj: ecp('x', { dataShards: 16, parityShards: 4, stripeSizeBytes: 64 * 1024 * 1024, compression: 'lz4' }) },
  { what: 'k = 2, stripe 8 KiB', obj: ecp('x', { dataShards: 2, parityShards: 1, stripeSizeBytes: 8192 }) },
];

/** A fresh name per case, undefined fields dropped (JSON has no undefined). */
function named(obj: KubeObject): KubeObject {
  return JSON.parse(JSON.stringify({ ...obj, metadata: { name: uniq(obj.kind === 'StoragePolicy' ? 'sp' : 'ecp') } })) as KubeObject;
}

test('every spec the parsers refuse, the apiserver refuses with 422 naming the field', async () => {
  const disagreements: string[] = [];
  for (const c of REFUSED) {
    const obj = named(c.obj);
    const last = c.field.split('.').pop()!;
    // Our parser first: each case is a thing it refuses, naming the field.
    try {
      if (obj.kind === 'StoragePolicy') parseSp(obj);
      else validatePolicy(obj.metadata.name, obj.spec as ErasureCodingPolicySpec, MANY_COLD_POOLS);
      disagreements.push(`${c.what}: the parser accepts it`);
    } catch (err) {
      const msg = (err as Error).message;
      if (err instanceof InvalidPolicy ? err.field !== c.field : !msg.includes(last)) disagreements.push(`${c.what}: the parser's error does not name ${c.field}: ${msg}`);
    }
    const res = await createObject(admin, obj);
    if (res.status !== 422) {
      disagreements.push(`${c.what}: apiserver answered ${res.status}`);
      continue;
    }
    const causes: { field?: string; message?: string }[] = res.body.details?.causes ?? [];
    if (!causes.some((k) => k.field === c.field)) {
      disagreements.push(`${c.what}: 422 names ${JSON.stringify(causes.map((k) => k.field))}, not ${c.field}: ${res.body.message}`);
    }
    if (!String(res.body.message).includes(c.field)) disagreements.push(`${c.what}: message does not name ${c.field}: ${res.body.message}`);
  }
  assert.deepEqual(disagreements, []);
});

test('the edge values the parsers accept, the apiserver accepts', async () => {
  const disagreements: string[] = [];
  for (const c of ACCEPTED) {
    const obj = named(c.obj);
    try {
      if (obj.kind === 'StoragePolicy') parseSp(obj);
      else parseEcp(obj);
    } catch (err) {
      disagreements.push(`${c.what}: the parser refuses it: ${(err as Error).message}`);
    }
    const res = await createObject(admin, obj, { fieldValidation: 'Strict' });
    if (res.status !== 201) disagreements.push(`${c.what}: apiserver answered ${res.status}: ${res.body.message}`);
  }
  assert.deepEqual(disagreements, []);
});

test('the differences deploy/README.md lists: whitespace around a duration, a duration beyond a safe integer of ms', async () => {
  // [value, the parser accepts it, the apiserver accepts it]
  const cases: [string, boolean, boolean][] = [
    [' 1h', true, false],
    ['1h ', true, false],
    ['99999999999999999d', false, true],
  ];
  for (const [w, parserAccepts, apiserverAccepts] of cases) {
    const obj = named(sp('x', { ...SP_MINIMAL, samplingWindow: w }));
    let parsed = true;
    try {
      parseSp(obj);
    } catch {
      parsed = false;
    }
    assert.equal(parsed, parserAccepts, `parser on ${JSON.stringify(w)}`);
    const res = await createObject(admin, obj);
    assert.equal(res.status, apiserverAccepts ? 201 : 422, `apiserver on ${JSON.stringify(w)}: ${res.body.message}`);
  }
});

test('an unknown spec field: refused under strict field validation (kubectl), pruned with a warning otherwise', async () => {
  const obj = named(sp('x', { ...SP_MINIMAL, ecPolicyref: 'standard-ec' }));
  assert.throws(() => parseSp(obj), /spec\.ecPolicyref is not a StoragePolicy field/);
  const strict = await createObject(admin, obj, { fieldValidation: 'Strict' });
  assert.equal(strict.status, 400);
  assert.match(strict.body.message, /unknown field "spec\.ecPolicyref"/);
  const warn = await createObject(admin, obj);
  assert.equal(warn.status, 201);
  assert.ok(warn.warnings.some((w) => /unknown field \\?"spec\.ecPolicyref\\?"/.test(w)), JSON.stringify(warn.warnings));
  assert.equal('ecPolicyref' in warn.body.spec, false, 'pruned');
});

/** A node's StoragePolicy status entry at its bounds' edge, shaped as deploy/README.md says. */
function spNodeEntry(node: string, decisions = 20) {
  const now = new Date().toISOString();
  return {
    phase: 'DryRun',
    observedGeneration: 1,
    lastReconcileTime: now,
    watchedVolumes: decisions,
    hotVolumes: 1,
    warmVolumes: 0,
    coldVolumes: decisions - 1,
    activeMigrations: 0,
    totalMigrations: { succeeded: 3, failed: 1, aborted: 0 },
    conditions: [
      { type: 'Valid', status: 'True', reason: 'SpecValid', message: 'policy is valid', lastTransitionTime: now },
      { type: 'HeatSourceAvailable', status: 'True', reason: 'Reading', message: 'heat readings available', lastTransitionTime: now },
    ],
    decisionsTotal: decisions,
    decisions: Array.from({ length: decisions }, (_, i) => ({
      volume: `${node}-vol-${i}`,
      currentTier: 'cold',
      targetTier: i === 0 ? 'hot' : null,
      iops: i === 0 ? 6000.5 : null,
      action: i === 0 ? 'would-migrate' : 'no-data',
      reason: i === 0 ? '6000.5 IOPS >= 5000 (dryRun)' : 'no heat reading yet',
    })),
    migrationHistory: [
      { volume: `${node}-vol-0`, from: 'hot', to: 'cold', result: 'failed', startedAt: now, finishedAt: now, bytesCopied: 1048576, error: 'target pool cold-3 offline' },
    ],
  };
}

const mergePatch = 'application/merge-patch+json';
const SPNS_PATH = `/apis/${GROUP}/v1/storagepolicynodestatuses`;
const ECPNS_PATH = `/apis/${GROUP}/v1/erasurecodingpolicynodestatuses`;

/** A node-status object as the daemon's writer makes it (src/control/kube/status.ts), owned by the policy. */
function nodeStatusObj(kind: 'StoragePolicy' | 'ErasureCodingPolicy', policy: KubeObject, node: string, status: unknown): KubeObject {
  return {
    apiVersion,
    kind: `${kind}NodeStatus`,
    metadata: {
      name: nodeStatusName(policy.metadata.name, node),
      labels: { 'storage.billyronks.io/policy': policy.metadata.name, 'storage.billyronks.io/node': node },
      ownerReferences: [{ apiVersion, kind, name: policy.metadata.name, uid: (policy.metadata as { uid?: string }).uid }],
    },
    spec: { policy: policy.metadata.name, node },
    status,
  } as KubeObject;
}

test('status is an object per policy and node: two nodes\' objects side by side, found by label; the policy untouched; an old status.nodes dropped', async () => {
  const name = uniq('status');
  const created = await createObject(admin, sp(name, SP_MINIMAL));
  assert.equal(created.status, 201);
  const rv = created.body.metadata.resourceVersion;
  const a = withoutNulls(spNodeEntry('node-a'));
  const b = withoutNulls(spNodeEntry('node-b', 3));
  for (const [node, entry] of [['node-a', a], ['node-b', b]] as const) {
    const res = await createObject(admin, nodeStatusObj('StoragePolicy', created.body, node, entry), { fieldValidation: 'Strict' });
    assert.equal(res.status, 201, JSON.stringify(res.body.message));
  }
  const listed = await kubeRequest(admin, 'GET', `${SPNS_PATH}?labelSelector=${encodeURIComponent(`storage.billyronks.io/policy=${name}`)}`);
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.items.map((o: { spec: { node: string } }) => o.spec.node).sort(), ['node-a', 'node-b']);
  assert.deepEqual(listed.body.items.find((o: { spec: { node: string } }) => o.spec.node === 'node-a').status, a);
  assert.deepEqual(listed.body.items.find((o: { spec: { node: string } }) => o.spec.node === 'node-b').status, b);
  // The policy did not change: no watcher of the policies heard of either write.
  const got = await kubeRequest(admin, 'GET', `${SP_PATH}/${name}`);
  assert.equal(got.body.metadata.resourceVersion, rv);
  assert.equal(got.body.status, undefined);

  // The schema's enums do not list null: a null targetTier is refused (the daemon's writer drops null members).
  const withNull = await createObject(admin, nodeStatusObj('StoragePolicy', created.body, 'node-c', spNodeEntry('node-c')));
  assert.equal(withNull.status, 422, JSON.stringify(withNull.body.message));
  assert.match(withNull.body.message, /status\.decisions\[1\]\.targetTier/);

  // An older version's entry in the policy's own status: not in the schema, so not kept (nor shown).
  const old = await kubeRequest(admin, 'PATCH', `${SP_PATH}/${name}/status`, { status: { nodes: { 'node-a': { phase: 'Active' } } } }, mergePatch);
  assert.equal(old.status, 200, JSON.stringify(old.body.message));
  assert.equal(old.body.status?.nodes, undefined);
  assert.equal((await kubeRequest(admin, 'GET', `${SP_PATH}/${name}`)).body.status?.nodes, undefined);
});

/** The value as the daemon's writer stores it: null members of objects dropped, at every depth. */
function withoutNulls<T>(v: T): T {
  return JSON.parse(JSON.stringify(v, (_k, x) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).filter(([, y]) => y !== null)) : x))) as T;
}

test('status bounds are enforced: 21 decisions, an unknown phase, a bad time are refused with 422 naming the field', async () => {
  const name = uniq('bounds');
  const policy = await createObject(admin, sp(name, SP_MINIMAL));
  assert.equal(policy.status, 201);
  const cases: [unknown, string][] = [
    [withoutNulls(spNodeEntry('n', 21)), 'status.decisions'],
    [{ phase: 'Running' }, 'status.phase'],
    [{ phase: 'Active', lastReconcileTime: 'yesterday' }, 'status.lastReconcileTime'],
    [{ phase: 'Active', conditions: [{ type: 'Valid', status: 'Yes', lastTransitionTime: new Date().toISOString() }] }, 'status.conditions[0].status'],
    [{ watchedVolumes: 1 }, 'status.phase'],
  ];
  for (const [entry, field] of cases) {
    const res = await createObject(admin, nodeStatusObj('StoragePolicy', policy.body, 'n', entry));
    assert.equal(res.status, 422, `${field}: ${res.status} ${JSON.stringify(res.body.message)}`);
    assert.ok(String(res.body.message).includes(field), `${field}: ${res.body.message}`);
  }
  assert.equal((await kubeRequest(admin, 'GET', `${SPNS_PATH}/${nodeStatusName(name, 'n')}`)).status, 404, 'nothing written');
});

test('ErasureCodingPolicy status per node: phase, stripes by health; an unknown phase is refused', async () => {
  const name = uniq('ecstatus');
  const policy = await createObject(admin, ecp(name, ECP_MINIMAL));
  assert.equal(policy.status, 201);
  const now = new Date().toISOString();
  const active = {
    phase: 'Active',
    observedGeneration: 1,
    activeDataShards: 4,
    activeParityShards: 2,
    coldPools: 6,
    stripes: { healthy: 1000, degraded: 2, rebuilding: 1, unrecoverable: 0 },
    lastUpdateTime: now,
    conditions: [{ type: 'Valid', status: 'True', reason: 'SpecValid', message: '4+2 on 6 cold pools', lastTransitionTime: now }],
  };
  const invalid = { phase: 'Invalid', reason: 'dataShards + parityShards = 6 needs that many cold pools, only 3 available', coldPools: 3 };
  for (const [node, entry] of [['a', active], ['b', invalid]] as const) {
    assert.equal((await createObject(admin, nodeStatusObj('ErasureCodingPolicy', policy.body, node, entry), { fieldValidation: 'Strict' })).status, 201);
    assert.deepEqual((await kubeRequest(admin, 'GET', `${ECPNS_PATH}/${nodeStatusName(name, node)}`)).body.status, entry);
  }
  const bad = await createObject(admin, nodeStatusObj('ErasureCodingPolicy', policy.body, 'c', { phase: 'Degraded' }));
  assert.equal(bad.status, 422);
  assert.match(bad.body.message, /status\.phase/);
  // kubectl get ecpns: the node's phase, k+m and unhealthy stripes.
  const t = await tableOf(admin, `${ECPNS_PATH}/${nodeStatusName(name, 'a')}`);
  assert.deepEqual(t.columnDefinitions.map((c) => c.name), ['Name', 'Policy', 'Node', 'Phase', 'K', 'M', 'Degraded', 'Unrecoverable', 'Updated', 'Reason']);
  assert.deepEqual(t.rows[0]!.cells.slice(1, 8), [name, 'a', 'Active', 4, 2, 2, 0]);
});

test('kubectl get columns: watermarks, EC policy, k+m', async () => {
  const name = uniq('columns');
  assert.equal((await createObject(admin, sp(name, { ...SP_MINIMAL, ecPolicyRef: 'standard-ec' }))).status, 201);
  const t1 = await tableOf(admin, `${SP_PATH}/${name}`);
  const cols = t1.columnDefinitions.map((c) => c.name);
  assert.deepEqual(cols, ['Name', 'High', 'Low', 'Window', 'EC', 'Enabled', 'DryRun', 'Age']);
  assert.deepEqual(t1.rows[0]!.cells.slice(0, 7), [name, 100, 10, '1h', 'standard-ec', true, false]);
  const ename = uniq('columns');
  assert.equal((await createObject(admin, ecp(ename, ECP_MINIMAL))).status, 201);
  const t2 = await tableOf(admin, `${ECP_PATH}/${ename}`);
  assert.deepEqual(t2.columnDefinitions.map((c) => c.name), ['Name', 'K', 'M', 'Stripe', 'Compression', 'Scrub', 'Age']);
  assert.deepEqual(t2.rows[0]!.cells.slice(0, 6), [ename, 4, 2, 1048576, 'none', '24h']);
  // kubectl get spns: each node's phase and volume counts (the policy's own columns name no node).
  assert.equal((await createObject(admin, nodeStatusObj('StoragePolicy', (await kubeRequest(admin, 'GET', `${SP_PATH}/${name}`)).body, 'node-a', { phase: 'DryRun', hotVolumes: 3, warmVolumes: 0, coldVolumes: 7, activeMigrations: 1 }))).status, 201);
  const t3 = await tableOf(admin, `${SPNS_PATH}/${nodeStatusName(name, 'node-a')}`);
  assert.deepEqual(t3.columnDefinitions.map((c) => c.name), ['Name', 'Policy', 'Node', 'Phase', 'Hot', 'Warm', 'Cold', 'Moving', 'Reconciled', 'Reason']);
  assert.deepEqual(t3.rows[0]!.cells.slice(1, 8), [name, 'node-a', 'DryRun', 3, 0, 7, 1]);
});

/** GET as a meta.k8s.io Table: the server-side printing kubectl get shows. */
async function tableOf(kc: KubeAccess, p: string): Promise<{ columnDefinitions: { name: string }[]; rows: { cells: unknown[] }[] }> {
  const res = await kubeRequest(kc, 'GET', p, undefined, undefined, 'application/json;as=Table;v=v1;g=meta.k8s.io');
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** The manifests of one deploy/ file by kind. */
function manifest(file: string, kind: string): KubeObject {
  const obj = loadManifests(path.join(DEPLOY_DIR, file)).find((o) => o.kind === kind);
  assert.ok(obj, `${file} has a ${kind}`);
  return obj;
}

test('Namespace, ServiceAccount, ConfigMap, DaemonSet and NetworkPolicy pass a server-side dry-run create; nothing is stored', async () => {
  // The namespaced objects need their namespace to exist (admission): created for real.
  const ns = manifest('namespace.yaml', 'Namespace');
  const nsDry = await createObject(admin, ns, { dryRun: true, fieldValidation: 'Strict' });
  assert.equal(nsDry.status, 201, JSON.stringify(nsDry.body.message));
  await ensureCreated(admin, ns);
  for (const [file, kind] of [['rbac.yaml', 'ServiceAccount'], ['configmap.yaml', 'ConfigMap'], ['daemonset.yaml', 'DaemonSet'], ['networkpolicy.yaml', 'NetworkPolicy']] as const) {
    const obj = manifest(file, kind);
    const res = await createObject(admin, obj, { dryRun: true, fieldValidation: 'Strict' });
    assert.equal(res.status, 201, `${file} ${kind}: ${JSON.stringify(res.body.message)}`);
    if (kind !== 'DaemonSet') assert.deepEqual(res.warnings, [], `${file} ${kind}`);
    else {
      // The namespace warns at "restricted": what the pod needs beyond it, and nothing else
      // (no privilege, no capability, no escalation, seccomp set).
      assert.equal(res.warnings.length, 1, JSON.stringify(res.warnings));
      const beyond = [...res.warnings[0]!.matchAll(/(?:^|, |: )([a-zA-Z!= 0-9]+?) \(/g)].map((m) => m[1]);
      assert.deepEqual(beyond, ['hostPort', 'restricted volume types', 'runAsNonRoot != true', 'runAsUser=0'], res.warnings[0]);
    }
    const stored = await kubeRequest(admin, 'GET', `${collectionPath(obj)}/${obj.metadata.name}`);
    assert.equal(stored.status, 404, `${kind} not stored by a dry run`);
  }
});



async function ensureCreated(kc: KubeAccess, obj: KubeObject): Promise<void> {
  const res = await createObject(kc, obj);
  assert.ok(res.status === 201 || res.status === 409, `${obj.kind} ${obj.metadata.name}: ${res.status} ${JSON.stringify(res.body.message)}`);
}

test('the DaemonSet: NODE_NAME from the node, NBD and S3 host ports, probes on 8081, grace above the 10 s NBD drain, not privileged', () => {
  const ds = manifest('daemonset.yaml', 'DaemonSet') as any; // eslint-disable-line @typescript-eslint/no-explicit-any -- a manifest read field by field
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  assert.deepEqual(c.env.find((e: { name: string }) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number; hostPort?: number }) => [p.name, [p.containerPort, p.hostPort ?? null]]));
  assert.deepEqual(ports, { nbd: [10809, 10809], s3: [9000, 9000], api: [8081, null], metrics: [8080, null] });
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.startupProbe.httpGet.path, '/healthz');
  assert.equal(ds.spec.template.metadata.annotations['prometheus.io/port'], '8080');
  assert.ok(pod.terminationGracePeriodSeconds > 10);
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  assert.equal(c.securityContext.privileged, false);
  assert.equal(pod.hostNetwork, undefined);
  assert.equal(pod.serviceAccountName, manifest('rbac.yaml', 'ServiceAccount').metadata.name);
  const dataMount = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/var/lib/couchestor');
  const dataVol = pod.volumes.find((v: { name: string }) => v.name === dataMount.name);
  // The NetworkPolicy selects the DaemonSet's pods and lets in NBD, S3 and metrics, not the admin API (8081).
  const np = manifest('networkpolicy.yaml', 'NetworkPolicy') as any; // eslint-disable-line @typescript-eslint/no-explicit-any -- a manifest read field by field
  assert.deepEqual(np.spec.podSelector.matchLabels, ds.spec.template.metadata.labels);
  assert.deepEqual(np.spec.ingress.flatMap((r: { ports: { port: string }[] }) => r.ports.map((p) => (ports as Record<string, number[]>)[p.port]![0])).sort(), [10809, 8080, 9000].sort());
  assert.equal(dataVol.hostPath.path, '/var/lib/couchestor');
  assert.deepEqual(c.command.slice(-2), ['--data-dir', '/var/lib/couchestor']);
  // `kubectl exec POD -- couchestor <command>` finds the same data directory without --data-dir.
  assert.equal(c.env.find((e: { name: string }) => e.name === 'COUCHESTOR_DATA_DIR').value, '/var/lib/couchestor');
});

test('the ConfigMap\'s couchestor.yaml loads; the example StoragePolicy\'s selectors and EC policy fit its pools', (t) => {
  const cm = manifest('configmap.yaml', 'ConfigMap') as KubeObject & { data: Record<string, string> };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-manifests-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'couchestor.yaml'), cm.data['couchestor.yaml']!);
  const cfg: DaemonConfig = loadConfig(dir);
  assert.equal(cfg.listenHost, '0.0.0.0');
  assert.equal(cfg.demoVolume, null);
  assert.equal(cfg.kubernetes.enabled, true);
  assert.equal(cfg.kubernetes.kubeconfig, null, 'the pod\'s ServiceAccount');
  assert.equal(cfg.kubernetes.nodeName, null, 'NODE_NAME from the DaemonSet');
  const pools = cfg.pools.map((p) => ({ name: p.name, labels: { tier: p.tier, ...p.labels } }));
  const coldPools = cfg.pools.filter((p) => p.tier === 'cold').length;
  const ec = parsePolicyYaml(fs.readFileSync(path.join(DEPLOY_DIR, 'examples/standard-ec.yaml'), 'utf8'), coldPools);
  assert.equal(ec.name, cfg.kubernetes.ecPolicyName);
  const policy = parseStoragePolicy(fs.readFileSync(path.join(DEPLOY_DIR, 'examples/tiering.yaml'), 'utf8'));
  checkAgainst(policy, pools, [ec.name]);
});

test('the DaemonSet puts the ConfigMap\'s couchestor.yaml into the data directory on the host (init container), not an empty subPath mount point the host-side CLI would take for defaults', async (t) => {
  const ds = manifest('daemonset.yaml', 'DaemonSet') as any; // eslint-disable-line @typescript-eslint/no-explicit-any -- a manifest read field by field
  const pod = ds.spec.template.spec;
  const dataVol = pod.volumes.find((v: { hostPath?: { path: string } }) => v.hostPath?.path === '/var/lib/couchestor');
  // No container mounts anything at a path inside the data directory: a subPath mount's target is
  // created on the host (an empty file left there), and the file mounted is not the host's.
  for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
    for (const m of c.volumeMounts as { name: string; mountPath: string; subPath?: string }[]) {
      assert.ok(!m.mountPath.startsWith('/var/lib/couchestor/'), `${c.name}: ${m.name} mounted inside the data directory at ${m.mountPath}`);
    }
  }
  // Why it matters: the host's empty mount point holds no configuration (loaded as the embedded
  // default before, other pools than the ConfigMap's; refused now: test/config-empty-file).
  const cm = manifest('configmap.yaml', 'ConfigMap') as KubeObject & { data: Record<string, string> };
  const emptyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-manifests-empty-'));
  t.after(() => fs.rmSync(emptyDir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(emptyDir, 'couchestor.yaml'), '');
  const cmDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-manifests-cm-'));
  t.after(() => fs.rmSync(cmDir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(cmDir, 'couchestor.yaml'), cm.data['couchestor.yaml']!);
  const names = (dir: string) => loadConfig(dir).pools.map((p) => p.name);
  assert.throws(() => names(emptyDir), /couchestor\.yaml: holds no settings/);

  // The init container, run as the kubelet would (its command; the two paths, mounts in the pod, moved to temp dirs):
  // the ConfigMap's file lands whole in the data directory; a second start with it unchanged writes nothing.
  const init = (pod.initContainers ?? []).find((c: { name: string }) => c.name === 'config');
  assert.ok(init, 'an init container "config"');
  const cfgMount = init.volumeMounts.find((m: { name: string }) => m.name === 'config');
  const dataMount = init.volumeMounts.find((m: { name: string }) => m.name === dataVol.name);
  const argv = init.command as string[];
  assert.deepEqual(argv.slice(-2), [`${cfgMount.mountPath}/couchestor.yaml`, `${dataMount.mountPath}/couchestor.yaml`]);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-manifests-pod-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const [etc, data] = [path.join(root, 'etc'), path.join(root, 'data')];
  fs.mkdirSync(etc);
  fs.mkdirSync(data);
  fs.writeFileSync(path.join(etc, 'couchestor.yaml'), cm.data['couchestor.yaml']!);
  const { execFileSync } = await import('node:child_process');
  const run = () => execFileSync(process.execPath, [...argv.slice(1, -2), path.join(etc, 'couchestor.yaml'), path.join(data, 'couchestor.yaml')], { encoding: 'utf8' });
  assert.equal(argv[0], 'node');
  assert.match(run(), /copied/);
  assert.equal(fs.readFileSync(path.join(data, 'couchestor.yaml'), 'utf8'), cm.data['couchestor.yaml']);
  assert.deepEqual(fs.readdirSync(data), ['couchestor.yaml'], 'no temp file left');
  assert.deepEqual(names(data), names(cmDir));
  assert.equal(run(), '', 'unchanged: not rewritten');
  // The ConfigMap edited: the next start copies the new content over the old.
  fs.writeFileSync(path.join(etc, 'couchestor.yaml'), cm.data['couchestor.yaml']!.replace('listenHost: 0.0.0.0', 'listenHost: 127.0.0.1'));
  assert.match(run(), /copied/);
  assert.equal(loadConfig(data).listenHost, '127.0.0.1');
});

test('RBAC: the ClusterRole lets the daemon list, watch and get policies and write node-status objects; it refuses spec and policy status writes (403)', async () => {
  await ensureCreated(admin, manifest('namespace.yaml', 'Namespace'));
  for (const obj of loadManifests(path.join(DEPLOY_DIR, 'rbac.yaml'))) {
    const res = await createObject(admin, obj, { fieldValidation: 'Strict' });
    assert.equal(res.status, 201, `${obj.kind}: ${JSON.stringify(res.body.message)}`);
  }
  const role = manifest('rbac.yaml', 'ClusterRole');
  const name = uniq('rbac');
  assert.equal((await createObject(admin, sp(name, SP_MINIMAL))).status, 201);
  const user = access(kube, UNPRIVILEGED);
  // Before the binding: nothing.
  assert.equal((await kubeRequest(user, 'GET', SP_PATH)).status, 403);
  const binding: KubeObject = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'couchestor-test-user' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: UNPRIVILEGED }],
  };
  assert.equal((await createObject(admin, binding)).status, 201);
  // The authorizer follows bindings through an informer: poll until the grant shows.
  await pollUntil(async () => (await kubeRequest(user, 'GET', SP_PATH)).status === 200, 'the binding takes effect');
  for (const p of [SP_PATH, ECP_PATH, `${SP_PATH}/${name}`]) {
    assert.equal((await kubeRequest(user, 'GET', p)).status, 200, `GET ${p}`);
  }
  const watch = await kubeRequest(user, 'GET', `${SP_PATH}?watch=true&timeoutSeconds=1`);
  assert.equal(watch.status, 200, 'watch');
  assert.match(String(watch.body), /"type":"ADDED"/, 'the watch streams the policy');
  // Its node-status object: created, patched whole (JSON patch), listed metadata-only (the pruner), deleted.
  const current = (await kubeRequest(admin, 'GET', `${SP_PATH}/${name}`)).body;
  const obj = nodeStatusObj('StoragePolicy', current, 'node-a', { phase: 'Active' });
  assert.equal((await kubeRequest(user, 'POST', SPNS_PATH, obj)).status, 201);
  const patched = await kubeRequest(user, 'PATCH', `${SPNS_PATH}/${obj.metadata.name}`, [{ op: 'add', path: '/status', value: { phase: 'DryRun' } }], 'application/json-patch+json');
  assert.equal(patched.status, 200, JSON.stringify(patched.body.message));
  assert.equal(patched.body.status.phase, 'DryRun');
  const meta = await kubeRequest(user, 'GET', SPNS_PATH, undefined, undefined, 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1');
  assert.equal(meta.status, 200);
  assert.equal(meta.body.kind, 'PartialObjectMetadataList');
  assert.equal((await kubeRequest(user, 'DELETE', `${SPNS_PATH}/${obj.metadata.name}`)).status, 200);
  const refused: [string, string, unknown?][] = [
    ['PATCH', `${SP_PATH}/${name}`, { spec: { dryRun: true } }],
    // The policy's own status is no longer written by the daemons.
    ['PATCH', `${SP_PATH}/${name}/status`, { status: { observedGeneration: 1 } }],
    ['PUT', `${SP_PATH}/${name}/status`, current],
    ['GET', `${SP_PATH}/${name}/status`],
    ['GET', `${SPNS_PATH}?watch=true&timeoutSeconds=1`],
    ['DELETE', `${SP_PATH}/${name}`],
    ['POST', SP_PATH, sp(uniq('by-user'), SP_MINIMAL)],
    ['POST', ECP_PATH, ecp(uniq('by-user'), ECP_MINIMAL)],
    ['GET', '/api/v1/namespaces/couchestor-system/secrets'],
    ['GET', '/api/v1/configmaps'],
  ];
  for (const [method, p, body] of refused) {
    const res = await kubeRequest(user, method, p, body, method === 'PATCH' ? mergePatch : undefined);
    assert.equal(res.status, 403, `${method} ${p}: ${res.status}`);
  }
  const after = await kubeRequest(admin, 'GET', `${SP_PATH}/${name}`);
  assert.equal(after.body.spec.dryRun, false);
});

test('RBAC: the DaemonSet\'s ServiceAccount, through rbac.yaml\'s own binding, reads policies and writes node-status objects only', async () => {
  // rbac.yaml was created by the test above; a token for its ServiceAccount as the kubelet would mount it.
  const sa = manifest('rbac.yaml', 'ServiceAccount');
  const ns = sa.metadata.namespace!;
  const tr = await kubeRequest(admin, 'POST', `/api/v1/namespaces/${ns}/serviceaccounts/${sa.metadata.name}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 3600 },
  });
  assert.equal(tr.status, 201, JSON.stringify(tr.body.message));
  const daemon: KubeAccess = { server: kube.server, caPem: kube.caPem, token: tr.body.status.token };
  const name = uniq('sa');
  const policy = await createObject(admin, ecp(name, ECP_MINIMAL));
  assert.equal(policy.status, 201);
  await pollUntil(async () => (await kubeRequest(daemon, 'GET', ECP_PATH)).status === 200, 'the ServiceAccount can list');
  assert.equal((await kubeRequest(daemon, 'GET', SP_PATH)).status, 200);
  const st = await kubeRequest(daemon, 'POST', ECPNS_PATH, nodeStatusObj('ErasureCodingPolicy', policy.body, 'node-a', { phase: 'Unused' }));
  assert.equal(st.status, 201, JSON.stringify(st.body.message));
  assert.equal((await kubeRequest(daemon, 'PATCH', `${ECP_PATH}/${name}/status`, { status: {} }, mergePatch)).status, 403);
  assert.equal((await kubeRequest(daemon, 'PATCH', `${ECP_PATH}/${name}`, { spec: { parityShards: 1 } }, mergePatch)).status, 403);
  assert.equal((await kubeRequest(daemon, 'GET', `/api/v1/namespaces/${ns}/secrets`)).status, 403);
});

async function pollUntil(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
