// The daemon on Kubernetes in tests: a real `couchestor serve` with
// kubernetes.enabled against the real apiserver of test/helpers/kube.ts, its
// custom resources created, patched and read through the fixture's requests,
// and polls with a deadline on the status the daemons write (each node's its
// own object per policy: StoragePolicyNodeStatus, ErasureCodingPolicyNodeStatus). startKubeCluster /
// stopKubeCluster: the cluster (CRDs, ErasureCodingPolicy ec21) of a test file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { TestDaemon } from './daemon.js';
import { startKube, type KubeEnv, type KubeOptions } from './kube.js';
import { access, applyCrds } from './kube-manifests.js';
import { NODE_STATUS_KINDS, nodeStatusName } from '../../src/control/kube/status.js';
import { createVolume, HEAT_SAMPLE_INTERVAL_MS, nbdcopyIn, policySpec, randomFile } from './control-loop.js';

export const SP = 'storagepolicies';
export const ECP = 'erasurecodingpolicies';
const API_VERSION = 'storage.billyronks.io/v1';

export interface KubeDaemonOptions {
  kubeconfig: string;
  nodeName: string;
  ecPolicyName?: string;
  /** Cold pools of the node (default 3: a 2+1 policy). */
  coldPools?: number;
  startSyncTimeoutMs?: number;
  /** kubernetes.watchSilenceTimeoutMs (default: the daemon's, 120 s). */
  watchSilenceTimeoutMs?: number;
  /** kubernetes.departedNodeEntryTimeoutMs (default: the daemon's, 1 h). */
  departedNodeEntryTimeoutMs?: number;
  dataDir?: string;
}

/** couchestor.yaml of a daemon on Kubernetes: hot-0 and cold-0..N-1, no demo volume, passes when asked or on a policy change, fast heat sampling and status writes. */
export function kubeDaemonConfig(o: KubeDaemonOptions): string {
  const cold = o.coldPools ?? 3;
  return YAML.stringify({
    demoVolume: null,
    pools: [
      { name: 'hot-0', tier: 'hot', path: 'pools/hot-0', capacity: 'auto' },
      ...Array.from({ length: cold }, (_, i) => ({ name: `cold-${i}`, tier: 'cold', path: `pools/cold-${i}`, capacity: 'auto' })),
    ],
    control: { reconcileIntervalMs: 3_600_000, heatSampleIntervalMs: HEAT_SAMPLE_INTERVAL_MS },
    kubernetes: {
      enabled: true,
      kubeconfig: o.kubeconfig,
      nodeName: o.nodeName,
      ecPolicyName: o.ecPolicyName ?? 'ec21',
      statusWriteIntervalMs: 200,
      startSyncTimeoutMs: o.startSyncTimeoutMs ?? 20_000,
      ...(o.watchSilenceTimeoutMs === undefined ? {} : { watchSilenceTimeoutMs: o.watchSilenceTimeoutMs }),
      ...(o.departedNodeEntryTimeoutMs === undefined ? {} : { departedNodeEntryTimeoutMs: o.departedNodeEntryTimeoutMs }),
    },
  });
}

/**
 * The cluster a kube test file starts from: the fixture's apiserver (startKube), deploy/crds applied, and
 * ErasureCodingPolicy ec21 (2+1, the cold tier policy kubeDaemonConfig names by default) created.
 */
export async function startKubeCluster(opts?: KubeOptions): Promise<{ kube: KubeEnv; cluster: Cluster }> {
  const kube = await startKube(opts);
  try {
    await applyCrds(access(kube));
    const cluster = new Cluster(kube);
    await cluster.create(ECP, 'ErasureCodingPolicy', 'ec21', { dataShards: 2, parityShards: 1 });
    return { kube, cluster };
  } catch (err) {
    await kube.stop();
    throw err;
  }
}

/** The end of a kube test file: every daemon it started cleaned up, then the cluster stopped. */
export async function stopKubeCluster(kube: KubeEnv | undefined, daemons: TestDaemon[]): Promise<void> {
  for (const d of daemons) await d.cleanup();
  await kube?.stop();
}

export async function startKubeDaemon(o: KubeDaemonOptions): Promise<TestDaemon> {
  const dataDir = o.dataDir ?? fs.mkdtempSync('/tmp/couchestor-kube-');
  fs.mkdirSync(path.join(dataDir, 'policies'), { recursive: true });
  return TestDaemon.start({ dataDir, config: kubeDaemonConfig(o) });
}

