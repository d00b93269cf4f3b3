// Where the apiserver is and how to authenticate: @kubernetes/client-node's
// KubeConfig (a kubeconfig file's current context, or the pod's service
// account), so every user kind it knows works: token, client certificate,
// basic auth, exec plugins and auth providers (EKS, GKE, AKS, OIDC), the
// service account's token file read again as it rotates, proxy-url,
// tls-server-name, impersonation. The requests themselves are the daemon's own
// (client.ts): the library's CustomObjectsApi and Watch have no deadline (a
// hung apiserver held a list and a watch for good: checked, 45 s and counting).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import YAML from 'yaml';

export interface ApiServerAccess {
  server: string;
  /** The agent for every request (keep-alive; the kubeconfig's CA, client certificate, proxy). */
  agent(): Promise<http.Agent>;
  /** The credential headers of one request (Authorization, Impersonate-User): an exec plugin's or a token file's current token. */
  headers(): Promise<Record<string, string>>;
  /**
   * Reads the credentials again now (the kubeconfig or the service account, a
   * token file, a new exec plugin run), past the library's caches (a token file
   * every 60 s, an exec token until its stated expiry): after a 401. The agent
   * is kept unless its TLS material changed (a client certificate rotated).
   */
  reload(): Promise<void>;
}

export class InvalidKubeconfig extends Error {
  override name = 'InvalidKubeconfig';
}

/**
 * From a kubeconfig file, or (null) the pod's service account. The library is
 * loaded here, only on Kubernetes: its import costs ~0.7 s and ~70 MB of RSS
 * (measured: 0.64-1.10 s, 113-117 MB against 40 MB for an empty node), which
 * no other command and no daemon off Kubernetes should pay.
 */
export async function loadAccess(kubeconfig: string | null): Promise<ApiServerAccess> {
  let kc = await loadKubeConfig(kubeconfig);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new InvalidKubeconfig(`kubeconfig ${kubeconfig}: no current-context (or it names no context or no cluster)`);
  const server = cluster.server.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(server)) throw new InvalidKubeconfig(`kubeconfig ${kubeconfig}: server ${server} is not an http(s) URL`);
  let agent: Promise<http.Agent> | null = null;
  /** The TLS material the agent was made with: a reload makes a new agent only when it changed. */
  let agentTls: string | null = null;
  // Both the agent (TLS material) and the headers come from here: its errors never quote what
  // an exec plugin printed (the parser's message does, and it may be a token).
  const apply = async (): Promise<https.RequestOptions> => {
    const opts: https.RequestOptions = { headers: {} };
    try {
      await kc.applyToHTTPSOptions(opts);
    } catch (err) {
      if (err instanceof SyntaxError) throw new Error('the kubeconfig user\'s exec plugin printed something that is not an ExecCredential (JSON); not shown, it may hold a token');
      throw new Error(`kubeconfig credentials: ${firstLine((err as Error).message).slice(0, 300)}`);
    }
    return opts;
  };
  const tlsOf = (o: https.RequestOptions): string => JSON.stringify([o.ca, o.cert, o.key, o.rejectUnauthorized, o.servername].map((x) => (Buffer.isBuffer(x) ? x.toString('base64') : x ?? null)));
  return {
    server,
    agent() {
      agent ??= apply().then((o) => {
        agentTls = tlsOf(o);
        // A proxy: the library's agent for it. Else one of ours with keep-alive (one TLS handshake for the many status writes).
        // At most one idle connection kept: besides the two watches, requests mostly go one at a time (status writes,
        // a prune round), and without a bound a burst at start (both lists, this node's own status read, a first
        // write) left every socket it opened connected for good, idle, to the apiserver from every node.
        return cluster.proxyUrl
          ? (o.agent as http.Agent)
          : server.startsWith('https:')
            ? new https.Agent({ keepAlive: true, maxSockets: 8, maxFreeSockets: 1, ca: o.ca, cert: o.cert, key: o.key, rejectUnauthorized: o.rejectUnauthorized ?? true, ...(o.servername ? { servername: o.servername } : {}) })
            : new http.Agent({ keepAlive: true, maxSockets: 8, maxFreeSockets: 1 });
      });
      agent.catch(() => (agent = null));
      return agent;
    },
    async headers() {
      const o = await apply();
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === 'string') out[k.toLowerCase()] = v.trim();
      // A token file written with a newline at its end: the header must not carry it.
      if (o.auth) out.authorization = `Basic ${Buffer.from(o.auth).toString('base64')}`;
      return out;
    },
    async reload() {
      const next = await loadKubeConfig(kubeconfig);
      // The same server: a kubeconfig edited to point elsewhere takes effect at the next start, as before.
      kc = next;
      if (agent !== null && agentTls !== null) {
        const o = await apply();
        if (tlsOf(o) !== agentTls) agent = null;
      }
    },
  };
}

/** A KubeConfig from a kubeconfig file, or (null) the pod's service account, checked. */
async function loadKubeConfig(kubeconfig: string | null): Promise<KubeConfig> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (kubeconfig === null) {
    if (!process.env.KUBERNETES_SERVICE_HOST) throw new InvalidKubeconfig("kubernetes.kubeconfig is null (the pod's service account) but KUBERNETES_SERVICE_HOST is not set: not in a pod; name a kubeconfig file");
    process.env.KUBERNETES_SERVICE_PORT ??= '443';
    kc.loadFromCluster();
    for (const f of ['ca.crt', 'token']) {
      const file = path.join('/var/run/secrets/kubernetes.io/serviceaccount', f);
      if (!fs.existsSync(file)) throw new InvalidKubeconfig(`in a pod, but the service account's ${f} is not at ${file} (automountServiceAccountToken false?)`);
    }
  } else {
    fromFile(kc, kubeconfig);
  }
  return kc;
}

function fromFile(kc: KubeConfig, file: string): void {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InvalidKubeconfig(`kubeconfig ${file}: ${(err as Error).message}`);
  }
  // Parsed here first for the error: a YAML error's message quotes the lines around it, which may hold a token.
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    const pos = (err as { linePos?: [{ line: number; col: number }] }).linePos?.[0];
    throw new InvalidKubeconfig(`kubeconfig ${file}: not valid YAML${pos ? ` (line ${pos.line}, column ${pos.col})` : ''}: ${String((err as { code?: string }).code ?? 'syntax error')}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidKubeconfig(`kubeconfig ${file}: not a YAML mapping`);
  try {
    kc.loadFromFile(file);
  } catch (err) {
    throw new InvalidKubeconfig(`kubeconfig ${file}: ${firstLine((err as Error).message)}`);
  }
  // A user's tokenFile (kubectl's name for it; the library reads only token-file, once): read again as it rotates.
  const users = (doc as { users?: { name?: unknown; user?: Record<string, unknown> }[] }).users;
  for (const u of kc.users) {
    const raw = Array.isArray(users) ? users.find((r) => r?.name === u.name)?.user : undefined;
    if (!u.token && !u.exec && !u.authProvider && typeof raw?.tokenFile === 'string') {
      const tokenFile = path.resolve(path.dirname(path.resolve(file)), raw.tokenFile);
      if (!fs.existsSync(tokenFile)) throw new InvalidKubeconfig(`kubeconfig ${file}: user ${u.name}'s tokenFile ${tokenFile} is not there`);
      Object.assign(u, { authProvider: { name: 'tokenFile', config: { tokenFile } } });
    }
  }
}

function firstLine(s: string): string {
  return s.split('\n', 1)[0]!;
}
