// Test fixture: a real kube-apiserver over a real etcd (both built by
// scripts/k8s-fixtures.sh into a cache outside the repo), on free loopback
// ports in a fresh temp dir, with static-token users and RBAC.
// request() and watch() are plain node:https, so tests see status codes and
// bodies exactly as sent; kc() gives a @kubernetes/client-node KubeConfig.
import crypto from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

export const FIXTURES_DIR = process.env.COUCHESTOR_FIXTURES_DIR ?? '/var/cache/couchestor-fixtures';
export const ADMIN_USER = 'admin';

export interface KubeOptions {
  /** Unprivileged users (no bindings, group system:authenticated only) given static tokens. Default ['user']. */
  users?: string[];
  /** Deadline for etcd and for the apiserver's /readyz, each start. Default 90 000 ms. */
  readyTimeoutMs?: number;
  /** Tests of the fixture only: the ports the first start attempt uses (instead of free ones). */
  firstPortsForTest?: { etcdClient?: number; apiserver?: number };
}

export interface KubeEnv {
  /** https://127.0.0.1:PORT */
  server: string;
  /** The apiserver's self-signed serving cert chain (PEM), read from <cert-dir>/apiserver.crt. */
  caPem: string;
  /** caPem base64-encoded: a kubeconfig's certificate-authority-data (and client-node's Cluster.caData). */
  caData: string;
  /** Bearer token of `admin` (group system:masters). */
  adminToken: string;
  /** Bearer token of a user: 'admin' or one of opts.users; throws for any other name. */
  userToken(name: string): string;
  /** Path of a kubeconfig file (server, CA, token) for that user; default admin. */
  kubeconfig(user?: string): string;
  /**
   * A @kubernetes/client-node KubeConfig for that user (default admin), trusting the serving cert
   * (caData, no skipTLSVerify).
   */
  kc(user?: string): KubeConfig;
  /** As kc(), authenticating with any bearer token (e.g. a ServiceAccount's). */
  kcForToken(token: string): KubeConfig;
  /** One API call over TLS trusting the serving cert: status and body (JSON-parsed when it is JSON) as the apiserver sent them. */
  request(method: string, apiPath: string, opts?: KubeRequestOptions): Promise<KubeResponse>;
  /**
   * Opens a watch (`?watch=1` is added) and calls onEvent per event. Resolves once the apiserver
   * answered 200 (the watch is open: later changes are seen); rejects with .status otherwise (a
   * just-established CRD's watch cache answers 429 until it has initialised).
   */
  watch(apiPath: string, onEvent: (type: string, obj: any) => void, opts?: { user?: string; token?: string }): Promise<KubeWatch>; // eslint-disable-line @typescript-eslint/no-explicit-any -- a JSON object
  /** Polls the CRD (e.g. 'widgets.fixture.example.com') until Established: its REST endpoint serves. */
  waitCrdEstablished(name: string, timeoutMs?: number): Promise<void>;
  /** Creates ServiceAccount namespace/name if missing and returns a token for it (TokenRequest, 1 h). */
  serviceAccountToken(namespace: string, name: string): Promise<string>;
  /** The temp dir (etcd data, certs, logs, kubeconfigs); removed by stop(). */
  dir: string;
  /** etcd's client URL, on the port the start settled on (a port taken meanwhile is tried again on another). */
  etcdUrl: string;
  /** The apiserver's log so far (all starts). */
  apiserverLog(): string;
  /** Stops the apiserver and starts it again on the same port and certs; etcd keeps running. */
  restartApiserver(): Promise<void>;
  /** Kills both processes and removes the temp dir. */
  stop(): Promise<void>;
}

export interface KubeRequestOptions {
  /** JSON-encoded unless a string. */
  body?: unknown;
  /** Default application/json; e.g. application/merge-patch+json for PATCH. */
  contentType?: string;
  /** A fixture user (default admin), or: */
  user?: string;
  /** any bearer token (wins over user). */
  token?: string;
}

export interface KubeResponse<T = any> { // eslint-disable-line @typescript-eslint/no-explicit-any -- a JSON body, checked by the caller
  status: number;
  body: T;
}

export interface KubeWatch {
  /** Resolves when the stream ends (closed by either side); rejects on a stream error other than close(). */
  ended: Promise<void>;
  close(): void;
}