/**
 * Cold volume `volume` (4 MiB) on `d` with 2 MiB of random bytes (two 2+1 stripes) written from file `srcName` in
 * its data dir, then destaged to stripes (POST /v1/destage); returns the file's path, to compare reads with.
 */
export async function destagedColdVolume(d: TestDaemon, volume: string, srcName: string): Promise<string> {
  const MiB = 1024 * 1024;
  await createVolume(d, volume, 4 * MiB, { tier: 'cold' });
  const src = path.join(d.dataDir, srcName);
  randomFile(src, 2 * MiB);
  nbdcopyIn(src, d.exportUri(volume));
  const destaged = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/destage`, { method: 'POST' });
  assert.equal(destaged.status, 200, await destaged.text());
  return src;
}

/**
 * The test's side (admin): creates, patches, deletes and reads the custom
 * resources through the fixture's own requests (not the daemon's client).
 */
export class Cluster {
  constructor(private readonly kube: KubeEnv) {}

  private async call(method: string, apiPath: string, body?: unknown, contentType?: string): Promise<KubeObject> {
    const res = await this.kube.request(method, apiPath, { ...(body !== undefined ? { body } : {}), ...(contentType ? { contentType } : {}) });
    if (res.status < 200 || res.status > 299) throw new ClusterError(res.status, `${method} ${apiPath}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as KubeObject;
  }

  create(plural: string, kind: string, name: string, spec: Record<string, unknown>): Promise<KubeObject> {
    return this.call('POST', resourcePath(plural), { apiVersion: API_VERSION, kind, metadata: { name }, spec });
  }

  patchSpec(plural: string, name: string, spec: Record<string, unknown>): Promise<KubeObject> {
    return this.call('PATCH', resourcePath(plural, name), { spec }, 'application/merge-patch+json');
  }

  async delete(plural: string, name: string): Promise<void> {
    await this.call('DELETE', resourcePath(plural, name));
  }

  get(plural: string, name: string): Promise<KubeObject> {
    return this.call('GET', resourcePath(plural, name));
  }

  /** `node`'s status of policy plural/name (the status of its node-status object), or undefined (none yet, or gone). */
  async nodeStatus(plural: string, name: string, node: string): Promise<NodeStatus | undefined> {
    return (await this.nodeStatusObject(plural, name, node))?.status as NodeStatus | undefined;
  }

  /** `node`'s node-status object of policy plural/name (StoragePolicyNodeStatus, ...), or undefined. */
  async nodeStatusObject(plural: string, name: string, node: string): Promise<KubeObject | undefined> {
    try {
      return await this.get(nodeStatusPlural(plural), nodeStatusName(name, node));
    } catch (err) {
      if (err instanceof ClusterError && err.code === 404) return undefined;
      throw err;
    }
  }

  /** The nodes that have a node-status object for policy plural/name (found by its labels, as kubectl -l does), sorted. */
  async statusNodes(plural: string, name: string): Promise<string[]> {
    const q = new URLSearchParams({ labelSelector: `storage.billyronks.io/policy=${name}` });
    const list = (await this.call('GET', `${resourcePath(nodeStatusPlural(plural))}?${q}`)) as unknown as { items: { spec: { node: string } }[] };
    return list.items.map((o) => o.spec.node).sort();
  }

  /**
   * A node-status object as a node that last wrote at `reportTime` would have left it (no daemon: a simulated
   * node). Its labels, annotations and ownerReference as the daemon's writer sets them.
   */
  async writeNodeStatus(plural: string, name: string, node: string, status: Record<string, unknown>, reportTime = new Date().toISOString()): Promise<KubeObject> {
    const kinds = NODE_STATUS_KINDS[plural]!;
    const owner = await this.get(plural, name);
    // A name no Node can have ('.', 'Worker-1': a hand-made object) makes no object name or label value of its own.
    const valid = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node);
    const obj = {
      apiVersion: API_VERSION,
      kind: kinds.kind,
      metadata: {
        name: valid ? nodeStatusName(name, node) : `${name}.hand-made.${Buffer.from(node).toString('hex')}`,
        labels: { 'storage.billyronks.io/policy': name, ...(valid ? { 'storage.billyronks.io/node': node } : {}) },
        annotations: { 'storage.billyronks.io/node': node, 'storage.billyronks.io/last-report-time': reportTime },
        ownerReferences: [{ apiVersion: API_VERSION, kind: kinds.ownerKind, name, uid: (owner.metadata as { uid: string }).uid }],
      },
      spec: { policy: name, node },
      status,
    };
    try {
      return await this.call('POST', resourcePath(kinds.plural), obj);
    } catch (err) {
      if (!(err instanceof ClusterError && err.code === 409)) throw err;
      const ops = [{ op: 'add', path: '/metadata/annotations', value: obj.metadata.annotations }, { op: 'add', path: '/status', value: status }];
      return this.call('PATCH', resourcePath(kinds.plural, obj.metadata.name), ops, 'application/json-patch+json');
    }
  }
}

