// The control loop: each pass re-reads the StoragePolicies, measures every
// volume's heat, classifies it, and starts the migrations that are due
// (cooldown, concurrency limit, dry-run and emergency stop honoured). Every
// decision, taken or not, keeps a one-line reason for `couchestor status`.
// A move that failed is retried after a backoff (per volume, in memory).
import fs from 'node:fs';
import path from 'node:path';
import type { Database } from 'lmdb';
import type { Tier } from '../dataplane/meta/store.js';
import type { VolumeManager } from '../dataplane/volumes/manager.js';
import { analyzeMigration, migrateVolume, migrationRunning, type MigrationProgress } from '../dataplane/volumes/migration.js';
import { log } from '../log.js';
import YAML from 'yaml';
import { checkAgainst, matches, parseStoragePolicy, POLICY_KIND, type StoragePolicy } from './policy.js';
import { EC_KIND } from '../dataplane/ec/policy.js';

export interface HeatReading {
  /** Read + write operations per second averaged over the window; null when unknown. */
  iops: number | null;
  why?: string;
}

export interface HeatSource {
  /** Called once per pass before readings are taken (a remote source fetches here). */
  refresh(windowMs: number, volumes: string[]): Promise<void>;
  read(volume: string, windowMs: number): HeatReading;
}

export type Action = 'migrate' | 'would-migrate' | 'stay' | 'cooldown' | 'retry-backoff' | 'concurrency-limit' | 'disabled' | 'no-data' | 'blocked' | 'migrating' | 'unavailable';

export interface Decision {
  volume: string;
  currentTier: Tier;
  targetTier: Tier | null;
  iops: number | null;
  action: Action;
  reason: string;
}

export interface HistoryEntry {
  volume: string;
  from: Tier;
  to: Tier;
  result: 'succeeded' | 'failed' | 'aborted';
  startedAt: string;
  finishedAt: string;
  bytesCopied: number;
  error?: string;
}

export interface Condition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface PolicyStatus {
  name: string;
  file: string;
  phase: 'Active' | 'DryRun' | 'Disabled' | 'Error';
  reason?: string;
  watchedVolumes: number;
  hotVolumes: number;
  warmVolumes: number;
  coldVolumes: number;
  activeMigrations: number;
  totalMigrations: { succeeded: number; failed: number; aborted: number };
  migrationHistory: HistoryEntry[];
  lastReconcileTime: string | null;
  conditions: Condition[];
  decisions: Decision[];
}

/** Bound on migration history kept per policy. */
export const MAX_HISTORY = 50;

/**
 * A volume's last failed moves in a row (ControlLoop.failures): of this
 * volume (its id: a volume deleted and made again under the same name
 * between two passes is another volume) to this tier (a move to another
 * tier, when the heat changes, has not failed and is not held back).
 */
interface FailureBackoff {
  volumeId: number;
  target: Tier;
  /** Failed moves in a row since the last success (or the last pass that found the move blocked). */
  failures: number;
  failedAtMs: number;
  /** No new move of the volume starts before this. */
  retryAtMs: number;
  backoffMs: number;
  error: string;
}

/**
 * Wait before retrying a volume's move after its `failures`-th failure in a
 * row: twice the pass interval, doubling per failure, at most the policy's
 * cooldown (but never less than one pass: a cooldown shorter than the
 * interval must not make a failing move retry every pass again).
 */
export function retryBackoffMs(failures: number, intervalMs: number, cooldownPeriodMs: number): number {
  const capMs = Math.max(intervalMs, cooldownPeriodMs);
  // The exponent is bounded so the product stays finite; the cap is reached long before.
  return Math.min(capMs, intervalMs * 2 ** Math.min(failures, 40));
}

