// Writes this node's status of each policy into an object of its own, one per
// (policy, node): a StoragePolicyNodeStatus or ErasureCodingPolicyNodeStatus
// (deploy/README.md "Status"). No daemon watches these, so a write costs one
// request and reaches no other node; the policies themselves are not written
// (before, every node's entry lived in status.nodes of every policy, and each
// write went to every node's policy watch: O(N^2) a write interval).
// Only when the entry changed (or a refresh is due), at most one request in
// flight, rounds at least statusWriteIntervalMs apart, newest entry wins while
// one waits (coalesced), backoff after a failure. A slow or down apiserver
// costs one pending entry per policy, never a queue.
import crypto from 'node:crypto';
import { log } from '../../log.js';
import { GROUP, KubeApiError, resourcePath, VERSION, type KubeClient } from './client.js';

/** Deadline of one status write. */
const WRITE_TIMEOUT_MS = 10_000;
/**
 * An unchanged entry is written again after this: its lastReconcileTime (and
 * the decisions' IOPS figures, left out of the comparison) say the node is
 * alive without a write every pass.
 */
export const STATUS_REFRESH_MS = 5 * 60_000;
const BACKOFF_MAX_MS = 60_000;

/** The node-status kinds, by the plural of the policy kind they report on. */
export const NODE_STATUS_KINDS: Record<string, { plural: string; kind: string; ownerKind: string }> = {
  storagepolicies: { plural: 'storagepolicynodestatuses', kind: 'StoragePolicyNodeStatus', ownerKind: 'StoragePolicy' },
  erasurecodingpolicies: { plural: 'erasurecodingpolicynodestatuses', kind: 'ErasureCodingPolicyNodeStatus', ownerKind: 'ErasureCodingPolicy' },
};
/** Labels for `kubectl get spns -l ...` (a name longer than a label value's 63 characters is cut, with a hash). */
export const NODE_LABEL = 'storage.billyronks.io/node';
export const POLICY_LABEL = 'storage.billyronks.io/policy';
/** Annotations the departed-node pruner reads from a metadata-only list: the node's full name, and when it last wrote (its clock). */
export const NODE_ANNOTATION = 'storage.billyronks.io/node';
export const REPORT_TIME_ANNOTATION = 'storage.billyronks.io/last-report-time';

/** An object name can be 253 characters; each of the two names gets at most this much of it. */
const NAME_PART_CHARS = 115;

function hash(text: string, chars: number): string {
  return crypto.createHash('sha256').update(text).digest('hex').slice(0, chars);
}

/** A prefix of a DNS-subdomain name that is one itself (no trailing '-' or '.'). */
function namePart(name: string): string {
  return name.slice(0, NAME_PART_CHARS).replace(/[-.]+$/, '');
}

/**
 * The object holding `node`'s status of `policy`: `<policy>.<node>.<hash>`.
 * The hash of both names keeps it unique where the dots would not (policy
 * "a.b" on node "c", policy "a" on node "b.c") and where the names are cut.
 */
export function nodeStatusName(policy: string, node: string): string {
  return `${namePart(policy)}.${namePart(node)}.${hash(`${policy}\n${node}`, 10)}`;
}

/** A label value for a name: itself up to 63 characters, else its first 54 and a hash. */
export function labelValue(name: string): string {
  return name.length <= 63 ? name : `${name.slice(0, 54)}-${hash(name, 8)}`;
}

export type StatusWriteResult = 'ok' | 'failed' | 'gone' | 'rejected';

interface Pending {
  plural: string;
  name: string;
  /** The policy's uid (its ownerReference: deleting the policy garbage-collects the object). */
  uid: string | undefined;
  /** null: the policy is gone, the object is to be deleted. */
  entry: Record<string, unknown> | null;
  /** The part of the entry whose change is worth a write. */
  compareKey: string;
  writtenKey: string | null;
  writtenAtMs: number;
}

export class StatusWriter {
  private readonly items = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private lastRoundAtMs = 0;
  private failures = 0;
  private retryAtMs = 0;
  private stopped = false;
  readonly writes: Record<StatusWriteResult, number> = { ok: 0, failed: 0, gone: 0, rejected: 0 };

  constructor(
    private readonly client: KubeClient,
    readonly nodeName: string,
    private readonly intervalMs: number,
  ) {}

  /**
   * The entry this node should have for policy `plural/name`. Written when its
   * compareKey differs from the last one written, or STATUS_REFRESH_MS after
   * the last write.
   */
  set(plural: string, name: string, uid: string | undefined, entry: Record<string, unknown>, compareKey: string): void {
    const key = `${plural}/${name}`;
    const cur = this.items.get(key);
    if (cur) {
      // The policy re-created under the same name (a relist shows only the new uid): the ownerReference must follow,
      // else a garbage collector deletes the object as the dependent of the policy that is gone.
      if (cur.uid !== uid) cur.writtenKey = null;
      cur.entry = entry;
      cur.compareKey = compareKey;
      cur.uid = uid;
    } else {
      this.items.set(key, { plural, name, uid, entry, compareKey, writtenKey: null, writtenAtMs: 0 });
    }
    this.schedule();
  }

  /**
   * The policy is gone (deleted): this node's object for it is deleted. Its
   * ownerReference has the garbage collector do the same; this covers a
   * cluster without one and costs one request per node.
   */
  forget(plural: string, name: string): void {
    const key = `${plural}/${name}`;
    const cur = this.items.get(key);
    this.items.set(key, { plural, name, uid: cur?.uid, entry: null, compareKey: 'deleted', writtenKey: null, writtenAtMs: 0 });
    this.schedule();
  }

