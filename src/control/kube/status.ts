// Writes this node's entry of a custom resource's status (status.nodes.<node>)
// with a JSON merge patch: only when it changed (or a refresh is due), at most
// one request in flight, rounds at least statusWriteIntervalMs apart, newest
// entry wins while one waits (coalesced), backoff after a failure. A slow or
// down apiserver costs one pending entry per resource, never a queue.
import { log } from '../../log.js';
import { KubeApiError, resourcePath, type KubeClient } from './client.js';

/** Deadline of one status write. */
const WRITE_TIMEOUT_MS = 10_000;
/**
 * An unchanged entry is written again after this: its lastReconcileTime (and
 * the decisions' IOPS figures, left out of the comparison) say the node is
 * alive without a write every pass.
 */
export const STATUS_REFRESH_MS = 5 * 60_000;
const BACKOFF_MAX_MS = 60_000;

export type StatusWriteResult = 'ok' | 'failed' | 'gone' | 'rejected';

interface Pending {
  plural: string;
  name: string;
  entry: Record<string, unknown>;
  /** The part of the entry whose change is worth a write. */
  compareKey: string;
  /** The node's entry as the apiserver last showed it (informer cache): its fields the new entry lacks are deleted (null). */
  existing: Record<string, unknown> | undefined;
  writtenKey: string | null;
  writtenAtMs: number;
  /** The fields last written: those the next entry lacks are deleted. */
  writtenFields: Set<string>;
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
   * The entry this node should have on `plural/name`. Written when its
   * compareKey differs from the last one written, or STATUS_REFRESH_MS after
   * the last write.
   */
  set(plural: string, name: string, entry: Record<string, unknown>, compareKey: string, existing: Record<string, unknown> | undefined): void {
    const key = `${plural}/${name}`;
    const cur = this.items.get(key);
    if (cur) {
      cur.entry = entry;
      cur.compareKey = compareKey;
      cur.existing = existing;
    } else {
      this.items.set(key, { plural, name, entry, compareKey, existing, writtenKey: null, writtenAtMs: 0, writtenFields: new Set() });
    }
    this.schedule();
  }

  /** The resource is gone (deleted): nothing to write. */
  forget(plural: string, name: string): void {
    this.items.delete(`${plural}/${name}`);
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
    return it.writtenKey !== it.compareKey || now - it.writtenAtMs >= STATUS_REFRESH_MS;
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

  /** Writes every due entry, one request at a time; stops at the first failure (the apiserver is likely down for all). */
  private async round(): Promise<void> {
    this.lastRoundAtMs = Date.now();
    for (const [key, it] of [...this.items]) {
      if (this.stopped) return;
      if (!this.due(it, Date.now())) continue;
      const entry = it.entry;
      const compareKey = it.compareKey;
      const body: Record<string, unknown> = { ...entry };
      // A merge patch merges: a field this node wrote before (reason, once a policy is valid again) is deleted with null.
      for (const f of new Set([...it.writtenFields, ...Object.keys(it.existing ?? {})])) if (!(f in body)) body[f] = null;
      try {
        await this.client.request('PATCH', resourcePath(it.plural, it.name, 'status'), {
          body: { status: { nodes: { [this.nodeName]: body } } },
          contentType: 'application/merge-patch+json',
          timeoutMs: WRITE_TIMEOUT_MS,
        });
        this.writes.ok++;
        it.writtenKey = compareKey;
        it.writtenAtMs = Date.now();
        it.writtenFields = new Set(Object.keys(entry));
        this.failures = 0;
        this.retryAtMs = 0;
      } catch (err) {
        const code = err instanceof KubeApiError ? err.code : 0;
        if (code === 404) {
          // Deleted meanwhile: nothing to write (the informer forgets it too).
          this.writes.gone++;
          if (this.items.get(key) === it) this.items.delete(key);
          continue;
        }
        if (code === 400 || code === 403 || code === 422) {
          // Refused as such (RBAC, the CRD's schema): the same entry would be refused again.
          this.writes.rejected++;
          log.warn('kubernetes refused a status write: not retried until the status changes', { resource: key, node: this.nodeName, err: (err as Error).message });
          it.writtenKey = compareKey;
          it.writtenAtMs = Date.now();
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
