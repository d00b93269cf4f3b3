// The daemon on Kubernetes (kubernetes.enabled), real daemons against a real
// kube-apiserver + etcd (test/helpers/kube.ts) with deploy/crds applied: the
// cold tier runs the ErasureCodingPolicy CR it names, StoragePolicy CRs are
// the control loop's policies (created, updated, invalid, deleted while it
// runs), each node writes its own node-status object and only when it changed,
// a node bound only to deploy/rbac.yaml's ClusterRole works, and a volume
// whose heat passes a CR's high watermark is moved hot.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeEnv } from './helpers/kube.js';
import { access, bindDeployClusterRole } from './helpers/kube-manifests.js';
import type { TestDaemon } from './helpers/daemon.js';
import { coldStatus, createVolume, loadJob, metric, nbdcopyIn, nbdcopyOut, randomFile, reconcile, scrape, sleep, status, volume, WINDOW_SETTLE_MS, type FioJob } from './helpers/control-loop.js';
import { Cluster, condition, destagedColdVolume, ECP, SP, spSpec, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

const MiB = 1024 * 1024;
let kube: KubeEnv;
let cluster: Cluster;
/** node-a: the daemon most tests look at (cold tier ec21, 3 cold pools). */
let nodeA: TestDaemon;
const daemons: TestDaemon[] = [];

async function daemon(nodeName: string, user?: string): Promise<TestDaemon> {
  const d = await startKubeDaemon({ kubeconfig: kube.kubeconfig(user), nodeName, ecPolicyName: 'ec21' });
  daemons.push(d);
  return d;
}

before(async () => {
  // ec21 and ec42 before the daemon starts: its cold tier's policy is read once, at start.
  ({ kube, cluster } = await startKubeCluster());
  await cluster.create(ECP, 'ErasureCodingPolicy', 'ec42', { dataShards: 4, parityShards: 2 });
  nodeA = await daemon('node-a');
});

after(() => stopKubeCluster(kube, daemons));

test('the cold tier runs the ErasureCodingPolicy CR it names (2+1 on 3 cold pools): status Active with stripes by health; one needing 6 pools is Invalid', async () => {
  const cold = await coldStatus(nodeA);
  const policy = (cold as unknown as { policy: { name: string; dataShards: number; parityShards: number } }).policy;
  assert.deepEqual({ name: policy.name, k: policy.dataShards, m: policy.parityShards }, { name: 'ec21', k: 2, m: 1 });
  assert.match(nodeA.stderr, /cold tier policy from the cluster ecPolicy=ec21 dataShards=2 parityShards=1/);

  // Two stripes' worth written to a cold volume and destaged: the status counts them healthy.
  const src = await destagedColdVolume(nodeA, 'coldvol', 'cold.bin');
  await reconcile(nodeA, false);
  const ec21 = await untilNodeStatus(cluster, ECP, 'ec21', 'node-a', (s) => s.phase === 'Active' && (s.stripes?.healthy ?? 0) >= 2);
  assert.deepEqual(
    { k: ec21.activeDataShards, m: ec21.activeParityShards, coldPools: ec21.coldPools, bad: [ec21.stripes!.degraded, ec21.stripes!.rebuilding, ec21.stripes!.unrecoverable] },
    { k: 2, m: 1, coldPools: 3, bad: [0, 0, 0] },
  );
  assert.equal(condition(ec21, 'Valid')?.status, 'True');
  assert.equal(condition(ec21, 'Applied')?.status, 'True');
  assert.equal(condition(ec21, 'StripesHealthy')?.status, 'True');

  const ec42 = await untilNodeStatus(cluster, ECP, 'ec42', 'node-a', (s) => s.phase === 'Invalid');
  assert.match(ec42.reason ?? '', /dataShards \+ parityShards = 6 needs that many cold pools, only 3 available/);
  assert.equal(condition(ec42, 'Valid')?.status, 'False');

  // A later change of the CR is not applied to the running cold tier: flagged, Active still.
  await cluster.patchSpec(ECP, 'ec21', { scrubInterval: '12h' });
  const changed = await untilNodeStatus(cluster, ECP, 'ec21', 'node-a', (s) => condition(s, 'Applied')?.status === 'False');
  assert.equal(changed.phase, 'Active');
  assert.equal(condition(changed, 'Applied')?.reason, 'RestartRequired');
  assert.match(condition(changed, 'Applied')!.message, /existing stripes keep their own k\+m/);
  assert.equal(changed.observedGeneration, 2);
  // The data is intact through it.
  assert.ok(nbdcopyOut(nodeA.exportUri('coldvol'), path.join(nodeA.dataDir, 'out.bin'), 2 * MiB).equals(fs.readFileSync(src)));
});

test('a StoragePolicy CR created after the daemon starts is picked up (a pass on the change): node-a\'s StoragePolicyNodeStatus with phase and a Valid condition', async () => {
  await cluster.create(SP, 'StoragePolicy', 'sp-a', spSpec({ dryRun: true, volumeSelector: { matchLabels: { app: 'a' } } }));
  // No pass asked for: the reconcile interval is an hour, the change itself starts one.
  const s = await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => x.phase === 'DryRun');
  assert.equal(s.observedGeneration, 1);
  assert.deepEqual(
    { status: condition(s, 'Valid')?.status, reason: condition(s, 'Valid')?.reason },
    { status: 'True', reason: 'SpecValid' },
  );
  assert.equal(typeof s.lastReconcileTime, 'string');
  // Its own object, found by its labels and owned by the policy (deleting the policy garbage-collects it).
  const obj = (await cluster.nodeStatusObject(SP, 'sp-a', 'node-a'))!;
  assert.deepEqual(obj.metadata.labels, { 'storage.billyronks.io/policy': 'sp-a', 'storage.billyronks.io/node': 'node-a' });
  assert.deepEqual(obj.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]), [['StoragePolicy', 'sp-a', (await cluster.get(SP, 'sp-a')).metadata.uid]]);
  assert.deepEqual(await cluster.statusNodes(SP, 'sp-a'), ['node-a']);
  const loop = (await status(nodeA)).policies.find((p) => p.name === 'sp-a');
  assert.ok(loop, 'the loop runs sp-a');
  assert.equal(loop.file, 'storagepolicies/sp-a');
  assert.match(nodeA.stderr, /the policies directory and coldTier\.ecPolicyFile are not read/);
});

