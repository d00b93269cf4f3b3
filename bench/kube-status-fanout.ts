// Bytes one daemon's policy watch receives while K nodes write their status,
// the layout of session 13 (every node's entry merge-patched into status.nodes
// of the policy: each write sent, whole, to every watcher) against this one
// (each node's status an object of its own, StoragePolicyNodeStatus, written
// by the daemon's own StatusWriter: nothing reaches the policy watch).
// A real kube-apiserver + etcd (test/helpers/kube.ts). Each simulated node
// writes a changed, typical entry (~6.4 KiB: 20 decisions, 10 history entries,
// 2 conditions) every WRITE_EVERY_MS, the most statusWriteIntervalMs's default
// allows. The watch is the daemon's: all StoragePolicies, from a
// resourceVersion, with bookmarks.
//   node .NAME-dist/bench/kube-status-fanout.js [--seconds 60] [--runs 3] [--nodes 10,50]
import https from 'node:https';
import { startKube, type KubeEnv } from '../test/helpers/kube.js';
import { access, applyCrds } from '../test/helpers/kube-manifests.js';
import { KubeClient } from '../src/control/kube/client.js';
import { StatusWriter } from '../src/control/kube/status.js';

const WRITE_EVERY_MS = 2_000;
const SP_PATH = '/apis/storage.billyronks.io/v1/storagepolicies';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}
const SECONDS = Number(arg('seconds', '60'));
const RUNS = Number(arg('runs', '3'));
const NODE_COUNTS = arg('nodes', '10,50').split(',').map(Number);

function entry(node: number, round: number): Record<string, unknown> {
  const now = new Date().toISOString();
  return {
    phase: 'Active',
    observedGeneration: 1,
    lastReconcileTime: now,
    watchedVolumes: 20 + round,
    hotVolumes: 5,
    warmVolumes: 5,
    coldVolumes: 10,
    activeMigrations: 1,
    totalMigrations: { succeeded: 12, failed: 1, aborted: 0 },
    conditions: [
      { type: 'Valid', status: 'True', reason: 'SpecValid', message: 'policy is valid', lastTransitionTime: now },
      { type: 'HeatSourceAvailable', status: 'True', reason: 'Reading', message: 'heat readings available', lastTransitionTime: now },
    ],
    decisionsTotal: 20,
    decisions: Array.from({ length: 20 }, (_, i) => ({ volume: `pvc-${String(node).padStart(4, '0')}-${String(i).padStart(31, '0')}`, currentTier: 'warm', targetTier: 'hot', iops: 1234.5 + round, action: 'would-migrate', reason: `${1234.5 + round} IOPS >= 1000 (dryRun)` })),
    migrationHistory: Array.from({ length: 10 }, (_, i) => ({ volume: `pvc-${String(node).padStart(4, '0')}-${String(i).padStart(31, '0')}`, from: 'cold', to: 'warm', result: 'succeeded', startedAt: now, finishedAt: now, bytesCopied: 1073741824 })),
  };
}