export interface ControlLoopOptions {
  /** StoragePolicy YAML files, re-read every pass (filePolicySource); unused when `policies` is given. */
  policiesDir?: string;
  /** Where the StoragePolicies come from (on Kubernetes: the custom resources); default the files of policiesDir. */
  policies?: PolicySource;
  /** Called after every pass with the policies' status (the Kubernetes status writer). Must not block. */
  onPass?: (status: PolicyStatus[]) => void;
  intervalMs: number;
  /** Preservation mode: migrations keep the old copy (RELEASE skipped). */
  preservationMode: boolean;
  heat: HeatSource;
  /** Names of the ErasureCodingPolicies the daemon knows. */
  ecPolicyNames: () => string[];
  /**
   * Wall clock (ms) the cooldown and the retry backoff are measured on;
   * default Date.now. Tests pass their own to step over a backoff without
   * sleeping (a loaded machine cannot then stretch a pass past one).
   */
  clock?: () => number;
}

/**
 * One StoragePolicy as its source holds it: the document's text (YAML or
 * JSON) for parseStoragePolicy, or why it could not be read (text null).
 */
export interface PolicyDocument {
  /** Status key: the policy's name, or `file:PATH` for a file that is no policy of its own. */
  key: string;
  /** Where it comes from: its file, or its custom resource (`storagepolicies/NAME`). */
  file: string;
  name: string;
  text: string | null;
  error: string | null;
}

/**
 * Where a pass reads the StoragePolicies: the policies directory's files, or
 * on Kubernetes the custom resources (an informer's cache). Called at the
 * start of every pass: it must answer from what it holds, never wait on I/O
 * that can hang (an apiserver).
 */
export interface PolicySource {
  documents(): PolicyDocument[];
}

/**
 * The StoragePolicy files of `dir`. One that cannot be read (a dangling link,
 * a file removed between the listing and the read) or names a policy an
 * earlier file (by file name) already names is an Error entry of its own.
 */