test('an update of the CR is followed: dryRun false makes it Active, the new generation observed', async () => {
  await cluster.patchSpec(SP, 'sp-a', { dryRun: false });
  const s = await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => x.phase === 'Active');
  assert.equal(s.observedGeneration, 2);
  await cluster.patchSpec(SP, 'sp-a', { enabled: false });
  const off = await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => x.phase === 'Disabled');
  assert.equal(off.observedGeneration, 3);
  await cluster.patchSpec(SP, 'sp-a', { enabled: true });
  await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => x.phase === 'Active' && x.observedGeneration === 4);
});

test('a spec the CRD lets through but the node refuses (a selector naming no pool): phase Error with the reason; another policy keeps deciding', async () => {
  // The schema cannot know the node's pools: the apiserver stores it.
  await cluster.create(SP, 'StoragePolicy', 'sp-bad', spSpec({ hotPoolSelector: { matchLabels: { tier: 'nvme' } } }));
  const bad = await untilNodeStatus(cluster, SP, 'sp-bad', 'node-a', (x) => x.phase === 'Error');
  assert.match(bad.reason ?? '', /spec\.hotPoolSelector \{"tier":"nvme"\} matches no pool/);
  assert.deepEqual({ status: condition(bad, 'Valid')?.status, reason: condition(bad, 'Valid')?.reason }, { status: 'False', reason: 'InvalidSpec' });

  // sp-a still runs: a volume of its selector gets a decision.
  await createVolume(nodeA, 'va', 4 * MiB, { labels: { app: 'a' } });
  await reconcile(nodeA, false);
  const a = await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => (x.decisions ?? []).some((d) => d.volume === 'va'));
  assert.equal(a.phase, 'Active');
  assert.equal(condition(a, 'Valid')?.status, 'True');
  assert.equal(a.watchedVolumes, 1);

  // Fixed: the reason goes (a merge patch keeps a field it does not name: sent as null).
  await cluster.patchSpec(SP, 'sp-bad', { hotPoolSelector: { matchLabels: { tier: 'hot' } }, volumeSelector: { matchLabels: { app: 'nothing' } } });
  const fixed = await untilNodeStatus(cluster, SP, 'sp-bad', 'node-a', (x) => x.phase === 'Active');
  assert.equal(fixed.reason, undefined);
  assert.equal(condition(fixed, 'Valid')?.status, 'True');
});

test('a deleted StoragePolicy CR leaves the loop, and the node deletes its node-status object of it', async () => {
  assert.ok((await status(nodeA)).policies.some((p) => p.name === 'sp-bad'));
  assert.ok(await cluster.nodeStatusObject(SP, 'sp-bad', 'node-a'));
  await cluster.delete(SP, 'sp-bad');
  await until('sp-bad gone from the loop', async () => ((await status(nodeA)).policies.some((p) => p.name === 'sp-bad') ? undefined : true));
  // The fixture runs no garbage collector (no kube-controller-manager): the node's own delete did it.
  await until('node-a\'s object of sp-bad deleted', async () => ((await cluster.nodeStatusObject(SP, 'sp-bad', 'node-a')) ? undefined : true));
  assert.ok((await status(nodeA)).policies.some((p) => p.name === 'sp-a'), 'sp-a stays');
});

