// The manifests of deploy/ on a real kube-apiserver (test/helpers/kube.ts):
// applyCrds installs deploy/crds/*.yaml and waits until they are Established;
// kubeRequest is one raw API call (status code and body as the apiserver sent
// them: the tests assert 422 / 403 and their messages, and patch with
// merge-patch+json); createObject maps a manifest's kind to its API path;
// bindDeployClusterRole gives a user or group deploy/rbac.yaml's ClusterRole.
// Plain node:https, no @kubernetes/client-node: its undici 8 does not load on
// Node 20 (zlib.createZstdDecompress), so this helper takes the fixture's
// server, CA and token (or anything with a client-node KubeConfig's methods).
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

/** deploy/ of the repository (the build is one level below the root: dist/ or .NAME-dist/). */
export const DEPLOY_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../deploy');
export const CRD_DIR = path.join(DEPLOY_DIR, 'crds');
export const GROUP = 'storage.billyronks.io';
export const SP_PATH = `/apis/${GROUP}/v1/storagepolicies`;
export const ECP_PATH = `/apis/${GROUP}/v1/erasurecodingpolicies`;

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

/** Every document of a manifest file (a `---` separated YAML stream). */
export function loadManifests(file: string): KubeObject[] {
  return YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
      return d.toJS() as KubeObject | null;
    })
    .filter((o): o is KubeObject => o !== null);
}

/** Who calls which apiserver: the fixture's server, caPem (its self-signed serving cert) and a bearer token. */
export interface KubeAccess {
  server: string;
  caPem: string;
  token: string;
}

