// Removes the node-status objects of departed nodes (StoragePolicyNodeStatus and
// ErasureCodingPolicyNodeStatus of a node whose Node object is gone: drained and
// deleted, renamed; not a node the DaemonSet moved off: its Node exists).
// Without it they stayed for good: `kubectl get spns` showed dead nodes as if
// they reported. (A policy's deletion removes its objects: ownerReferences, and
// each node deletes its own, status.ts.)
//
// An object is removed when its node's Node object is gone (GET 404) AND its
// last-report-time annotation is older than kubernetes.departedNodeEntryTimeoutMs.
// A node that exists is never pruned, however long it has been silent.
//
// Every node runs this; there is no leader. A round lists both kinds
// metadata-only (no status: ~1 KiB an object), paged. So that the cluster as a
// whole lists about PRUNE_LISTS_PER_INTERVAL times an interval however many
// nodes there are, a node's own interval grows with the node count it saw. The
// removal is a DELETE with the object's resourceVersion as a precondition: an
// object written since the list (the node is back) makes it a 409, and another
// pruner's removal a 404. So several nodes doing it at once cost a few
// requests, never a wrong removal. The Node GETs are made only for objects
// already older than the bound, which is rare.
import { isKubeNodeName } from '../../config.js';
import { log } from '../../log.js';
import { KubeApiError, resourcePath, type KubeClient, type KubeList, type KubeObject } from './client.js';
import { NODE_ANNOTATION, NODE_STATUS_KINDS, REPORT_TIME_ANNOTATION } from './status.js';

const REQUEST_TIMEOUT_MS = 10_000;
/** A round every half bound, at most every minute, at least every 0.5 s. */
export function pruneIntervalMs(boundMs: number): number {
  return Math.min(60_000, Math.max(500, Math.floor(boundMs / 2)));
}

/** The cluster's pruners list about this many times a pruneIntervalMs, together. */
const PRUNE_LISTS_PER_INTERVAL = 3;
/** Objects per list page (metadata only: ~1 KiB each). */
const LIST_PAGE_SIZE = 500;
/** A list of PartialObjectMetadata: no spec, no status. */
const METADATA_ONLY = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';

export class DepartedNodePruner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** An object with no report time we can read: aged from when this node first saw it. */
  private readonly firstSeen = new Map<string, number>();
  /**
   * Nodes a GET found present, and until when that answer stands (one bound): a node that exists but
   * stays silent (down, the DaemonSet moved off it) is asked about once a bound, not every round.
   */
  private readonly present = new Map<string, number>();
  /** Distinct nodes the last list named: this node's interval is stretched by them (see the file's head). */
  private nodesSeen = 0;
  private nodesForbiddenLogged = false;
  private failingLogged = false;
  /** Objects removed by this node (tests, /metrics). */
  pruned = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly nodeName: string,
    private readonly boundMs: number,
  ) {}

  start(): void {
    if (this.stopped || this.timer) return;
    // Jittered: the nodes of a cluster do not all look at once.
    const every = pruneIntervalMs(this.boundMs) * Math.max(1, this.nodesSeen / PRUNE_LISTS_PER_INTERVAL);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.round()
        .catch((err: unknown) => this.logFailure(err))
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

  /** Every node-status object, metadata only (paged). */
  private async listAll(): Promise<{ plural: string; obj: KubeObject }[]> {
    const out: { plural: string; obj: KubeObject }[] = [];
    for (const { plural } of Object.values(NODE_STATUS_KINDS)) {
      let cont: string | undefined;
      do {
        if (this.stopped) return out;
        const q = new URLSearchParams({ limit: String(LIST_PAGE_SIZE), ...(cont ? { continue: cont } : {}) });
        const page = await this.client.request<KubeList<KubeObject>>('GET', `${resourcePath(plural)}?${q}`, { accept: METADATA_ONLY, timeoutMs: REQUEST_TIMEOUT_MS });
        for (const obj of page.items) out.push({ plural, obj });
        cont = page.metadata.continue || undefined;
      } while (cont);
    }
    return out;
  }

  /** One look at every node-status object: those older than the bound whose Node is gone are removed. */
  async round(): Promise<void> {
    const all = await this.listAll();
    const now = Date.now();
    const stale: { plural: string; obj: KubeObject; node: string }[] = [];
    const seen = new Set<string>();
    const nodes = new Set<string>();
    for (const { plural, obj } of all) {
      const node = obj.metadata.annotations?.[NODE_ANNOTATION];
      // Not one of ours (no node named): left alone.
      if (node === undefined) continue;
      nodes.add(node);
      if (node === this.nodeName) continue;
      const key = `${plural}/${obj.metadata.name}`;
      seen.add(key);
      let at = timeMs(obj.metadata.annotations?.[REPORT_TIME_ANNOTATION]);
      if (at === null) {
        if (!this.firstSeen.has(key)) this.firstSeen.set(key, now);
        at = this.firstSeen.get(key)!;
      }
      if (now - at > this.boundMs) stale.push({ plural, obj, node });
    }
    this.nodesSeen = nodes.size;
    for (const key of this.firstSeen.keys()) if (!seen.has(key)) this.firstSeen.delete(key);
    const staleNodes = new Set(stale.map((s) => s.node));
    for (const [node, until] of this.present) if (until <= now || !staleNodes.has(node)) this.present.delete(node);
    if (stale.length === 0) return;

    const gone = new Map<string, boolean>();
    for (const node of staleNodes) {
      if (this.stopped) return;
      // Not a Node's name (isKubeNodeName: ".", "", an old daemon's upper-case host name, a hand-made object): it has
      // no Node and is never looked up ("." made the GET /api/v1/nodes/. a LIST of nodes, refused under a get-only role).
      if (!isKubeNodeName(node)) {
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
            log.warn("cannot read Node objects (the ClusterRole lacks get on nodes, deploy/rbac.yaml): departed nodes' status objects are not pruned", { node: this.nodeName, err: (err as Error).message });
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
        await this.client.request('DELETE', resourcePath(s.plural, name), {
          // The resourceVersion the object was judged on: a newer write (the node is back) makes this a 409.
          body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { resourceVersion: s.obj.metadata.resourceVersion } },
          timeoutMs: REQUEST_TIMEOUT_MS,
        });
        this.pruned++;
        log.info('removed the status object of a departed node (its Node object is gone)', { resource: `${s.plural}/${name}`, departed: s.node, boundMs: this.boundMs });
      } catch (err) {
        const code = err instanceof KubeApiError ? err.code : 0;
        // 409: written since the list (the node is back): looked at again next round. 404: another node removed it.
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

function timeMs(v: string | undefined): number | null {
  const t = v === undefined ? NaN : Date.parse(v);
  return Number.isFinite(t) ? t : null;
}
