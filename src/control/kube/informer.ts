// A list + watch cache of one cluster-scoped custom resource: readers (the
// control loop's pass, the status writer) read the cache and never wait on
// the apiserver. The watch resumes from the last resourceVersion seen; a
// 410 Gone (too old) or any list needed after an error relists.
import { log } from '../../log.js';
import { KubeApiError, resourcePath, type KubeClient, type KubeList, type KubeObject, type RunningWatch } from './client.js';

/** Deadline of one list request (a page). */
const LIST_TIMEOUT_MS = 10_000;
/**
 * Objects per list page. An object can be ~1.5 MiB (etcd's request bound: a
 * policy's status holds every node's entry), so an unpaged list of a few
 * dozen of them passed client.ts's 32 MiB answer bound and was refused on
 * every try: the informer never synced. 16 of them fit in one answer.
 */
export const LIST_PAGE_SIZE = 16;
/**
 * The server is asked to end a watch after half to three quarters of the
 * silence bound (60-90 s for the default 120 s; random, so the watches of many
 * nodes do not come back all at once): the client resumes it from the last
 * resourceVersion (cheap: the apiserver's watch cache). Every watch ends
 * before the bound, so a watch with no byte for that long is dead (no RST: a
 * partition), not quiet (the apiserver sent bookmarks only every 2 minutes here).
 */
function watchTimeoutSeconds(silenceTimeoutMs: number): number {
  const from = Math.max(1, Math.floor(silenceTimeoutMs / 2000));
  return from + Math.floor(Math.random() * Math.max(1, Math.floor(silenceTimeoutMs / 4000)));
}
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;
/** Bound on the cache: more objects of one kind than this are refused (a policy is a few hundred bytes). */
export const MAX_CACHED_OBJECTS = 10_000;

export type WatchRestartReason = 'expired' | 'error' | 'closed';

export class Informer<T extends KubeObject = KubeObject> {
  private readonly cache = new Map<string, T>();
  private resourceVersion: string | null = null;
  private running: RunningWatch | null = null;
  private stopped = false;
  private loopDone: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private syncWaiters: Array<() => void> = [];
  /** Failed lists or watches in a row: the retry backoff doubles with each (reset by a list or an event). */
  private failures = 0;
  /** True once a list has filled the cache (stays true through later errors: the cache is kept). */
  synced = false;
  /** The last error talking to the apiserver, null once a list or watch works again. */
  lastError: string | null = null;
  readonly restarts: Record<WatchRestartReason, number> = { expired: 0, error: 0, closed: 0 };

  constructor(
    private readonly client: KubeClient,
    readonly plural: string,
    /** No byte on a watch for this long: dead, started again (kubernetes.watchSilenceTimeoutMs). */
    private readonly watchSilenceTimeoutMs: number,
    /** Called after the cache changed (an object added, changed or gone; a relist). */
    private readonly onChange: (kind: 'set' | 'delete', obj: T) => void = () => undefined,
    /** What of an object is kept in the cache (e.g. only this node's status entry): applied to every object listed or watched. */
    private readonly keep: (obj: T) => T = (obj) => obj,
  ) {}

  start(): void {
    this.loopDone = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.running?.abort();
    this.wake?.();
    await this.loopDone;
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  get(name: string): T | undefined {
    return this.cache.get(name);
  }

  /** Resolves true once synced, false after timeoutMs without a first list. */
  waitSynced(timeoutMs: number): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.syncWaiters = this.syncWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      this.syncWaiters.push(done);
    });
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.resourceVersion === null) await this.relist();
        this.running = await this.client.watch(resourcePath(this.plural), this.resourceVersion!, { timeoutSeconds: watchTimeoutSeconds(this.watchSilenceTimeoutMs), idleTimeoutMs: this.watchSilenceTimeoutMs }, (type, obj) => this.apply(type, obj as T));
        if (this.stopped) this.running.abort();
        await this.running.ended;
        this.running = null;
        if (this.stopped) break;
        this.restarts.closed++;
        this.lastError = null;
      } catch (err) {
        this.running = null;
        if (this.stopped) break;
        const gone = err instanceof KubeApiError && err.code === 410;
        if (gone) {
          // Too old to resume: list again (what changed meanwhile comes with it).
          this.restarts.expired++;
          this.resourceVersion = null;
          log.info('kubernetes watch expired (410 Gone): listing again', { resource: this.plural });
          continue;
        }
        this.restarts.error++;
        const msg = (err as Error).message;
        if (this.lastError !== msg) log.warn('kubernetes list/watch failed: retrying with backoff (the last list is kept)', { resource: this.plural, err: msg });
        this.lastError = msg;
        this.failures++;
        await this.sleep(Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(this.failures - 1, 20)));
      }
    }
  }

  private async relist(): Promise<void> {
    // Page by page, each page's answer bounded; one consistent snapshot (every page at the first one's resourceVersion).
    const items: T[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    do {
      const q = new URLSearchParams({ limit: String(LIST_PAGE_SIZE), ...(cont ? { continue: cont } : {}) });
      // A continue token that expired (410) fails the whole list: the caller's 410 handling lists again from the start.
      const page = await this.client.request<KubeList<T>>('GET', `${resourcePath(this.plural)}?${q}`, { timeoutMs: LIST_TIMEOUT_MS });
      for (const obj of page.items) items.push(this.keep(obj));
      if (items.length > MAX_CACHED_OBJECTS) throw new Error(`more than the ${MAX_CACHED_OBJECTS} ${this.plural} this daemon keeps`);
      resourceVersion = page.metadata.resourceVersion;
      cont = page.metadata.continue || undefined;
    } while (cont);
    const list = { metadata: { resourceVersion }, items };
    const seen = new Set<string>();
    for (const obj of list.items) {
      seen.add(obj.metadata.name);
      const before = this.cache.get(obj.metadata.name);
      this.cache.set(obj.metadata.name, obj);
      if (before?.metadata.resourceVersion !== obj.metadata.resourceVersion) this.onChange('set', obj);
    }
    for (const [name, obj] of [...this.cache]) {
      if (seen.has(name)) continue;
      this.cache.delete(name);
      this.onChange('delete', obj);
    }
    this.resourceVersion = list.metadata.resourceVersion;
    this.lastError = null;
    this.failures = 0;
    if (!this.synced) {
      this.synced = true;
      log.info('kubernetes resources listed', { resource: this.plural, count: list.items.length });
    }
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private apply(type: string, obj: T): void {
    if (obj?.metadata?.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
    this.lastError = null;
    this.failures = 0;
    if (type === 'BOOKMARK') return;
    const name = obj.metadata.name;
    if (type === 'DELETED') {
      if (this.cache.delete(name)) this.onChange('delete', obj);
      return;
    }
    if (!this.cache.has(name) && this.cache.size >= MAX_CACHED_OBJECTS) {
      log.warn(`kubernetes: more than ${MAX_CACHED_OBJECTS} ${this.plural}: ignoring ${name}`);
      return;
    }
    const kept = this.keep(obj);
    this.cache.set(name, kept);
    this.onChange('set', kept);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }
}