export function filePolicySource(dir: string): PolicySource {
  return {
    documents() {
      let files: string[] = [];
      try {
        files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
      } catch {
        return [];
      }
      const out: PolicyDocument[] = [];
      const byName = new Map<string, string>();
      for (const f of files) {
        const file = path.join(dir, f);
        const fallbackName = path.basename(f).replace(/\.ya?ml$/, '');
        let text: string;
        try {
          text = fs.readFileSync(file, 'utf8');
        } catch (err) {
          out.push({ key: `file:${file}`, file, text: null, error: `cannot read ${file}: ${(err as Error).message}`, name: fallbackName });
          continue;
        }
        const parsed = parseDocument(text);
        // Other kinds (ErasureCodingPolicy) share the directory. A file YAML cannot
        // parse is a StoragePolicy when a kind line says so (its error is reported).
        const kind = parsed.ok ? (parsed.doc as { kind?: unknown } | null)?.kind : undefined;
        if (typeof kind === 'string' && kind !== POLICY_KIND && kind !== EC_KIND) {
          // A misspelt kind was skipped without a word: the operator's policy silently not applied.
          out.push({ key: `file:${file}`, file, text: null, error: `kind ${kind} is neither ${POLICY_KIND} nor ${EC_KIND}: this file is ignored`, name: fallbackName });
          continue;
        }
        if (parsed.ok ? kind !== POLICY_KIND : !/^kind:\s*["']?StoragePolicy["']?\s*(#.*)?$/m.test(text)) continue;
        const docName = parsed.ok ? (parsed.doc as { metadata?: { name?: unknown } } | null)?.metadata?.name : undefined;
        const name = typeof docName === 'string' && docName !== '' ? docName : fallbackName;
        const first = byName.get(name);
        if (first !== undefined) {
          out.push({ key: `file:${file}`, file, text: null, error: `metadata.name ${name} is already the name of the StoragePolicy in ${first}: give each policy its own name (this file is ignored)`, name });
          continue;
        }
        byName.set(name, file);
        out.push({ key: name, file, text, error: null, name });
      }
      return out;
    },
  };
}

interface LoadedPolicy {
  /** Status key: the policy's name, or `file:PATH` for a file that is no policy of its own. */
  key: string;
  file: string;
  policy: StoragePolicy | null;
  error: string | null;
  name: string;
}

/** The file's YAML, or that it is not YAML (parseStoragePolicy then says why). */
function parseDocument(text: string): { ok: true; doc: unknown } | { ok: false } {
  try {
    return { ok: true, doc: YAML.parse(text) };
  } catch {
    return { ok: false };
  }
}

interface PolicyState {
  status: PolicyStatus;
  active: Set<string>;
  lastDecision: Map<string, string>;
}

export class ControlLoop {
  private readonly policies = new Map<string, PolicyState>();
  private readonly lastMigrated: Database<number, string>;
  private readonly inFlight = new Map<string, Promise<void>>();
  /**
   * Volumes whose last move failed, with when to retry (bounded: at most one
   * entry per volume, dropped on success and when the volume is gone). In
   * memory on purpose: a restart is the kind of change (a pool remounted, a
   * disk replaced, a new build) worth one retry at once, and a failure costs
   * no durable write. A failed move changed nothing (the old copy stays
   * authoritative), so forgetting the backoff loses no data, only one retry.
   */
  private readonly failures = new Map<string, FailureBackoff>();
  private timer: NodeJS.Timeout | null = null;
  private passRunning: Promise<void> | null = null;
  private nextPass: Promise<void> | null = null;
  private stopped = false;
  /** Aborted by stop(): the moves in flight end at their next chunk (MigrationAborted). */
  private readonly stopMigrations = new AbortController();
  readonly totals = { succeeded: 0, failed: 0, aborted: 0 };
  /** Volumes passes skipped because they could not be opened (one per volume per pass). */
  volumesSkipped = 0;
  /** This pass's volumes that could not be opened, by name (cleared each pass; at most one per volume). */
  private skippedThisPass = new Map<string, string>();

  private readonly now: () => number;
  private readonly source: PolicySource;

  constructor(
    private readonly manager: VolumeManager,
    private readonly opts: ControlLoopOptions,
  ) {
    this.now = opts.clock ?? Date.now;
    if (opts.policies === undefined && opts.policiesDir === undefined) throw new Error('ControlLoop: policiesDir or policies is required');
    this.source = opts.policies ?? filePolicySource(opts.policiesDir!);
    this.lastMigrated = manager.meta.openDB<number, string>('control-last-migrated');
  }

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.reconcile()
        .catch((err) => log.error('control loop pass failed', { err: (err as Error).message }))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.opts.intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  /**
   * Ends the loop: no new pass, and the moves in flight are aborted at their
   * next chunk (each chunk's COPY + VERIFY + SWITCH is whole): the volume
   * stays on its old tier, the chunks already moved stay where they are and
   * the next start's passes move the rest. Letting a move of a big volume
   * run to its end held the daemon's stop past any grace period (a pod's
   * 60 s), and the kill that followed cut it anyway.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.stopMigrations.abort();
    await this.nextPass?.catch(() => undefined);
    await this.passRunning;
    await Promise.allSettled([...this.inFlight.values()]);
  }

  activeMigrations(): number {
    return this.inFlight.size;
  }

  status(): PolicyStatus[] {
    return [...this.policies.values()].map((p) => ({ ...p.status, activeMigrations: p.active.size }));
  }

  /** Waits for every migration started so far (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()]);
  }

  /**
   * A pass that reads the policies after this call: a running pass read them
   * before (a policy changed meanwhile), so the pass runs after it. Concurrent
   * callers share it. Nothing after stop().
   */
  reconcileAgain(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.passRunning) return this.reconcile();
    this.nextPass ??= this.passRunning
      .catch(() => undefined)
      .then(() => {
        this.nextPass = null;
        return this.stopped ? undefined : this.reconcile();
      });
    return this.nextPass;
  }

  /**
   * One pass; concurrent callers share it. Nothing after stop(): a pass asked
   * for then (POST /v1/reconcile while Daemon.stop closes NBD and the rebuilds
   * before the admin API) would start moves that stop() no longer waits for,
   * running beside the close of the manager and the index.
   */
  reconcile(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.passRunning) this.passRunning = this.pass().finally(() => (this.passRunning = null));
    return this.passRunning;
  }

  /**
   * The source's StoragePolicies, each parsed and checked against this
   * node's pools and ErasureCodingPolicies. One the source could not read, or
   * that is invalid, is an Error entry of its own: it affects nothing else,
   * and the pass goes on with the others.
   */
  private loadPolicies(): LoadedPolicy[] {
    const out: LoadedPolicy[] = [];
    for (const d of this.source.documents()) {
      if (d.text === null) {
        out.push({ key: d.key, file: d.file, policy: null, error: d.error, name: d.name });
        continue;
      }
      try {
        const policy = parseStoragePolicy(d.text);
        const pools = [...this.manager.pools.values()].map((p) => ({ name: p.name, labels: p.rec.labels }));
        checkAgainst(policy, pools, this.opts.ecPolicyNames());
        out.push({ key: d.key, file: d.file, policy, error: null, name: d.name });
      } catch (err) {
        out.push({ key: d.key, file: d.file, policy: null, error: (err as Error).message, name: d.name });
      }
    }
    return out;
  }

  /** The status kept for `key`: a policy's name, or `file:PATH` for a file that is no policy of its own (unreadable, duplicate name). */
  private state(key: string, name: string, file: string): PolicyState {
    let st = this.policies.get(key);
    if (!st) {
      st = {
        active: new Set(),
        lastDecision: new Map(),
        status: {
          name,
          file,
          phase: 'Active',
          watchedVolumes: 0,
          hotVolumes: 0,
          warmVolumes: 0,
          coldVolumes: 0,
          activeMigrations: 0,
          totalMigrations: { succeeded: 0, failed: 0, aborted: 0 },
          migrationHistory: [],
          lastReconcileTime: null,
          conditions: [],
          decisions: [],
        },
      };
      this.policies.set(key, st);
    }
    st.status.name = name;
    st.status.file = file;
    return st;
  }

  private async pass(): Promise<void> {
    this.skippedThisPass = new Map();
    try {
      await this.policiesPass();
      this.reportStatus();
    } finally {
      // One line a pass, however many policies (and decide() calls) met the volume.
      if (this.skippedThisPass.size > 0) {
        this.volumesSkipped += this.skippedThisPass.size;
        log.warn('control loop skipped volumes that cannot be opened; next pass tries again', { volumes: [...this.skippedThisPass].map(([v, e]) => `${v}: ${e}`).join('; ') });
      }
    }
  }

  /**
   * Which kept state (running moves, history, decisions) each loaded entry
   * takes, re-keyed under its key: first the state of its key that comes
   * from its file (nothing changed); then the state of its file (metadata.name
   * edited: the same policy, so its maxConcurrentMigrations still counts the
   * moves it started, also when another file took the old name in the same
   * edit or two files swapped names); then the state of its key (the file
   * renamed, the name kept). A state nothing takes is dropped, or kept while
   * its moves run (under another key if its own is taken).
   */
  private matchStates(loaded: LoadedPolicy[]): void {
    const free = new Map(this.policies);
    const taken = new Map<string, PolicyState>();
    const take = (l: LoadedPolicy, key: string): void => {
      taken.set(l.key, free.get(key)!);
      free.delete(key);
    };
    for (const l of loaded) if (free.get(l.key)?.status.file === l.file) take(l, l.key);
    for (const l of loaded) {
      if (taken.has(l.key)) continue;
      const ofFile = [...free].find(([, st]) => st.status.file === l.file);
      if (ofFile !== undefined) take(l, ofFile[0]);
    }
    for (const l of loaded) if (!taken.has(l.key) && free.has(l.key)) take(l, l.key);
    for (const [key, st] of free) {
      if (st.active.size > 0 && !taken.has(key)) continue;
      this.policies.delete(key);
      if (st.active.size > 0) this.policies.set(`gone:${st.status.file}:${key}`, st);
    }
    for (const [key, st] of taken) {
      if (this.policies.get(key) === st) continue;
      for (const [k, v] of this.policies) if (v === st) this.policies.delete(k);
    }
    for (const [key, st] of taken) if (this.policies.get(key) !== st) this.policies.set(key, st);
  }

  private async policiesPass(): Promise<void> {
    const loaded = this.loadPolicies();
    if (this.failures.size > 0) {
      // Gone, or another volume of the same name (deleted and made again since).
      const ids = new Map(this.manager.listVolumes().map((v) => [v.name, v.id]));
      for (const [name, f] of [...this.failures]) if (ids.get(name) !== f.volumeId) this.failures.delete(name);
    }
    this.matchStates(loaded);
    const claimed = new Map<string, string>();
    const now = new Date().toISOString();
    for (const l of loaded) {
      const st = this.state(l.key, l.name, l.file);
      st.status.lastReconcileTime = now;
      if (!l.policy) {
        st.status.phase = 'Error';
        st.status.reason = l.error!;
        setCondition(st.status, 'Valid', 'False', 'InvalidSpec', l.error!);
        st.status.decisions = [];
        continue;
      }
      setCondition(st.status, 'Valid', 'True', 'SpecValid', 'policy is valid');
      st.status.reason = undefined;
      await this.reconcilePolicy(l.policy, st, claimed);
    }
  }

  private async reconcilePolicy(p: StoragePolicy, st: PolicyState, claimed: Map<string, string>): Promise<void> {
    const s = st.status;
    s.phase = !p.enabled ? 'Disabled' : p.dryRun ? 'DryRun' : 'Active';
    const vols = this.manager.listVolumes().filter((v) => !p.volumeSelector || matches(p.volumeSelector, { 'couchestor.io/volume': v.name, ...v.labels }));
    let heatOk = true;
    try {
      await this.opts.heat.refresh(p.samplingWindowMs, vols.map((v) => v.name));
      setCondition(s, 'HeatSourceAvailable', 'True', 'Reading', 'heat readings available');
    } catch (err) {
      heatOk = false;
      const msg = (err as Error).message;
      if (condition(s, 'HeatSourceAvailable')?.status !== 'False') log.warn('heat source unavailable: no migrations this pass', { policy: p.name, err: msg });
      setCondition(s, 'HeatSourceAvailable', 'False', 'Unreachable', msg);
    }
    s.watchedVolumes = vols.length;
    s.hotVolumes = vols.filter((v) => v.tier === 'hot').length;
    s.warmVolumes = vols.filter((v) => v.tier === 'warm').length;
    s.coldVolumes = vols.filter((v) => v.tier === 'cold').length;
    const decisions: Decision[] = [];
    for (const v of vols) {
      let d: Decision;
      try {
        d = this.decide(p, st, v.name, v.tier, heatOk, claimed);
      } catch (err) {
        // A volume that cannot be opened (its pool offline, a file failing
        // with EIO) gets no move this pass; the later volumes still get their
        // decisions (thrown from here it ended the pass at this volume).
        // Only an open that failed (the manager records it, with the pool);
        // any other error still ends the pass, as before.
        const u = this.manager.openFailure(v.name);
        if (!u) throw err;
        const why = `cannot be opened on pool ${u.pool}: ${u.error}`;
        this.skippedThisPass.set(v.name, why);
        d = { volume: v.name, currentTier: v.tier, targetTier: null, iops: null, action: 'unavailable', reason: `${why}; no migration until it opens` };
      }
      decisions.push(d);
      const key = `${d.action}:${d.targetTier}`;
      if (st.lastDecision.get(v.name) !== key) {
        st.lastDecision.set(v.name, key);
        log.info('decision', { policy: p.name, volume: d.volume, currentTier: d.currentTier, targetTier: d.targetTier, iops: d.iops, action: d.action, why: d.reason });
      }
      if (d.action === 'migrate') this.startMigration(p, st, v.name, d.targetTier!);
    }
    s.decisions = decisions;
  }

  private decide(p: StoragePolicy, st: PolicyState, name: string, tier: Tier, heatOk: boolean, claimed: Map<string, string>): Decision {
    const base = { volume: name, currentTier: tier };
    const owner = claimed.get(name);
    if (owner) return { ...base, targetTier: null, iops: null, action: 'stay', reason: `managed by policy ${owner} (first match wins)` };
    claimed.set(name, p.name);
    if (this.inFlight.has(name) || migrationRunning(this.manager, name)) return { ...base, targetTier: null, iops: null, action: 'migrating', reason: 'a migration of this volume is in progress' };
    if (!heatOk) return { ...base, targetTier: null, iops: null, action: 'no-data', reason: 'heat source unavailable; no migrations until it answers' };
    const h = this.opts.heat.read(name, p.samplingWindowMs);
    if (h.iops === null) return { ...base, targetTier: null, iops: null, action: 'no-data', reason: h.why ?? 'no heat reading yet' };
    const iops = round(h.iops);
    let target: Tier;
    let why: string;
    if (h.iops >= p.highWatermarkIOPS) {
      target = 'hot';
      why = `${iops} IOPS >= high watermark ${p.highWatermarkIOPS}`;
    } else if (h.iops <= p.lowWatermarkIOPS) {
      target = 'cold';
      why = `${iops} IOPS <= low watermark ${p.lowWatermarkIOPS}`;
    } else {
      target = 'warm';
      why = `${iops} IOPS between watermarks ${p.lowWatermarkIOPS} and ${p.highWatermarkIOPS}`;
    }
    if (target === 'warm' && !p.warmPoolSelector) {
      return { ...base, targetTier: tier, iops, action: 'stay', reason: `${why}; no warm tier in this policy, stays ${tier}` };
    }
    if (target === tier) {
      // A move that was interrupted (crash) or aborted leaves chunks outside
      // the tier's pool file; finishing it is a move to the same tier, under
      // the same emergency stop, cooldown, dry run and concurrency limit.
      // A move to cold flips the record to cold before its copy, so one killed
      // mid-COPY leaves a cold volume with chunks still in its hot file
      // (hasChunksOffPlacement is false for cold): nothing else moves them
      // (the destager takes only journaled chunks), so the loop finishes it.
      // Asked of every volume at every pass: a closed one is answered from the index, not opened.
      const left = this.manager.unfinishedMove(name);
      if (tier === 'cold' ? left.chunksOnFile === 0 : !left.offPlacement) {
        // Where a failed move would have put it (a `migrate` from the CLI or
        // the API did it): that failure says nothing of the next move here.
        if (this.failures.get(name)?.target === tier) this.failures.delete(name);
        return { ...base, targetTier: target, iops, action: 'stay', reason: `${why}; already ${tier}` };
      }
      why =
        tier === 'cold'
          ? `${why}; already cold, but an interrupted move left ${left.chunksOnFile} chunks in its file: finishing it`
          : `${why}; already ${tier}, but an interrupted move left chunks on other pools: finishing it`;
    }
    if (!p.enabled) return { ...base, targetTier: target, iops, action: 'disabled', reason: `${why}; policy disabled (emergency stop): nothing new starts` };
    const last = this.lastMigrated.get(name);
    const nowMs = this.now();
    if (last !== undefined && nowMs - last < p.cooldownPeriodMs) {
      const leftS = Math.ceil((p.cooldownPeriodMs - (nowMs - last)) / 1000);
      return { ...base, targetTier: target, iops, action: 'cooldown', reason: `${why}; in cooldown for ${leftS}s more` };
    }
    // Borrowed for the look (closed again after it unless something holds it): a move that starts opens it for itself.
    const { blocked, volumeId } = this.manager.withVolume(name, (vol) => ({ blocked: analyzeMigration(this.manager, vol, target), volumeId: vol.rec.id }));
    if (blocked) {
      // ANALYZE now names what is wrong (a cold pool missing, no room): once
      // it passes again something changed (the pool is back), which is worth
      // a retry at once rather than the rest of a backoff.
      this.failures.delete(name);
      return { ...base, targetTier: target, iops, action: 'blocked', reason: `${why}; cannot move: ${blocked}` };
    }
    const failed = this.failures.get(name);
    if (failed !== undefined && failed.volumeId === volumeId && failed.target === target && nowMs < failed.retryAtMs) {
      const inS = seconds(failed.retryAtMs - nowMs);
      return {
        ...base,
        targetTier: target,
        iops,
        action: 'retry-backoff',
        reason: `${why}; last move failed at ${new Date(failed.failedAtMs).toISOString()} (${failed.failures} in a row), retry in ${inS} (backoff ${seconds(failed.backoffMs)}): ${failed.error}`,
      };
    }
    if (p.dryRun) return { ...base, targetTier: target, iops, action: 'would-migrate', reason: `${why}; dry run: would migrate ${tier} -> ${target}` };
    if (st.active.size >= p.maxConcurrentMigrations) {
      return { ...base, targetTier: target, iops, action: 'concurrency-limit', reason: `${why}; ${st.active.size} of ${p.maxConcurrentMigrations} migrations running` };
    }
    return { ...base, targetTier: target, iops, action: 'migrate', reason: `${why}; migrating ${tier} -> ${target}` };
  }

  private startMigration(p: StoragePolicy, st: PolicyState, name: string, to: Tier): void {
    // A pass that was running when stop() came: it would start a move only to abort it at once (a SWITCH of the tier and its revert).
    if (this.stopped) return;
    st.active.add(name);
    const startedAt = new Date().toISOString();
    let last: MigrationProgress | null = null;
    const rec = this.manager.getVolumeRecord(name)!;
    const from = rec.tier;
    const preserve = this.preserveFor(name, to);
    log.info('migration started', { policy: p.name, volume: name, from, to, preservationMode: preserve });
    const run = migrateVolume(this.manager, name, to, { preserve, onProgress: (pr) => (last = pr), signal: this.stopMigrations.signal })
      .then(
        async (done) => {
          this.failures.delete(name);
          await this.lastMigrated.put(name, this.now());
          this.finish(st, { volume: name, from, to, result: 'succeeded', startedAt, finishedAt: new Date().toISOString(), bytesCopied: done.bytesCopied });
        },
        (err: Error) => {
          // The old copy stays authoritative; a later pass retries, after a
          // backoff when the move failed: a target that keeps failing (a
          // pool's volumes/ unusable, a read error) must not be copied to,
          // and logged, every pass. Not after an abort: an abort is asked
          // for (the loop aborts a move only at its stop; the emergency stop
          // lets moves finish and starts none), it says nothing of whether
          // the move can succeed.
          const aborted = err.name === 'MigrationAborted';
          if (!aborted) {
            const prev = this.failures.get(name);
            const failures = (prev !== undefined && prev.volumeId === rec.id && prev.target === to ? prev.failures : 0) + 1;
            const backoffMs = retryBackoffMs(failures, this.opts.intervalMs, p.cooldownPeriodMs);
            const now = this.now();
            this.failures.set(name, { volumeId: rec.id, target: to, failures, failedAtMs: now, retryAtMs: now + backoffMs, backoffMs, error: err.message });
          }
          this.finish(st, {
            volume: name,
            from,
            to,
            result: aborted ? 'aborted' : 'failed',
            startedAt,
            finishedAt: new Date().toISOString(),
            bytesCopied: (last as MigrationProgress | null)?.bytesCopied ?? 0,
            error: err.message,
          }, aborted ? undefined : this.failures.get(name)?.backoffMs);
        },
      )
      .finally(() => {
        st.active.delete(name);
        this.inFlight.delete(name);
        // A move's end changes the policy's counts: handed on without waiting for the next pass.
        this.reportStatus();
      });
    this.inFlight.set(name, run);
  }

  /**
   * Preservation mode of a move the loop starts: the loop's own, except for
   * finishing a move a kill cut mid-COPY (the record already names the
   * target tier: a move to cold with chunks left in the hot file, a hot <->
   * warm one with chunks left on the old pool), which keeps that move's mode
   * as its tier switch recorded it, durably, before the first chunk was
   * copied: preserving when keptFilePools lists a pool whose file is still
   * open (the source file it was emptying; never the target's, which
   * setTier leaves out). Else a preserving move (`migrate --preserve` beside
   * a loop without it, or a restart without --preserve) had the file it was
   * asked to keep truncated (cold) or deleted (hot <-> warm), and a plain one
   * (whose destaged ranges a restart has punched) had its file kept, with
   * holes, as a "preserved copy". A record written before keptFilePools
   * existed says nothing: the loop's own mode. Nor does one of a move from
   * cold to hot/warm (only Cold chunks left off placement, no other pool's
   * file in use): such a move empties stripes, not files, so the list never
   * names its source; reading it as "plain" made a preserving loop free the
   * old stripes it keeps (test/review-control-finish-from-cold-mode).
   */
  private preserveFor(name: string, to: Tier): boolean {
    const rec = this.manager.getVolumeRecord(name);
    if (rec === undefined || rec.tier !== to || rec.keptFilePools === undefined) return this.opts.preservationMode;
    // Borrowed for the look (pinned, it stayed open for good); the move that follows borrows it for its run.
    const kept = rec.keptFilePools;
    return this.manager.withVolume(name, (vol) => {
      if (to !== 'cold' && vol.poolsInUse().every((p) => p.name === rec.poolName)) return this.opts.preservationMode;
      return vol.openFilePools().some((p) => kept.includes(p));
    });
  }

  /** Hands the status to onPass (the Kubernetes status writer, which compares and coalesces). */
  private reportStatus(): void {
    if (!this.opts.onPass) return;
    try {
      this.opts.onPass(this.status());
    } catch (err) {
      log.warn('policy status not handed on', { err: (err as Error).message });
    }
  }

  private finish(st: PolicyState, h: HistoryEntry, retryInMs?: number): void {
    st.status.totalMigrations[h.result]++;
    this.totals[h.result]++;
    st.status.migrationHistory.push(h);
    if (st.status.migrationHistory.length > MAX_HISTORY) st.status.migrationHistory.shift();
    const fields = { volume: h.volume, from: h.from, to: h.to, result: h.result, bytesCopied: h.bytesCopied, ...(h.error ? { err: h.error } : {}), ...(retryInMs !== undefined ? { retryInMs } : {}) };
    if (h.result === 'succeeded') log.info('migration finished', fields);
    else log.warn('migration did not complete; old copy kept', fields);
  }
}

/** A duration for a decision's reason: tenths below 10 s, whole seconds above. */
function seconds(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  return s < 10 ? `${(Math.ceil(s * 10) / 10).toFixed(1)}s` : `${Math.ceil(s)}s`;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function condition(s: PolicyStatus, type: string): Condition | undefined {
  return s.conditions.find((c) => c.type === type);
}

function setCondition(s: PolicyStatus, type: string, status: 'True' | 'False', reason: string, message: string): void {
  const cur = condition(s, type);
  if (cur && cur.status === status && cur.reason === reason && cur.message === message) return;
  const next = { type, status, reason, message, lastTransitionTime: cur && cur.status === status ? cur.lastTransitionTime : new Date().toISOString() };
  if (cur) Object.assign(cur, next);
  else s.conditions.push(next);
}
