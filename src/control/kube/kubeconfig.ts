// Where the apiserver is and how to authenticate: a kubeconfig file's current
// context (token, token file, client certificate, basic auth), or the pod's
// service account. Own code, not @kubernetes/client-node's KubeConfig: the
// daemon needs only this and node:https for its four calls (2.x of that
// package, the dependency when this was written, threw at import under Node
// 20); exec and auth-provider users are refused with a clear message.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** A projected service-account token rotates: read again at most this often. */
const TOKEN_REREAD_MS = 60_000;

export interface ApiServerAccess {
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized: boolean;
  servername?: string;
  /** The Authorization header value, if any (read again from a token file as it rotates). */
  authorization(): string | undefined;
}

export class InvalidKubeconfig extends Error {
  override name = 'InvalidKubeconfig';
}

interface Named<T> {
  name: string;
  [k: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}

/** From a kubeconfig file, or (null) the pod's service account. */
export function loadAccess(kubeconfig: string | null): ApiServerAccess {
  return kubeconfig === null ? inCluster() : fromFile(kubeconfig);
}

function inCluster(): ApiServerAccess {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new InvalidKubeconfig("kubernetes.kubeconfig is null (the pod's service account) but KUBERNETES_SERVICE_HOST is not set: not in a pod; name a kubeconfig file");
  const tokenFile = path.join(SERVICE_ACCOUNT_DIR, 'token');
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: readFile(path.join(SERVICE_ACCOUNT_DIR, 'ca.crt'), 'the service account CA'),
    rejectUnauthorized: true,
    authorization: bearerFromFile(tokenFile),
  };
}

function fromFile(file: string): ApiServerAccess {
  let doc: Record<string, unknown>;
  try {
    doc = YAML.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new InvalidKubeconfig(`kubeconfig ${file}: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== 'object') throw new InvalidKubeconfig(`kubeconfig ${file}: not a YAML mapping`);
  const dir = path.dirname(path.resolve(file));
  const ctxName = doc['current-context'];
  const contexts = (doc.contexts ?? []) as Named<Record<string, unknown>>[];
  const ctx = (typeof ctxName === 'string' && ctxName !== '' ? contexts.find((c) => c.name === ctxName) : contexts.length === 1 ? contexts[0] : undefined)?.context;
  if (!ctx) throw new InvalidKubeconfig(`kubeconfig ${file}: no current-context (or it names no context)`);
  const cluster = ((doc.clusters ?? []) as Named<Record<string, unknown>>[]).find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster || typeof cluster.server !== 'string') throw new InvalidKubeconfig(`kubeconfig ${file}: context names cluster ${String(ctx.cluster)}, which has no server`);
  const user = (((doc.users ?? []) as Named<Record<string, unknown>>[]).find((u) => u.name === ctx.user)?.user ?? {}) as Record<string, unknown>;
  for (const k of ['exec', 'auth-provider']) {
    if (user[k] !== undefined) throw new InvalidKubeconfig(`kubeconfig ${file}: user ${String(ctx.user)} authenticates with ${k}, which this daemon does not run: give it a token, a token file or a client certificate`);
  }
  const pem = (dataKey: string, fileKey: string, what: string): Buffer | undefined => {
    const data = cluster[dataKey] ?? user[dataKey];
    if (typeof data === 'string') return Buffer.from(data, 'base64');
    const f = cluster[fileKey] ?? user[fileKey];
    return typeof f === 'string' ? readFile(path.resolve(dir, f), what) : undefined;
  };
  let authorization: () => string | undefined = () => undefined;
  if (typeof user.token === 'string') {
    const header = `Bearer ${user.token}`;
    authorization = () => header;
  } else if (typeof user.tokenFile === 'string') {
    authorization = bearerFromFile(path.resolve(dir, user.tokenFile));
  } else if (typeof user.username === 'string') {
    const header = `Basic ${Buffer.from(`${user.username}:${String(user.password ?? '')}`).toString('base64')}`;
    authorization = () => header;
  }
  const server = cluster.server.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(server)) throw new InvalidKubeconfig(`kubeconfig ${file}: server ${server} is not an http(s) URL`);
  return {
    server,
    ca: pem('certificate-authority-data', 'certificate-authority', 'the cluster CA'),
    cert: typeof user['client-certificate-data'] === 'string' ? Buffer.from(user['client-certificate-data'], 'base64') : typeof user['client-certificate'] === 'string' ? readFile(path.resolve(dir, user['client-certificate']), 'the client certificate') : undefined,
    key: typeof user['client-key-data'] === 'string' ? Buffer.from(user['client-key-data'], 'base64') : typeof user['client-key'] === 'string' ? readFile(path.resolve(dir, user['client-key']), 'the client key') : undefined,
    rejectUnauthorized: cluster['insecure-skip-tls-verify'] !== true,
    ...(typeof cluster['tls-server-name'] === 'string' ? { servername: cluster['tls-server-name'] } : {}),
    authorization,
  };
}

function readFile(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new InvalidKubeconfig(`cannot read ${what} (${file}): ${(err as Error).message}`);
  }
}

function bearerFromFile(file: string): () => string | undefined {
  let token = readFile(file, 'the token').toString('utf8').trim();
  let readAtMs = Date.now();
  return () => {
    if (Date.now() - readAtMs >= TOKEN_REREAD_MS) {
      readAtMs = Date.now();
      try {
        token = fs.readFileSync(file, 'utf8').trim();
      } catch {
        /* keep the last one: the next read may work */
      }
    }
    return `Bearer ${token}`;
  };
}