/** The part of a @kubernetes/client-node KubeConfig this helper uses (structural: nothing of client-node is loaded). */
export interface KubeConfigLike {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

export type KubeTarget = KubeAccess | KubeConfigLike;

/** A fixture's user as a KubeAccess: access(kube) is the admin, access(kube, 'user') an unprivileged user. */
export function access(kube: { server: string; caPem: string; userToken(name: string): string }, user = 'admin'): KubeAccess {
  return { server: kube.server, caPem: kube.caPem, token: kube.userToken(user) };
}

export interface KubeResponse<T = any> { // eslint-disable-line @typescript-eslint/no-explicit-any -- a JSON body, checked by the caller
  status: number;
  body: T;
  /** The apiserver's `Warning` headers (e.g. unknown fields pruned). */
  warnings: string[];
}

/** Bound on one API call: the apiserver is local; a hang is a failure. */
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * One API request as the user of `kc` (its token, client certificate and CA).
 * A JSON body is sent as `contentType` (default application/json; PATCH takes
 * application/merge-patch+json; `accept` may ask for a Table, as kubectl get
 * does). Resolves with any status: the caller asserts it.
 */
export async function kubeRequest(
  kc: KubeTarget,
  method: string,
  apiPath: string,
  body?: unknown,
  contentType = 'application/json',
  accept = 'application/json',
): Promise<KubeResponse> {
  const opts: https.RequestOptions = { method, headers: { Accept: accept } };
  let server: string;
  if ('token' in kc) {
    server = kc.server;
    opts.ca = kc.caPem;
    Object.assign(opts.headers!, { Authorization: `Bearer ${kc.token}` });
  } else {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeRequest: the KubeConfig has no current cluster');
    server = cluster.server;
    await kc.applyToHTTPSOptions(opts);
  }
  const url = new URL(apiPath, server);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  if (payload) Object.assign(opts.headers!, { 'Content-Type': contentType, 'Content-Length': payload.length });
  return new Promise<KubeResponse>((resolve, reject) => {
    const req = https.request(url, { ...opts, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON (e.g. a proxy's error page): the text as it came
        }
        const w = res.headers.warning;
        resolve({ status: res.statusCode ?? 0, body: parsed, warnings: w === undefined ? [] : Array.isArray(w) ? w : [w] });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${apiPath}: no answer in ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The collection path of a manifest's kind (the kinds deploy/ uses; no discovery needed). */
export function collectionPath(obj: KubeObject): string {
  const ns = obj.metadata.namespace;
  const core = (plural: string) => `/api/v1/namespaces/${ns}/${plural}`;
  switch (`${obj.apiVersion}/${obj.kind}`) {
    case 'v1/Namespace':
      return '/api/v1/namespaces';
    case 'v1/ServiceAccount':
      return core('serviceaccounts');
    case 'v1/ConfigMap':
      return core('configmaps');
    case 'apps/v1/DaemonSet':
      return `/apis/apps/v1/namespaces/${ns}/daemonsets`;
    case 'networking.k8s.io/v1/NetworkPolicy':
      return `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`;
    case 'rbac.authorization.k8s.io/v1/ClusterRole':
      return '/apis/rbac.authorization.k8s.io/v1/clusterroles';
    case 'rbac.authorization.k8s.io/v1/ClusterRoleBinding':
      return '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings';
    case 'apiextensions.k8s.io/v1/CustomResourceDefinition':
      return '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
    case `${GROUP}/v1/StoragePolicy`:
      return SP_PATH;
    case `${GROUP}/v1/ErasureCodingPolicy`:
      return ECP_PATH;
    case `${GROUP}/v1/StoragePolicyNodeStatus`:
      return `/apis/${GROUP}/v1/storagepolicynodestatuses`;
    case `${GROUP}/v1/ErasureCodingPolicyNodeStatus`:
      return `/apis/${GROUP}/v1/erasurecodingpolicynodestatuses`;
    default:
      throw new Error(`collectionPath: no path known for ${obj.apiVersion} ${obj.kind}`);
  }
}

/**
 * POSTs one object (dryRun: the apiserver validates and admits it, stores
 * nothing: `?dryRun=All`). fieldValidation Strict makes an unknown field an
 * error, as `kubectl apply` does by default.
 */
export function createObject(
  kc: KubeTarget,
  obj: KubeObject,
  opts: { dryRun?: boolean; fieldValidation?: 'Ignore' | 'Warn' | 'Strict' } = {},
): Promise<KubeResponse> {
  const q = new URLSearchParams();
  if (opts.dryRun) q.set('dryRun', 'All');
  if (opts.fieldValidation) q.set('fieldValidation', opts.fieldValidation);
  const qs = q.toString();
  return kubeRequest(kc, 'POST', collectionPath(obj) + (qs ? `?${qs}` : ''), obj);
}

/** Deadline for a CRD to become Established (the apiserver's own controller; well under a second when idle). */
const ESTABLISHED_TIMEOUT_MS = 30_000;
const POLL_MS = 50;

/**
 * Creates every CRD of deploy/crds (replaces one that exists) as `kc` (an
 * admin: access(kube)), and resolves once each is Established (its API served).
 * Returns the CRDs' names.
 */
export async function applyCrds(kc: KubeTarget): Promise<string[]> {
  const files = fs.readdirSync(CRD_DIR).filter((f) => f.endsWith('.yaml')).sort();
  const crds = files.flatMap((f) => loadManifests(path.join(CRD_DIR, f)));
  const crdPath = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
  for (const crd of crds) {
    let res = await createObject(kc, crd);
    if (res.status === 409) {
      const cur = await kubeRequest(kc, 'GET', `${crdPath}/${crd.metadata.name}`);
      const next = { ...crd, metadata: { ...crd.metadata, resourceVersion: cur.body.metadata.resourceVersion } };
      res = await kubeRequest(kc, 'PUT', `${crdPath}/${crd.metadata.name}`, next);
    }
    if (res.status !== 201 && res.status !== 200) {
      throw new Error(`CRD ${crd.metadata.name} refused: ${res.status} ${JSON.stringify(res.body?.message ?? res.body)}`);
    }
  }
  for (const crd of crds) await waitEstablished(kc, crd.metadata.name);
  return crds.map((c) => c.metadata.name);
}

/** Polls the CRD until its Established condition is True (NamesAccepted False fails at once). */
export async function waitEstablished(kc: KubeTarget, name: string, timeoutMs = ESTABLISHED_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const res = await kubeRequest(kc, 'GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    const conds: { type: string; status: string; message?: string }[] = res.body?.status?.conditions ?? [];
    if (conds.some((c) => c.type === 'Established' && c.status === 'True')) return;
    const names = conds.find((c) => c.type === 'NamesAccepted');
    if (names?.status === 'False') throw new Error(`CRD ${name}: names not accepted: ${names.message}`);
    last = JSON.stringify(conds);
    if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms (conditions: ${last})`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/**
 * deploy/rbac.yaml's ClusterRole created, and bound by ClusterRoleBinding `bindingName` to `subject` (a User or a
 * Group, e.g. system:serviceaccounts): both answers as the apiserver gave them, for the caller to assert.
 */
export async function bindDeployClusterRole(kc: KubeTarget, bindingName: string, subject: { kind: 'User' | 'Group'; name: string }): Promise<{ role: KubeResponse; binding: KubeResponse }> {
  const clusterRole = loadManifests(path.join(DEPLOY_DIR, 'rbac.yaml')).find((o) => o.kind === 'ClusterRole')!;
  const role = await createObject(kc, clusterRole);
  const binding = await createObject(kc, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: bindingName },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole.metadata.name },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', ...subject }],
  });
  return { role, binding };
}