function binary(name: string): string {
  const p = path.join(FIXTURES_DIR, name);
  if (!fs.existsSync(p)) {
    throw new Error(`${p} is missing: build the Kubernetes test fixtures first with \`bash scripts/k8s-fixtures.sh\` (set COUCHESTOR_FIXTURES_DIR to use another cache dir)`);
  }
  return p;
}

/**
 * The fixture's watchdog (sh -c WATCHDOG_SH name DIR): one pid a line on stdin
 * ("-PID": that one has exited; "done": stop() cleaned up, exit). At EOF
 * without "done", SIGKILLs the pids it holds and removes DIR.
 */
const WATCHDOG_SH = `trap '' INT TERM HUP
pids=' '
while read -r line; do
  case $line in
    done) exit 0 ;;
    -*) pids=$(printf '%s' "$pids" | sed "s/ \${line#-} / /") ;;
    *) pids="$pids$line " ;;
  esac
done
[ -n "\${pids# }" ] && kill -KILL $pids 2>/dev/null
rm -rf "$1"`;

const PORT_ATTEMPTS = 3;

/** A waitReady error of a process that exited because its port was taken (the log tail says so). */
function portInUse(err: unknown): boolean {
  const m = (err as Error).message;
  return / exited \(/.test(m) && /address already in use/.test(m);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function tail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** GET url; resolves the status code (0 on a connection error). */
function probe(url: string, opts: https.RequestOptions): Promise<number> {
  return new Promise((resolve) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { ...opts, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Polls until probe() gives 200, the process exits, or the deadline passes. */
async function waitReady(what: string, url: string, opts: https.RequestOptions, proc: ChildProcess, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 0;
  for (let delayMs = 20; ; delayMs = Math.min(delayMs * 2, 250)) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before ready; log tail (${logFile}):\n${tail(logFile)}`);
    }
    last = await probe(url, opts);
    if (last === 200) return;
    if (Date.now() > deadline) {
      throw new Error(`${what} not ready after ${timeoutMs} ms (last ${url} status ${last || 'connection error'}); log tail (${logFile}):\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, delayMs));
  }
}

/** SIGTERM, then SIGKILL if it has not exited within graceMs. */
async function kill(proc: ChildProcess, graceMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function startKube(opts: KubeOptions = {}): Promise<KubeEnv> {
  const etcdBin = binary('etcd');
  const apiserverBin = binary('kube-apiserver');
  const timeoutMs = opts.readyTimeoutMs ?? 90_000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-kube-'));
  const procs = new Set<ChildProcess>();
  // A test process that dies without stop() must not leave etcd or the apiserver behind.
  // On a normal exit (an uncaught error, process.exit) this handler kills them:
  const reap = () => {
    for (const p of procs) p.kill('SIGKILL');
  };
  process.once('exit', reap);
  // A SIGKILL or an unhandled SIGTERM of the test process runs no handler: a
  // watchdog does it then. It reads the fixture's pids on a pipe from this
  // process; when the pipe ends without "done" (this process is gone, however
  // it died), it SIGKILLs them and removes the temp dir. Its own process group,
  // ignoring INT/TERM/HUP: a Ctrl-C or a group kill of the test run reaches it
  // without stopping it before it has cleaned up.
  const watchdog = spawn('/bin/sh', ['-c', WATCHDOG_SH, 'couchestor-kube-watchdog', dir], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  watchdog.unref();
  (watchdog.stdin as unknown as { unref(): void }).unref();
  watchdog.stdin!.on('error', () => undefined); // the watchdog gone first: nothing to tell it
  const guard = (p: ChildProcess) => {
    watchdog.stdin!.write(`${p.pid}\n`);
    p.once('exit', () => watchdog.stdin!.writable && watchdog.stdin!.write(`-${p.pid}\n`));
  };
  const dismissWatchdog = () => watchdog.stdin!.end('done\n');

  const tokens = new Map<string, string>();
  const token = () => crypto.randomBytes(24).toString('hex');
  tokens.set(ADMIN_USER, token());
  for (const u of opts.users ?? ['user']) tokens.set(u, token());
  fs.writeFileSync(
    path.join(dir, 'tokens.csv'),
    [...tokens].map(([u, t]) => (u === ADMIN_USER ? `${t},${u},${u},"system:masters"` : `${t},${u},${u}`)).join('\n') + '\n',
  );
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(path.join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));

  const cleanupOnError = async (err: unknown): Promise<never> => {
    for (const p of procs) await kill(p, 1000);
    process.off('exit', reap);
    dismissWatchdog();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  };

  // etcd: one member, loopback only; --unsafe-no-fsync because a test cluster
  // never survives a power cut, and fsync dominates its write latency.
  // Ports: free when picked, but another process (a second test file's fixture, any client's
  // ephemeral port) may bind one before etcd or the apiserver does. A start that fails on
  // "address already in use" is tried again on new ports (PORT_ATTEMPTS in all).
  const firstPorts = opts.firstPortsForTest ?? {};
  const etcdLog = path.join(dir, 'etcd.log');
  let etcdUrl = '';
  let etcd!: ChildProcess;
  for (let attempt = 1; ; attempt++) {
    const clientPort = attempt === 1 && firstPorts.etcdClient ? firstPorts.etcdClient : await freePort();
    const peerPort = await freePort();
    etcdUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    fs.rmSync(path.join(dir, 'etcd'), { recursive: true, force: true }); // a failed attempt's member
    const etcdFd = fs.openSync(etcdLog, 'a');
    etcd = spawn(etcdBin, [
      '--name=fixture', `--data-dir=${path.join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`, `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=fixture=${peerUrl}`, '--initial-cluster-state=new',
      '--unsafe-no-fsync', '--log-level=warn',
    ], { stdio: ['ignore', etcdFd, etcdFd] });
    fs.closeSync(etcdFd);
    procs.add(etcd);
    guard(etcd);
    const p = etcd;
    p.once('exit', () => procs.delete(p));
    try {
      await waitReady('etcd', `${etcdUrl}/health`, {}, etcd, etcdLog, timeoutMs);
      break;
    } catch (err) {
      if (attempt < PORT_ATTEMPTS && portInUse(err)) continue;
      return cleanupOnError(err);
    }
  }

  let apiPort = firstPorts.apiserver ?? (await freePort());
  let server = '';
  const certDir = path.join(dir, 'certs');
  const apiLog = path.join(dir, 'kube-apiserver.log');
  const apiArgs = () => [
    `--etcd-servers=${etcdUrl}`,
    '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
    `--cert-dir=${certDir}`, // self-signs apiserver.crt/key on first start, reuses them after
    `--token-auth-file=${path.join(dir, 'tokens.csv')}`,
    '--authorization-mode=RBAC',
    `--service-account-key-file=${path.join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${path.join(dir, 'sa.key')}`,
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    '--service-cluster-ip-range=10.96.0.0/24',
    // Nothing here needs these, and each costs start-up time or background work.
    '--endpoint-reconciler-type=none', '--enable-priority-and-fairness=false', '--profiling=false',
    '--v=1',
  ];
  let apiserver!: ChildProcess;
  const startApiserver = async () => {
    server = `https://127.0.0.1:${apiPort}`;
    const fd = fs.openSync(apiLog, 'a');
    apiserver = spawn(apiserverBin, apiArgs(), { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    procs.add(apiserver);
    guard(apiserver);
    const p = apiserver;
    p.once('exit', () => procs.delete(p));
    // The serving cert does not exist until the apiserver has written it: poll without CA checks, then load it.
    await waitReady('kube-apiserver', `${server}/readyz`, { rejectUnauthorized: false, headers: { authorization: `Bearer ${tokens.get(ADMIN_USER)}` } }, apiserver, apiLog, timeoutMs);
  };
  for (let attempt = 1; ; attempt++) {
    try {
      await startApiserver();
      break;
    } catch (err) {
      if (attempt < PORT_ATTEMPTS && portInUse(err)) {
        apiPort = await freePort();
        continue;
      }
      return cleanupOnError(err);
    }
  }
  const caPem = fs.readFileSync(path.join(certDir, 'apiserver.crt'), 'utf8');
  const caData = Buffer.from(caPem).toString('base64');

  const userToken = (name: string): string => {
    const t = tokens.get(name);
    if (t === undefined) throw new Error(`no static token for user ${name}: pass it in startKube({ users: [...] }) (have ${[...tokens.keys()].join(', ')})`);
    return t;
  };
  const kcForToken = (t: string, name = 'token-user'): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fixture', server, caData }],
      users: [{ name, token: t }],
      contexts: [{ name: 'fixture', cluster: 'fixture', user: name }],
      currentContext: 'fixture',
    });
    return kc;
  };
  const bearer = (o: { user?: string; token?: string } = {}) => `Bearer ${o.token ?? userToken(o.user ?? ADMIN_USER)}`;
  const request = (method: string, apiPath: string, o: KubeRequestOptions = {}): Promise<KubeResponse> =>
    new Promise((resolve, reject) => {
      const payload = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
      const headers: Record<string, string> = { authorization: bearer(o), accept: 'application/json' };
      // With its length: Node sends a DELETE's body unframed (no chunking for DELETE), and the apiserver reads none
      // (a DeleteOptions' preconditions were ignored: the delete done unconditionally).
      if (payload !== undefined) {
        headers['content-type'] = o.contentType ?? 'application/json';
        headers['content-length'] = String(Buffer.byteLength(payload));
      }
      const req = https.request(`${server}${apiPath}`, { method, ca: caPem, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          if ((res.headers['content-type'] ?? '').includes('json')) {
            try {
              body = JSON.parse(text);
            } catch {
              // keep the text: the caller sees what was sent
            }
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  const watch = (apiPath: string, onEvent: (type: string, obj: any) => void, o: { user?: string; token?: string } = {}): Promise<KubeWatch> => // eslint-disable-line @typescript-eslint/no-explicit-any -- a JSON object
    new Promise((resolve, reject) => {
      const url = `${server}${apiPath}${apiPath.includes('?') ? '&' : '?'}watch=1`;
      let closing = false;
      const req = https.get(url, { ca: caPem, headers: { authorization: bearer(o), accept: 'application/json' } }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(Object.assign(new Error(`watch ${apiPath}: HTTP ${res.statusCode}`), { status: res.statusCode }));
          return;
        }
        const ended = new Promise<void>((endResolve, endReject) => {
          res.on('error', (err) => (closing ? endResolve() : endReject(err)));
          res.on('close', () => endResolve());
        });
        ended.catch(() => {}); // the caller may never look
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (line.trim() === '') continue;
            const ev = JSON.parse(line) as { type: string; object: unknown };
            onEvent(ev.type, ev.object);
          }
        });
        resolve({
          ended,
          close: () => {
            closing = true;
            req.destroy();
          },
        });
      });
      req.on('error', (err) => (closing ? undefined : reject(err)));
    });
  let stopped = false;
  const env: KubeEnv = {
    server,
    caPem,
    caData,
    adminToken: userToken(ADMIN_USER),
    userToken,
    kubeconfig(user = ADMIN_USER) {
      const file = path.join(dir, `kubeconfig-${user}.yaml`);
      fs.writeFileSync(file, [
        'apiVersion: v1', 'kind: Config',
        'clusters:', `- name: fixture`, `  cluster: {server: "${server}", certificate-authority-data: "${caData}"}`,
        'users:', `- name: "${user}"`, `  user: {token: "${userToken(user)}"}`,
        'contexts:', `- name: fixture`, `  context: {cluster: fixture, user: "${user}"}`,
        'current-context: fixture', '',
      ].join('\n'));
      return file;
    },
    kc: (user = ADMIN_USER) => kcForToken(userToken(user), user),
    kcForToken: (t) => kcForToken(t),
    async serviceAccountToken(namespace, name) {
      const sa = await request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, { body: { metadata: { name } } });
      if (sa.status !== 201 && sa.status !== 409) throw new Error(`creating ServiceAccount ${namespace}/${name}: HTTP ${sa.status} ${JSON.stringify(sa.body)}`);
      const tr = await request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, { body: { spec: { expirationSeconds: 3600 } } });
      const t = (tr.body as { status?: { token?: string } }).status?.token;
      if (tr.status !== 201 || !t) throw new Error(`TokenRequest for ServiceAccount ${namespace}/${name}: HTTP ${tr.status} ${JSON.stringify(tr.body)}`);
      return t;
    },
    request,
    watch,
    async waitCrdEstablished(name, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (let delayMs = 20; ; delayMs = Math.min(delayMs * 2, 250)) {
        const res = await request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
        const conditions = (res.body as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions;
        if (res.status === 200 && conditions?.some((c) => c.type === 'Established' && c.status === 'True')) return;
        if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms: HTTP ${res.status} ${JSON.stringify(conditions ?? res.body)}`);
        await new Promise((r) => setTimeout(r, delayMs));
      }
    },
    dir,
    etcdUrl,
    apiserverLog: () => fs.readFileSync(apiLog, 'utf8'),
    async restartApiserver() {
      await kill(apiserver);
      await startApiserver();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill(apiserver);
      await kill(etcd);
      process.off('exit', reap);
      dismissWatchdog();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return env;
}

