// Removes the status entries of departed nodes (status.nodes.<node> of a
// StoragePolicy or ErasureCodingPolicy whose Node object is gone: drained and
// deleted, renamed; not a node the DaemonSet moved off: its Node exists). Without it they stayed for
// good: `kubectl get` showed dead nodes as if they reported, and the object
// grew toward etcd's 1.5 MiB bound with node churn.
//
// An entry is removed when its node's Node object is gone (GET 404) AND its
// time (lastReconcileTime / lastUpdateTime) is older than
// kubernetes.departedNodeEntryTimeoutMs. A node that exists is never pruned,
// however long it has been silent (a node down reports nothing for a while).
//
// Every node runs this; there is no leader. The removal is a JSON merge patch
// setting the entry to null with the object's resourceVersion as a
// precondition: null on a key already gone changes nothing, and a patch based
// on an older view (the node came back and wrote its entry meanwhile) is
// refused (409 Conflict) instead of removing a live entry. So several nodes
// doing it at once cost a few requests, never a wrong removal. The node GETs
// are made only for entries already older than the bound, which is rare.
import { log } from '../../log.js';
import { KubeApiError, resourcePath, type KubeClient, type KubeObject } from './client.js';
import type { Informer } from './informer.js';

const REQUEST_TIMEOUT_MS = 10_000;
/**
 * What a Node's name can be (a lowercase DNS subdomain, as index.ts checks this node's). A status key that is not
 * (".", "", an old daemon's upper-case host name) has no Node, and is never looked up: "." made the GET
 * /api/v1/nodes/. (a LIST of nodes, refused under a get-only role, which stopped every round).
 */
const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** A round every half bound, at most every minute, at least every 0.5 s. */
export function pruneIntervalMs(boundMs: number): number {
  return Math.min(60_000, Math.max(500, Math.floor(boundMs / 2)));
}

/** The time fields an entry may have: the StoragePolicy's and the ErasureCodingPolicy's. */
export const ENTRY_TIME_FIELDS = ['lastReconcileTime', 'lastUpdateTime'] as const;

export class DepartedNodePruner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** An entry with no time field we can read: aged from when this node first saw it. */
  private readonly firstSeen = new Map<string, number>();
  /**
   * Nodes a GET found present, and until when that answer stands (one bound): a node that exists but
   * stays silent (down, the DaemonSet moved off it) is asked about once a bound, not every round by
   * every node (N nodes x M silent ones a minute against the apiserver, for good).
   */
  private readonly present = new Map<string, number>();
  private nodesForbiddenLogged = false;
  private failingLogged = false;
  /** Entries removed by this node (tests, /metrics). */
  pruned = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly nodeName: string,
    private readonly boundMs: number,
    private readonly informers: Informer[],
  ) {}

  start(): void {
    if (this.stopped || this.timer) return;
    // Jittered: the nodes of a cluster do not all look at once.
    const every = pruneIntervalMs(this.boundMs);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.round()
        .catch((err: unknown) => log.warn('pruning departed nodes\' status entries failed', { err: (err as Error).message }))
        .finally(() => {
          this.running = null;
          this.start();
        });
    }, Math.floor(every * (0.75 + Math.random() * 0.5)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One look at every cached policy: the entries older than the bound whose Node is gone are removed. */
  async round(): Promise<void> {
    const now = Date.now();
    const stale: { plural: string; obj: KubeObject; node: string }[] = [];
    const seen = new Set<string>();
    for (const inf of this.informers) {
      for (const obj of inf.list()) {
        for (const [node, entry] of Object.entries(statusNodes(obj))) {
          if (node === this.nodeName) continue;
          const key = `${inf.plural}/${obj.metadata.name}/${node}`;
          seen.add(key);
          let at = entryTimeMs(entry);
          if (at === null) {
            if (!this.firstSeen.has(key)) this.firstSeen.set(key, now);
            at = this.firstSeen.get(key)!;
          }
          if (now - at > this.boundMs) stale.push({ plural: inf.plural, obj, node });
        }
      }
    }
    for (const key of this.firstSeen.keys()) if (!seen.has(key)) this.firstSeen.delete(key);
    const staleNodes = new Set(stale.map((s) => s.node));
    for (const [node, until] of this.present) if (until <= now || !staleNodes.has(node)) this.present.delete(node);
    if (stale.length === 0) return;

    const gone = new Map<string, boolean>();
    for (const node of staleNodes) {
      if (this.stopped) return;
      if (!NODE_NAME_RE.test(node)) {
        gone.set(node, true);
        continue;
      }
      if (this.present.has(node)) {
        gone.set(node, false);
        continue;
      }
      try {
        await this.client.request('GET', `/api/v1/nodes/${encodeURIComponent(node)}`, { timeoutMs: REQUEST_TIMEOUT_MS });
        gone.set(node, false);
        this.present.set(node, Date.now() + this.boundMs);
      } catch (err) {
        const code = err instanceof KubeApiError ? err.code : 0;
        if (code === 404) {
          gone.set(node, true);
          continue;
        }
        if (code === 403) {
          if (!this.nodesForbiddenLogged) {
            this.nodesForbiddenLogged = true;
            log.warn("cannot read Node objects (the ClusterRole lacks get on nodes, deploy/rbac.yaml): departed nodes' status entries are not pruned", { node: this.nodeName, err: (err as Error).message });
          }
          return;
        }
        this.logFailure(err);
        return;
      }
    }
    this.nodesForbiddenLogged = false;

    for (const s of stale) {
      if (this.stopped || !gone.get(s.node)) continue;
      const name = s.obj.metadata.name;
      try {
        await this.client.request('PATCH', resourcePath(s.plural, name, 'status'), {
          // The resourceVersion the entry was judged on: a newer write (the node is back) makes this a 409.
          body: { metadata: { resourceVersion: s.obj.metadata.resourceVersion }, status: { nodes: { [s.node]: null } } },
          contentType: 'application/merge-patch+json',
          timeoutMs: REQUEST_TIMEOUT_MS,
        });
        this.pruned++;
        log.info('removed the status entry of a departed node (its Node object is gone)', { resource: `${s.plural}/${name}`, departed: s.node, boundMs: this.boundMs });
      } catch (err) {
        const code = err instanceof KubeApiError ? err.code : 0;
        // 409: the object changed since the cache's view (another node pruned it, or the node is back): looked at again next round.
        // 404: the policy is gone.
        if (code === 409 || code === 404) continue;
        this.logFailure(err);
        return;
      }
    }
    this.failingLogged = false;
  }

  private logFailure(err: unknown): void {
    if (this.failingLogged) return;
    this.failingLogged = true;
    log.warn("pruning departed nodes' status entries failed: tried again next round", { node: this.nodeName, err: (err as Error).message });
  }
}

export function statusNodes(obj: KubeObject): Record<string, unknown> {
  const nodes = (obj.status as { nodes?: unknown } | undefined)?.nodes;
  return nodes !== null && typeof nodes === 'object' && !Array.isArray(nodes) ? (nodes as Record<string, unknown>) : {};
}

/** The newest time an entry states, or null. */
export function entryTimeMs(entry: unknown): number | null {
  if (entry === null || typeof entry !== 'object') return null;
  let best: number | null = null;
  for (const f of ENTRY_TIME_FIELDS) {
    const v = (entry as Record<string, unknown>)[f];
    const t = typeof v === 'string' ? Date.parse(v) : NaN;
    if (Number.isFinite(t) && (best === null || t > best)) best = t;
  }
  return best;
}