/** A watch of every StoragePolicy from `rv`, as the daemon's informer opens it: counts the bytes and events received. */
function countingWatch(kube: KubeEnv, rv: string): { bytes: () => number; events: () => number; close: () => void; opened: Promise<void> } {
  let bytes = 0;
  let events = 0;
  const q = new URLSearchParams({ watch: '1', resourceVersion: rv, allowWatchBookmarks: 'true', timeoutSeconds: String(SECONDS + 60) });
  const req = https.get(`${kube.server}${SP_PATH}?${q}`, { ca: kube.caPem, headers: { authorization: `Bearer ${kube.adminToken}`, accept: 'application/json' } });
  const opened = new Promise<void>((resolve, reject) => {
    req.on('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`watch: ${res.statusCode}`));
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        for (const b of c) if (b === 10) events++;
      });
      res.on('error', () => undefined);
      resolve();
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
  return { bytes: () => bytes, events: () => events, close: () => req.destroy(), opened };
}

async function createPolicy(kube: KubeEnv, name: string): Promise<{ rv: string; uid: string }> {
  const spec = { highWatermarkIOPS: 1000, lowWatermarkIOPS: 10, hotPoolSelector: { matchLabels: { tier: 'hot' } }, coldPoolSelector: { matchLabels: { tier: 'cold' } } };
  const res = await kube.request('POST', SP_PATH, { body: { apiVersion: 'storage.billyronks.io/v1', kind: 'StoragePolicy', metadata: { name }, spec } });
  if (res.status !== 201) throw new Error(`create ${name}: ${res.status} ${JSON.stringify(res.body)}`);
  return { rv: res.body.metadata.resourceVersion, uid: res.body.metadata.uid };
}

/** K nodes writing for SECONDS: the bytes and events the watch received, and the writes made. */
async function run(kube: KubeEnv, layout: 'before' | 'after', k: number, n: number): Promise<{ bytes: number; events: number; writes: number }> {
  const name = `fan-${layout}-${k}-${n}`;
  const { rv, uid } = await createPolicy(kube, name);
  const watch = countingWatch(kube, rv);
  await watch.opened;
  const deadline = Date.now() + SECONDS * 1000;
  let writes = 0;
  let failed = 0;
  const clients: KubeClient[] = [];
  const writers: StatusWriter[] = [];
  try {
    if (layout === 'after') {
      for (let i = 0; i < k; i++) {
        const c = await KubeClient.load(kube.kubeconfig());
        clients.push(c);
        writers.push(new StatusWriter(c, `node-${i}`, WRITE_EVERY_MS));
      }
    }
    await Promise.all(
      Array.from({ length: k }, async (_, i) => {
        // Spread over the interval, as independent nodes are.
        await new Promise((r) => setTimeout(r, Math.floor((WRITE_EVERY_MS * i) / k)));
        for (let round = 0; Date.now() < deadline; round++) {
          const e = entry(i, round);
          if (layout === 'before') {
            // Session 13's StatusWriter: a merge patch of this node's key on /status.
            const res = await kube.request('PATCH', `${SP_PATH}/${name}/status`, { body: { status: { nodes: { [`node-${i}`]: e } } }, contentType: 'application/merge-patch+json' });
            // An apiserver overwhelmed by the fan-out answers 504 (its own deadline): counted, and the node goes on.
            if (res.status === 200) writes++;
            else failed++;
          } else {
            writers[i]!.set('storagepolicies', name, uid, e, JSON.stringify({ ...e, lastReconcileTime: undefined }));
          }
          await new Promise((r) => setTimeout(r, Math.min(WRITE_EVERY_MS, Math.max(0, deadline - Date.now()))));
        }
      }),
    );
    if (layout === 'after') writes = writers.reduce((s, w) => s + w.writes.ok, 0);
    if (failed > 0) console.log(`  ${failed} status writes failed (504: the apiserver's deadline)`);
    return { bytes: watch.bytes(), events: watch.events(), writes };
  } finally {
    watch.close();
    for (const w of writers) await w.stop();
    for (const c of clients) c.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** A fresh apiserver + etcd per run (the before runs write ~0.5 GB a minute into etcd at K=50). */
async function freshRun(layout: 'before' | 'after', k: number, n: number): Promise<{ bytes: number; events: number; writes: number }> {
  const kube = await startKube();
  try {
    await applyCrds(access(kube));
    if (layout === 'before') {
      // Session 13's CRD kept status.nodes; stand-in: a status schema that keeps anything.
      const crdPath = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/storagepolicies.storage.billyronks.io';
      const crd = (await kube.request('GET', crdPath)).body;
      crd.spec.versions[0].schema.openAPIV3Schema.properties.status = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
      const put = await kube.request('PUT', crdPath, { body: crd });
      if (put.status !== 200) throw new Error(`CRD: ${put.status}`);
      // The new schema is served a moment later: a probe write until status.nodes is kept.
      await createPolicy(kube, 'schema-probe');
      for (let i = 0; ; i++) {
        const p = await kube.request('PATCH', `${SP_PATH}/schema-probe/status`, { body: { status: { nodes: { n: { phase: 'Active' } } } }, contentType: 'application/merge-patch+json' });
        if (p.body?.status?.nodes) break;
        if (i > 200) throw new Error('the preserving schema never served');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return await run(kube, layout, k, n);
  } finally {
    await kube.stop();
  }
}

async function main(): Promise<void> {
  const results: Record<string, { bytes: number; events: number; writes: number }[]> = {};
  for (const k of NODE_COUNTS) {
    for (let n = 0; n < RUNS; n++) {
      for (const layout of ['before', 'after'] as const) {
        // A fresh apiserver can come up on the port of the one just stopped, and a kept-alive socket of the
        // fixture's client then meets the old one shutting down (503): such a run is made again, once.
        const r = await freshRun(layout, k, n).catch((err: unknown) => {
          console.log(`${layout} K=${k} run ${n + 1} failed (${(err as Error).message.slice(0, 200)}): again`);
          return freshRun(layout, k, n);
        });
        (results[`${layout} ${k}`] ??= []).push(r);
        console.log(`${layout} K=${k} run ${n + 1}: ${r.bytes} bytes, ${r.events} watch events, ${r.writes} status writes in ${SECONDS} s`);
      }
    }
  }
  console.log(`\nbytes received by one policy watch in ${SECONDS} s, K nodes each writing a changed ~6.4 KiB entry every ${WRITE_EVERY_MS} ms (median of ${RUNS}):`);
  console.log('| K | before (status.nodes) | after (node-status objects) | events before / after | writes before / after |');
  console.log('|---|---|---|---|---|');
  for (const k of NODE_COUNTS) {
    const b = results[`before ${k}`]!;
    const a = results[`after ${k}`]!;
    console.log(`| ${k} | ${median(b.map((x) => x.bytes))} | ${median(a.map((x) => x.bytes))} | ${median(b.map((x) => x.events))} / ${median(a.map((x) => x.events))} | ${median(b.map((x) => x.writes))} / ${median(a.map((x) => x.writes))} |`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