  /** Entries waiting for a write (tests, /metrics). */
  pending(): number {
    const now = Date.now();
    let n = 0;
    for (const it of this.items.values()) if (this.due(it, now)) n++;
    return n;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.inFlight;
  }

  private due(it: Pending, now: number): boolean {
    return it.writtenKey !== it.compareKey || (it.entry !== null && now - it.writtenAtMs >= STATUS_REFRESH_MS);
  }

  private schedule(): void {
    if (this.stopped || this.timer || this.inFlight) return;
    const now = Date.now();
    if (![...this.items.values()].some((it) => this.due(it, now))) return;
    const delay = Math.max(0, this.lastRoundAtMs + this.intervalMs - now, this.retryAtMs - now);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.inFlight = this.round().finally(() => {
        this.inFlight = null;
        this.schedule();
      });
    }, delay);
  }

  /** The whole object for `it`: what a write sets (every field of it, so nothing an earlier write left stays). */
  private object(it: Pending, entry: Record<string, unknown>, now: string): Record<string, unknown> {
    const kind = NODE_STATUS_KINDS[it.plural]!;
    return {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: kind.kind,
      metadata: {
        name: nodeStatusName(it.name, this.nodeName),
        labels: { [POLICY_LABEL]: labelValue(it.name), [NODE_LABEL]: labelValue(this.nodeName) },
        annotations: { [NODE_ANNOTATION]: this.nodeName, [REPORT_TIME_ANNOTATION]: now },
        ownerReferences: it.uid ? [{ apiVersion: `${GROUP}/${VERSION}`, kind: kind.ownerKind, name: it.name, uid: it.uid }] : [],
      },
      spec: { policy: it.name, node: this.nodeName },
      status: withoutNulls(entry),
    };
  }

  /** PATCH (JSON patch: every part replaced whole), or POST when the object does not exist yet. */
  private async put(it: Pending, entry: Record<string, unknown>): Promise<void> {
    const plural = NODE_STATUS_KINDS[it.plural]!.plural;
    const obj = this.object(it, entry, new Date().toISOString());
    const meta = obj.metadata as Record<string, unknown>;
    const ops = [
      { op: 'add', path: '/metadata/labels', value: meta.labels },
      { op: 'add', path: '/metadata/annotations', value: meta.annotations },
      { op: 'add', path: '/metadata/ownerReferences', value: meta.ownerReferences },
      { op: 'add', path: '/spec', value: obj.spec },
      { op: 'add', path: '/status', value: obj.status },
    ];
    const patch = () => this.client.request('PATCH', resourcePath(plural, meta.name as string), { body: ops, contentType: 'application/json-patch+json', timeoutMs: WRITE_TIMEOUT_MS });
    try {
      await patch();
    } catch (err) {
      if (!(err instanceof KubeApiError && err.code === 404)) throw err;
      try {
        await this.client.request('POST', resourcePath(plural), { body: obj, timeoutMs: WRITE_TIMEOUT_MS });
      } catch (err2) {
        // Created meanwhile (a write of an earlier run still in flight at the apiserver): patched after all.
        if (!(err2 instanceof KubeApiError && err2.code === 409)) throw err2;
        await patch();
      }
    }
  }

  private async remove(it: Pending): Promise<void> {
    const plural = NODE_STATUS_KINDS[it.plural]!.plural;
    try {
      await this.client.request('DELETE', resourcePath(plural, nodeStatusName(it.name, this.nodeName)), { timeoutMs: WRITE_TIMEOUT_MS });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.code === 404)) throw err;
    }
  }

  /** Writes every due entry, one request at a time; stops at the first failure (the apiserver is likely down for all). */
  private async round(): Promise<void> {
    this.lastRoundAtMs = Date.now();
    for (const [key, it] of [...this.items]) {
      if (this.stopped) return;
      if (!this.due(it, Date.now())) continue;
      const entry = it.entry;
      const compareKey = it.compareKey;
      try {
        if (entry === null) {
          await this.remove(it);
          this.writes.gone++;
          if (this.items.get(key) === it && it.entry === null) this.items.delete(key);
          this.failures = 0;
          this.retryAtMs = 0;
          continue;
        }
        await this.put(it, entry);
        this.writes.ok++;
        it.writtenKey = compareKey;
        it.writtenAtMs = Date.now();
        this.failures = 0;
        this.retryAtMs = 0;
      } catch (err) {
        const code = err instanceof KubeApiError ? err.code : 0;
        if (code === 400 || code === 403 || code === 422) {
          // Refused as such (RBAC, the CRD's schema): the same entry would be refused again.
          this.writes.rejected++;
          log.warn('kubernetes refused a status write: not retried until the status changes', { resource: key, node: this.nodeName, err: (err as Error).message });
          it.writtenKey = compareKey;
          it.writtenAtMs = Date.now();
          if (entry === null && this.items.get(key) === it) this.items.delete(key);
          continue;
        }
        this.writes.failed++;
        this.failures++;
        const backoffMs = Math.min(BACKOFF_MAX_MS, this.intervalMs * 2 ** Math.min(this.failures, 20));
        this.retryAtMs = Date.now() + backoffMs;
        if (this.failures === 1) log.warn('kubernetes status write failed: retrying with backoff', { resource: key, node: this.nodeName, backoffMs, err: (err as Error).message });
        return;
      }
    }
  }
}

/**
 * The entry with every null member dropped, in list items too (a decision's targetTier and iops): stored as the
 * merge patches of the earlier layout stored it, where a reader takes an absent field as null. (The schema's
 * enums do not list null: a null targetTier is refused, 422.)
 */
function withoutNulls<T>(v: T): T {
  if (Array.isArray(v)) return v.map(withoutNulls) as T;
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== null && x !== undefined) out[k] = withoutNulls(x);
  return out as T;
}