class ClusterError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** The plural of the node-status kind of a policy kind: storagepolicies -> storagepolicynodestatuses. */
export function nodeStatusPlural(plural: string): string {
  return NODE_STATUS_KINDS[plural]!.plural;
}

/** /apis/storage.billyronks.io/v1/PLURAL[/NAME] */
function resourcePath(plural: string, name?: string): string {
  return `/apis/storage.billyronks.io/v1/${plural}${name !== undefined ? `/${encodeURIComponent(name)}` : ''}`;
}

interface KubeObject {
  metadata: { name: string; generation?: number; uid?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: { kind: string; name: string; uid: string }[] };
  spec?: unknown;
  status?: unknown;
}

export interface NodeStatus {
  phase: string;
  reason?: string;
  observedGeneration?: number;
  conditions?: { type: string; status: string; reason: string; message: string }[];
  decisions?: { volume: string; action: string; targetTier: string | null; reason: string }[];
  migrationHistory?: { volume: string; from: string; to: string; result: string }[];
  activeDataShards?: number;
  activeParityShards?: number;
  coldPools?: number;
  stripes?: { healthy: number; degraded: number; rebuilding: number; unrecoverable: number };
  [k: string]: unknown;
}

/** A StoragePolicy CR's spec: the control-loop tests' watermarks and heat window, no ecPolicyRef; `spec` entries override (undefined deletes). */
export function spSpec(spec: Record<string, unknown> = {}): Record<string, unknown> {
  return policySpec({ ecPolicyRef: undefined, ...spec });
}

/**
 * Polls `probe` until it returns something other than undefined, at most
 * timeoutMs; the error names `what` and the last value seen.
 */
export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last !== undefined ? ` (last error: ${(last as Error).message ?? String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Polls `node`'s status of the policy (its node-status object) until `ok` holds; returns it. */
export function untilNodeStatus(cluster: Cluster, plural: string, name: string, node: string, ok: (s: NodeStatus) => boolean, timeoutMs = 20_000): Promise<NodeStatus> {
  let seen: NodeStatus | undefined;
  return until(
    `${plural}/${name}: ${node}'s status`,
    async () => {
      seen = await cluster.nodeStatus(plural, name, node);
      return seen && ok(seen) ? seen : undefined;
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${JSON.stringify(seen)}`);
  });
}

export function condition(s: NodeStatus, type: string): { status: string; reason: string; message: string } | undefined {
  return s.conditions?.find((c) => c.type === type);
}

/** GET url (no auth): status and body. */
export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

/**
 * A kubeconfig (file kubeconfig-NAME.yaml in dir) for the fixture's cluster
 * whose user is `user` as a kubeconfig spells it: { tokenFile } (a rotated,
 * projected token as mounted into a pod), { exec: ... } (EKS, GKE, AKS), ...
 */
export function kubeconfigWithUser(kube: { server: string; caData: string }, dir: string, name: string, user: Record<string, unknown>): string {
  const file = path.join(dir, `kubeconfig-${name}.yaml`);
  fs.writeFileSync(
    file,
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fixture', cluster: { server: kube.server, 'certificate-authority-data': kube.caData } }],
      users: [{ name, user }],
      contexts: [{ name: 'fixture', context: { cluster: 'fixture', user: name } }],
      'current-context': 'fixture',
    }),
  );
  return file;
}

/** The fixture's kube-apiserver process serving `server` (found by its --secure-port in /proc), e.g. to SIGSTOP it. */
export function apiserverPid(server: string): number {
  const port = new URL(server).port;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes('kube-apiserver') && cmd.includes(`--secure-port=${port}\0`)) return Number(pid);
  }
  throw new Error(`no kube-apiserver on port ${port}`);
}