test('status is written when it changes, not every pass: 20 passes with nothing new write nothing', async () => {
  const scraped = async () => {
    const m = await scrape(nodeA);
    return { ok: metric(m, 'couchestor_kube_status_writes_total', { result: 'ok' }) ?? 0, pending: metric(m, 'couchestor_kube_status_writes_pending') };
  };
  const settled = (what: string) => until(what, async () => {
    const s = await scraped();
    return s.pending === 0 ? s.ok : undefined;
  });
  await reconcile(nodeA, false);
  const before = await settled('status writes settled before the passes');
  for (let i = 0; i < 20; i++) await reconcile(nodeA, false);
  const afterPasses = await settled('status writes settled after 20 passes');
  console.log(`status writes for 20 passes with nothing changed: ${afterPasses - before}`);
  assert.equal(afterPasses - before, 0, '20 unchanged passes must write nothing');
  // A change is written, once.
  await cluster.patchSpec(SP, 'sp-a', { cooldownPeriod: '1s' });
  const s = await untilNodeStatus(cluster, SP, 'sp-a', 'node-a', (x) => x.observedGeneration === 5);
  assert.equal(s.phase, 'Active');
  assert.equal((await settled('status writes settled after a change')) - afterPasses, 1);
  assert.equal(metric(await scrape(nodeA), 'couchestor_kube_status_writes_total', { result: 'failed' }), 0);
});

test('two daemons with different node names write two node-status objects; the policy itself carries neither', async () => {
  const nodeB = await daemon('node-b');
  const both = await untilNodeStatus(cluster, SP, 'sp-a', 'node-b', (x) => x.phase === 'Active');
  assert.equal(both.observedGeneration, 5);
  await cluster.patchSpec(SP, 'sp-a', { cooldownPeriod: '2s' });
  for (const node of ['node-a', 'node-b']) await untilNodeStatus(cluster, SP, 'sp-a', node, (x) => x.observedGeneration === 6);
  assert.deepEqual(await cluster.statusNodes(SP, 'sp-a'), ['node-a', 'node-b']);
  // The policy itself carries no node's status: nothing a node writes reaches the other nodes' policy watches.
  assert.deepEqual((await cluster.get(SP, 'sp-a')).status ?? {}, {});
  // node-b's ErasureCodingPolicy entries beside node-a's.
  await untilNodeStatus(cluster, ECP, 'ec21', 'node-b', (x) => x.phase === 'Active');
  assert.equal((await cluster.nodeStatus(ECP, 'ec21', 'node-a'))?.phase, 'Active');
  assert.equal(await nodeB.stop(), 0);
  // Stopped, its data directory takes offline commands; the cold tier's policy comes from the cluster there too.
  const r = nodeB.cli('volumes', 'create', 'offline-cold', '4M', '--tier', 'cold');
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /cold tier disabled/);
});

test("a daemon whose user is bound only to deploy/rbac.yaml's ClusterRole works: no 403", async () => {
  const { role: created, binding } = await bindDeployClusterRole(access(kube), 'couchestor-test-user', { kind: 'User', name: 'user' });
  assert.ok(created.status === 201 || created.status === 409, JSON.stringify(created.body));
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
  const nodeC = await daemon('node-c', 'user');
  await untilNodeStatus(cluster, SP, 'sp-a', 'node-c', (x) => x.phase === 'Active');
  await untilNodeStatus(cluster, ECP, 'ec21', 'node-c', (x) => x.phase === 'Active');
  const m = await scrape(nodeC);
  assert.equal(metric(m, 'couchestor_kube_status_writes_total', { result: 'rejected' }), 0);
  // Warnings and errors only: a bare /403/ matched a log line's timestamp (".403Z"), which failed CI once.
  const warnings = nodeC.stderr.split('\n').filter((l) => /^\S+Z (WARN|ERROR) /.test(l));
  assert.deepEqual(warnings.filter((l) => /\b403\b|forbidden|refused/i.test(l)), []);
  assert.doesNotMatch(nodeC.stderr, /forbidden/i);
  await nodeC.stop();
});

