// The daemon's few calls to the Kubernetes apiserver (list, watch, its own
// node-status objects, Node lookups), over node:http(s) with the kubeconfig's (or service
// account's) server, TLS and credentials. Every call has a deadline: a hung
// apiserver must never hold the control loop or the data path.
import http from 'node:http';
import https from 'node:https';
import readline from 'node:readline';
import { loadAccess, type ApiServerAccess } from './kubeconfig.js';

export const GROUP = 'storage.billyronks.io';
export const VERSION = 'v1';

/** A non-2xx answer; `code` the HTTP status (410 Gone, 404 Not Found, 403 Forbidden, ...). */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** The parts of an object every kind has that this daemon reads. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; uid?: string; resourceVersion?: string; generation?: number; annotations?: Record<string, string> };
  spec?: unknown;
  status?: unknown;
}

export interface KubeList<T> {
  metadata: { resourceVersion: string; continue?: string };
  items: T[];
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** A watch in progress: `ended` resolves when the server closes it, rejects on an error. */
export interface RunningWatch {
  ended: Promise<void>;
  abort(): void;
}

/** Bound on one JSON answer (a list of every policy): more is refused, not buffered. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

export class KubeClient {
  private agent: http.Agent | null = null;
  private closed = false;
  /** Bumped by each credentials re-read: a 401 to a request sent before it needs no re-read of its own. */
  private credentialsGeneration = 0;
  private reloading: Promise<void> | null = null;
  /** Credential re-reads after a 401 (ok: read; failed: could not be read), for /metrics and tests. */
  readonly credentialReloads = { ok: 0, failed: 0 };

  private constructor(private readonly access: ApiServerAccess) {}

  /** From a kubeconfig file, or (null) the pod's service account. */
  static async load(kubeconfig: string | null): Promise<KubeClient> {
    return new KubeClient(await loadAccess(kubeconfig));
  }

  get server(): string {
    return this.access.server;
  }

  close(): void {
    this.closed = true;
    this.agent?.destroy();
  }

  /**
   * One request with a JSON answer, failing with KubeApiError on a non-2xx status and after timeoutMs.
   * A 401 (a rotated service-account token, an exec plugin's token that expired early) re-reads the
   * credentials once, past the library's caches, and sends the request once more; a second 401 is
   * the caller's error (its backoff), never a loop.
   */
  async request<T>(method: string, path: string, opts: { body?: unknown; contentType?: string; accept?: string; timeoutMs: number }): Promise<T> {
    const generation = this.credentialsGeneration;
    try {
      return await this.requestOnce<T>(method, path, opts);
    } catch (err) {
      if (!(err instanceof KubeApiError) || err.code !== 401 || this.closed) throw err;
      try {
        await this.reloadCredentials(generation, opts.timeoutMs);
      } catch (reloadErr) {
        throw new KubeApiError(401, `${err.message}; the credentials could not be read again: ${(reloadErr as Error).message}`);
      }
      return await this.requestOnce<T>(method, path, opts);
    }
  }

  /** The credentials read again, once for every request that got a 401 with the ones in use (not again for one sent before the last re-read). */
  private async reloadCredentials(generation: number, timeoutMs: number): Promise<void> {
    if (generation !== this.credentialsGeneration) return;
    this.reloading ??= withDeadline(this.access.reload(), timeoutMs, `no credentials within ${timeoutMs} ms`)
      .then(
        () => {
          this.credentialReloads.ok++;
          this.credentialsGeneration++;
        },
        (err: unknown) => {
          this.credentialReloads.failed++;
          throw err;
        },
      )
      .finally(() => (this.reloading = null));
    await this.reloading;
  }