test('a volume whose heat passes the CR\'s high watermark moves cold -> hot, its bytes intact', async () => {
  const jobs: FioJob[] = [];
  try {
    await createVolume(nodeA, 'heat', 64 * MiB, { tier: 'cold', labels: { app: 'heat' } });
    const uri = nodeA.exportUri('heat');
    const src = path.join(nodeA.dataDir, 'heat.bin');
    randomFile(src, 16 * MiB);
    nbdcopyIn(src, uri);
    const load = loadJob(uri, 32 * MiB, 16 * MiB);
    jobs.push(load);
    await sleep(WINDOW_SETTLE_MS);
    // The policy comes while the volume is hot: its creation starts the pass that moves it.
    await cluster.create(SP, 'StoragePolicy', 'sp-heat', spSpec({ volumeSelector: { matchLabels: { app: 'heat' } } }));
    const s = await untilNodeStatus(cluster, SP, 'sp-heat', 'node-a', (x) => (x.migrationHistory ?? []).some((h) => h.volume === 'heat'), 120_000);
    assert.deepEqual(
      s.migrationHistory!.map((h) => `${h.volume}:${h.from}->${h.to}:${h.result}`),
      ['heat:cold->hot:succeeded'],
    );
    assert.equal((s.totalMigrations as { succeeded: number }).succeeded, 1);
    assert.equal((await volume(nodeA, 'heat')).tier, 'hot');
    const r = await load.stop();
    assert.equal(r.job.error, 0, r.stderr);
    assert.ok(nbdcopyOut(uri, path.join(nodeA.dataDir, 'heat-out.bin'), 16 * MiB).equals(fs.readFileSync(src)));
  } finally {
    for (const j of jobs) j.kill();
  }
});

/** Bytes the cold pools hold (the segment files' stripes). */
async function coldUsedBytes(d: TestDaemon): Promise<number> {
  const pools = (await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/pools`)).json()) as { tier: string; usedBytes: number }[];
  return pools.filter((p) => p.tier === 'cold').reduce((n, p) => n + p.usedBytes, 0);
}

test('a changed k+m takes effect at the next start: 2+1 stripes stay readable, the cold tier runs 2+2, the status Applied again', async () => {
  await cluster.create(ECP, 'ErasureCodingPolicy', 'ec-change', { dataShards: 2, parityShards: 1 });
  const opts = { kubeconfig: kube.kubeconfig(), nodeName: 'node-d', ecPolicyName: 'ec-change', coldPools: 4 };
  let d = await startKubeDaemon(opts);
  daemons.push(d);
  const before = await destagedColdVolume(d, 'before', 'before.bin');
  const used21 = await coldUsedBytes(d);
  // Two 1 MiB stripes as 2+1: three 512 KiB shards each (and their headers).
  assert.ok(used21 >= 3 * MiB && used21 < 3.5 * MiB, `2+1: ${used21} bytes on the cold pools`);

  await cluster.patchSpec(ECP, 'ec-change', { parityShards: 2 });
  const flagged = await untilNodeStatus(cluster, ECP, 'ec-change', 'node-d', (s) => condition(s, 'Applied')?.reason === 'RestartRequired');
  assert.deepEqual({ phase: flagged.phase, k: flagged.activeDataShards, m: flagged.activeParityShards }, { phase: 'Active', k: 2, m: 1 });

  assert.equal(await d.stop(), 0);
  daemons.splice(daemons.indexOf(d), 1); // the restart below cleans the directory up
  d = await startKubeDaemon({ ...opts, dataDir: d.dataDir });
  daemons.push(d);
  const policy = (await coldStatus(d) as unknown as { policy: { dataShards: number; parityShards: number } }).policy;
  assert.deepEqual([policy.dataShards, policy.parityShards], [2, 2]);
  const s = await untilNodeStatus(cluster, ECP, 'ec-change', 'node-d', (x) => x.activeParityShards === 2 && condition(x, 'Applied')?.status === 'True');
  assert.equal(s.observedGeneration, 2);
  // Valid stayed True across the restart: its transition time is the first run's (read back from node-d's object).
  assert.equal((condition(s, 'Valid') as { lastTransitionTime?: string } | undefined)?.lastTransitionTime, (condition(flagged, 'Valid') as { lastTransitionTime?: string } | undefined)?.lastTransitionTime);
  // The 2+1 stripes read back; new data is striped and read back too.
  assert.ok(nbdcopyOut(d.exportUri('before'), path.join(d.dataDir, 'out1.bin'), 2 * MiB).equals(fs.readFileSync(before)));
  const afterFile = await destagedColdVolume(d, 'after', 'after.bin');
  assert.ok(nbdcopyOut(d.exportUri('after'), path.join(d.dataDir, 'out2.bin'), 2 * MiB).equals(fs.readFileSync(afterFile)));
  // Two more stripes as 2+2: four shards each.
  const added = (await coldUsedBytes(d)) - used21;
  assert.ok(added >= 4 * MiB && added < 4.5 * MiB, `2+2: ${added} bytes added to the cold pools`);
  await reconcile(d, false);
  const counted = await untilNodeStatus(cluster, ECP, 'ec-change', 'node-d', (x) => (x.stripes?.healthy ?? 0) >= 4);
  assert.deepEqual([counted.stripes!.degraded, counted.stripes!.unrecoverable], [0, 0]);
});