  private async requestOnce<T>(method: string, path: string, opts: { body?: unknown; contentType?: string; accept?: string; timeoutMs: number }): Promise<T> {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = await this.open(method, path, opts.contentType ?? (payload === undefined ? undefined : 'application/json'), opts.timeoutMs, opts.accept);
    // With its length: Node sends a DELETE's body unframed (no chunking for DELETE) and the apiserver reads
    // none, so a DeleteOptions' preconditions were dropped and the delete done unconditionally.
    if (payload !== undefined) req.setHeader('content-length', Buffer.byteLength(payload));
    return new Promise<T>((resolve, reject) => {
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (bytes > MAX_RESPONSE_BYTES) req.destroy(new Error(`${method} ${path}: answer larger than ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const code = res.statusCode ?? 0;
          if (code < 200 || code > 299) {
            reject(new KubeApiError(code, `${method} ${path}: ${code} ${statusMessage(text) ?? res.statusMessage ?? ''}`.trim()));
            return;
          }
          try {
            resolve((text ? JSON.parse(text) : undefined) as T);
          } catch (err) {
            reject(new Error(`${method} ${path}: answer is not JSON: ${(err as Error).message}`));
          }
        });
      });
      req.end(payload);
    });
  }

  /**
   * A watch from `resourceVersion`: each event line is handed to onEvent.
   * The server ends it after timeoutSeconds; no byte for idleTimeoutMs
   * (a dead connection, bookmarks come more often) aborts it with an error.
   */
  async watch(path: string, resourceVersion: string, opts: { timeoutSeconds: number; idleTimeoutMs: number }, onEvent: (type: WatchEventType, object: KubeObject) => void): Promise<RunningWatch> {
    const q = new URLSearchParams({ watch: '1', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(opts.timeoutSeconds) });
    const generation = this.credentialsGeneration;
    const req = await this.open('GET', `${path}?${q}`, undefined, opts.idleTimeoutMs);
    let abort: () => void = () => req.destroy();
    const ended = new Promise<void>((resolve, reject) => {
      let aborted = false;
      abort = () => {
        aborted = true;
        req.destroy();
        resolve();
      };
      req.on('error', (err) => (aborted ? resolve() : reject(err)));
      req.on('response', (res) => {
        const code = res.statusCode ?? 0;
        if (code !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.length < 64 && chunks.push(c));
          res.on('end', () => {
            const err = new KubeApiError(code, `watch ${path}: ${code} ${statusMessage(Buffer.concat(chunks).toString('utf8')) ?? ''}`.trim());
            if (code !== 401 || this.closed) return reject(err);
            // A watch reopened with a token revoked since (rotated, expired early): the credentials are read again, as
            // request() does, before the caller's retry. Else the retry would send the library's cached token (a token
            // file's for up to 60 s, an exec plugin's until its stated expiry) and fail until then.
            this.reloadCredentials(generation, opts.idleTimeoutMs).then(
              () => reject(err),
              (reloadErr: unknown) => reject(new KubeApiError(401, `${err.message}; the credentials could not be read again: ${(reloadErr as Error).message}`)),
            );
          });
          res.on('error', reject);
          return;
        }
        const lines = readline.createInterface({ input: res, crlfDelay: Infinity });
        // readline re-emits its input's error (the apiserver gone mid-watch: ECONNRESET) as its own:
        // unhandled, it ended the process. The response's own handler below reports it.
        lines.on('error', () => undefined);
        lines.on('line', (line) => {
          if (line === '') return;
          let ev: { type: WatchEventType; object: KubeObject };
          try {
            ev = JSON.parse(line) as typeof ev;
          } catch {
            req.destroy(new Error(`watch ${path}: event is not JSON`));
            return;
          }
          if (ev.type === 'ERROR') {
            // A Status object: 410 Gone when resourceVersion is too old (relist).
            const st = ev.object as unknown as { code?: number; message?: string };
            req.destroy(new KubeApiError(st.code ?? 500, `watch ${path}: ${st.code ?? ''} ${st.message ?? 'error event'}`));
            return;
          }
          onEvent(ev.type, ev.object);
        });
        res.on('error', (err) => (aborted ? resolve() : reject(err)));
        res.on('end', () => resolve());
        res.on('close', () => (res.complete ? resolve() : aborted ? resolve() : reject(new Error(`watch ${path}: connection closed`))));
      });
      req.end();
    });
    return { ended, abort: () => abort() };
  }

  /** A request with the kubeconfig's TLS and credentials (a token file or an exec plugin's token as it is now). */
  private async open(method: string, path: string, contentType: string | undefined, timeoutMs: number, accept = 'application/json'): Promise<http.ClientRequest> {
    const url = new URL(this.server + path);
    // Credentials with a deadline too: an exec plugin that hangs must not hold the caller.
    const [agent, auth] = await withDeadline(Promise.all([this.access.agent(), this.access.headers()]), timeoutMs, `${method} ${url.pathname}: no credentials within ${timeoutMs} ms`);
    if (this.closed) throw new Error(`${method} ${url.pathname}: client closed`);
    this.agent = agent;
    const headers: Record<string, string> = { accept, ...auth };
    if (contentType) headers['content-type'] = contentType;
    const req = (url.protocol === 'https:' ? https : http).request(url, { method, headers, agent });
    // Idle time on the socket: a request's deadline, a watch's silence bound.
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url.pathname}: no answer within ${timeoutMs} ms`)));
    return req;
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}

function statusMessage(text: string): string | undefined {
  try {
    const st = JSON.parse(text) as { message?: unknown };
    return typeof st.message === 'string' ? st.message : undefined;
  } catch {
    return text.slice(0, 200) || undefined;
  }
}

export function resourcePath(plural: string, name?: string, sub?: 'status'): string {
  return `/apis/${GROUP}/${VERSION}/${plural}${name !== undefined ? `/${encodeURIComponent(name)}` : ''}${sub ? `/${sub}` : ''}`;
}
