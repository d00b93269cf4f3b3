// The daemon on Kubernetes: StoragePolicies and ErasureCodingPolicies are
// custom resources (group storage.billyronks.io/v1, cluster-scoped), read
// through list + watch caches. Each node writes its status of each policy
// into an object of its own (StoragePolicyNodeStatus, ErasureCodingPolicy-
// NodeStatus, one per policy and node), which no daemon watches: a node's
// write reaches no other node (deploy/README.md "Status").
import fs from 'node:fs';
import os from 'node:os';
import { Counter, Gauge, type Registry } from 'prom-client';
import { isKubeNodeName, KUBE_NODE_NAME_RULE, type KubernetesConfig } from '../../config.js';
import type { VolumeManager } from '../../dataplane/volumes/manager.js';
import { EC_API_VERSION, EC_KIND, parsePolicyYaml, type ErasureCodingPolicy } from '../../dataplane/ec/policy.js';
import { log } from '../../log.js';
import type { HealthProbe } from '../health/index.js';
import type { Condition, PolicyDocument, PolicySource, PolicyStatus } from '../loop.js';
import { POLICY_API_VERSION, POLICY_KIND } from '../policy.js';
import { KubeClient, resourcePath, type KubeList, type KubeObject } from './client.js';
import { Informer } from './informer.js';
import { DepartedNodePruner } from './prune.js';
import { labelValue, NODE_LABEL, NODE_STATUS_KINDS, StatusWriter, type StatusWriteResult } from './status.js';

export const STORAGE_POLICIES = 'storagepolicies';
export const EC_POLICIES = 'erasurecodingpolicies';

/** Deadline of the one read of this node's own status objects at start. */
const OWN_STATUS_READ_TIMEOUT_MS = 10_000;
/** Bounds of the status entry (the CRDs' maxItems / maxLength). */
const MAX_DECISIONS = 20;
const MAX_HISTORY = 10;
const MAX_REASON_CHARS = 1024;
const MAX_DECISION_REASON_CHARS = 512;
const MAX_CONDITION_REASON_CHARS = 128;

/** What the daemon took from the cluster for its cold tier at start. */
export type ColdPolicyChoice = { policy: ErasureCodingPolicy; generation: number | undefined } | { disabled: string };

export class KubePolicies {
  readonly nodeName: string;
  private readonly client: KubeClient;
  readonly storagePolicies: Informer;
  readonly ecPolicies: Informer;
  readonly writer: StatusWriter;
  readonly pruner: DepartedNodePruner;
  private manager: VolumeManager | null = null;
  /** The cold tier's policy as the daemon started it (a later change of the CR takes effect at the next start). */
  private cold: ColdPolicyChoice | null = null;
  /** The ErasureCodingPolicies' conditions as last computed (their lastTransitionTime); one entry per policy in the cache. */
  private readonly ecConditions = new Map<string, Condition[]>();
  private passTimer: NodeJS.Timeout | null = null;
  /** This node's ErasureCodingPolicy conditions as its last run left them, read once at start (loadOwnConditions). */
  private ownConditionsLoaded: Promise<void> = Promise.resolve();
  /** Asked for a control-loop pass (a spec changed); set by the daemon once the loop exists. */
  onSpecChange: () => void = () => undefined;

  /** Loads the kubeconfig (or the service account): throws InvalidKubeconfig with the reason. */
  static async create(cfg: KubernetesConfig, opts: { ecCacheFile?: string } = {}): Promise<KubePolicies> {
    const env = process.env.NODE_NAME;
    if (cfg.nodeName === null && env !== undefined && !isKubeNodeName(env)) throw new Error(`env NODE_NAME must be a Kubernetes node name (${KUBE_NODE_NAME_RULE}), got ${JSON.stringify(env)}`);
    // In a pod (no hostNetwork) the host name is the pod's: a new key in every status at every pod restart, the old ones left for good.
    if (cfg.nodeName === null && !env && process.env.KUBERNETES_SERVICE_HOST) throw new Error("kubernetes.nodeName is null and env NODE_NAME is not set: in a pod the host name is the pod's name, which changes with every pod (each would leave its own status entries behind); set NODE_NAME from spec.nodeName (downward API, as deploy/daemonset.yaml does) or kubernetes.nodeName");
    // Off a pod: the host name, lower-cased as the kubelet names its Node (else "Worker-1" wrote a key no Node has,
    // and the other nodes' pruner took this live node for departed). One that cannot be a Node name is refused.
    const host = os.hostname().trim().toLowerCase();
    if (cfg.nodeName === null && !env && !isKubeNodeName(host)) throw new Error(`kubernetes.nodeName is null, env NODE_NAME is not set and the host name ${JSON.stringify(os.hostname())} is not a Kubernetes node name (${KUBE_NODE_NAME_RULE}): set kubernetes.nodeName or env NODE_NAME to this node's Node name`);
    return new KubePolicies(cfg, await KubeClient.load(cfg.kubeconfig), opts.ecCacheFile ?? null);
  }

  private constructor(
    private readonly cfg: KubernetesConfig,
    client: KubeClient,
    /** The cold tier's ErasureCodingPolicy as last read from the cluster (the data directory): run when the apiserver does not answer at start. */
    private readonly ecCacheFile: string | null,
  ) {
    this.nodeName = cfg.nodeName ?? (process.env.NODE_NAME || os.hostname().trim().toLowerCase());
    this.client = client;
    // Status writes do not change metadata.generation: only a spec change asks for a pass.
    const changed = (kind: 'set' | 'delete', obj: KubeObject, plural: string, seen: Map<string, number | undefined>) => {
      const gen = obj.metadata.generation;
      if (kind === 'delete') {
        seen.delete(obj.metadata.name);
        this.writer.forget(plural, obj.metadata.name);
        if (plural === EC_POLICIES) {
          this.ecConditions.delete(obj.metadata.name);
          // Nothing stops now, which is why it must be said: the next start finds no policy and runs no cold tier.
          if (this.manager?.cold?.policy.name === obj.metadata.name) {
            log.warn(`ErasureCodingPolicy ${obj.metadata.name} was deleted while the cold tier runs it: it keeps running until the daemon stops, but the next start will find no policy and start no cold tier (cold volumes unavailable) unless it is created again`, { node: this.nodeName });
          }
        }
      } else if (seen.has(obj.metadata.name) && seen.get(obj.metadata.name) === gen) {
        return;
      } else {
        seen.set(obj.metadata.name, gen);
      }
      // One pass for a burst of changes (a relist hands every object at once).
      this.passTimer ??= setTimeout(() => {
        this.passTimer = null;
        this.onSpecChange();
      }, 50);
    };
    const spGen = new Map<string, number | undefined>();
    const ecGen = new Map<string, number | undefined>();
    // The fields read here: not the status (the daemons no longer write one; an old version's status.nodes is
    // dropped by the CRD's schema) nor managedFields (they grow with every writer).
    const keep = (obj: KubeObject): KubeObject => {
      const { name, uid, resourceVersion, generation } = obj.metadata;
      return { apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name, uid, resourceVersion, generation }, spec: obj.spec };
    };
    this.storagePolicies = new Informer(this.client, STORAGE_POLICIES, cfg.watchSilenceTimeoutMs, (k, o) => changed(k, o, STORAGE_POLICIES, spGen), keep);
    this.ecPolicies = new Informer(this.client, EC_POLICIES, cfg.watchSilenceTimeoutMs, (k, o) => changed(k, o, EC_POLICIES, ecGen), keep);
    this.writer = new StatusWriter(this.client, this.nodeName, cfg.statusWriteIntervalMs);
    this.pruner = new DepartedNodePruner(this.client, this.nodeName, cfg.departedNodeEntryTimeoutMs);
  }

  /** The apiserver client's credential re-reads after a 401 (/metrics, tests). */
  get credentialReloads(): { ok: number; failed: number } {
    return this.client.credentialReloads;
  }

  start(): void {
    log.info('on Kubernetes: policies are the StoragePolicy and ErasureCodingPolicy custom resources (the policies directory and coldTier.ecPolicyFile are not read)', {
      server: this.client.server,
      node: this.nodeName,
      ecPolicy: this.cfg.ecPolicyName,
    });
    this.storagePolicies.start();
    this.ecPolicies.start();
    this.pruner.start();
    this.ownConditionsLoaded = this.loadOwnConditions();
  }

  /**
   * The conditions of this node's ErasureCodingPolicyNodeStatus objects, as its last run wrote them: a condition
   * that did not change keeps its lastTransitionTime across a restart. One list (this node's label), at start.
   */
  private async loadOwnConditions(): Promise<void> {
    try {
      const q = new URLSearchParams({ labelSelector: `${NODE_LABEL}=${labelValue(this.nodeName)}` });
      const list = await this.client.request<KubeList<KubeObject>>('GET', `${resourcePath(NODE_STATUS_KINDS[EC_POLICIES]!.plural)}?${q}`, { timeoutMs: OWN_STATUS_READ_TIMEOUT_MS });
      for (const o of list.items) {
        const spec = o.spec as { policy?: unknown; node?: unknown } | undefined;
        const conditions = (o.status as { conditions?: unknown } | undefined)?.conditions;
        if (spec?.node !== this.nodeName || typeof spec.policy !== 'string' || !Array.isArray(conditions)) continue;
        if (!this.ecConditions.has(spec.policy)) this.ecConditions.set(spec.policy, conditions as Condition[]);
      }
    } catch (err) {
      // The conditions start again (their lastTransitionTime now): nothing else depends on them.
      log.info('could not read this node\'s ErasureCodingPolicy status objects: their conditions start again', { node: this.nodeName, err: (err as Error).message });
    }
  }

  async stop(): Promise<void> {
    this.onSpecChange = () => undefined;
    if (this.passTimer) clearTimeout(this.passTimer);
    await Promise.all([this.storagePolicies.stop(), this.ecPolicies.stop(), this.writer.stop(), this.pruner.stop()]);
    this.client.close();
  }

  /**
   * The cold tier's ErasureCodingPolicy (kubernetes.ecPolicyName), once the
   * first list is in, waiting at most startSyncTimeoutMs: else the reason the
   * cold tier starts without one. Read once: the daemon runs it until restart.
   */
  async coldPolicy(coldPoolCount: number): Promise<ColdPolicyChoice> {
    const name = this.cfg.ecPolicyName;
    const synced = await this.ecPolicies.waitSynced(this.cfg.startSyncTimeoutMs);
    if (!synced) {
      const why = `the apiserver (${this.client.server}) did not answer within ${this.cfg.startSyncTimeoutMs} ms (${this.ecPolicies.lastError ?? 'no answer'})`;
      // A node that starts during a control-plane outage (a reboot) keeps its cold volumes: the spec it last read.
      const cached = this.readEcCache(name, coldPoolCount);
      if (cached) {
        this.cold = cached;
        log.warn(`ErasureCodingPolicy ${name} not read: ${why}; the cold tier runs it as last read from the cluster (${this.ecCacheFile}); a change made since takes effect at the next start`);
      } else {
        this.cold = { disabled: `ErasureCodingPolicy ${name} not read: ${why}; restart the daemon once it is reachable` };
      }
    } else {
      const obj = this.ecPolicies.get(name);
      if (!obj) {
        this.cold = { disabled: `ErasureCodingPolicy ${name} not found` };
      } else {
        try {
          this.cold = { policy: parsePolicyYaml(ecText(obj), coldPoolCount), generation: obj.metadata.generation };
          this.writeEcCache(obj);
        } catch (err) {
          this.cold = { disabled: `ErasureCodingPolicy ${name} is invalid on this node: ${(err as Error).message}` };
        }
      }
    }
    return this.cold;
  }

  private readEcCache(name: string, coldPoolCount: number): ColdPolicyChoice | null {
    if (!this.ecCacheFile) return null;
    try {
      const obj = JSON.parse(fs.readFileSync(this.ecCacheFile, 'utf8')) as KubeObject;
      if (obj.metadata?.name !== name) return null;
      return { policy: parsePolicyYaml(ecText(obj), coldPoolCount), generation: obj.metadata.generation };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('the cached ErasureCodingPolicy cannot be used', { file: this.ecCacheFile, err: (err as Error).message });
      return null;
    }
  }

  /** Kept when it changed: written to a temp file, synced and renamed over the old (a crash leaves one or the other). */
  private writeEcCache(obj: KubeObject): void {
    if (!this.ecCacheFile) return;
    const text = `${JSON.stringify({ apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name: obj.metadata.name, generation: obj.metadata.generation }, spec: obj.spec })}\n`;
    try {
      if (fs.existsSync(this.ecCacheFile) && fs.readFileSync(this.ecCacheFile, 'utf8') === text) return;
      const tmp = `${this.ecCacheFile}.tmp`;
      const fd = fs.openSync(tmp, 'w');
      try {
        fs.writeSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, this.ecCacheFile);
    } catch (err) {
      log.warn('cannot keep the ErasureCodingPolicy for a start without the apiserver', { file: this.ecCacheFile, err: (err as Error).message });
    }
  }

  /** The manager whose cold tier and pools the ErasureCodingPolicy status describes. */
  attach(manager: VolumeManager): void {
    this.manager = manager;
  }

  /** metadata.generation of each StoragePolicy as the last pass read it: the status's observedGeneration. */
  private readonly readGenerations = new Map<string, number | undefined>();

  /** The loop's policy source: the StoragePolicy cache, by name (first match wins in name order, as files go by file name). */
  readonly source: PolicySource = {
    documents: (): PolicyDocument[] => {
      const objs = this.storagePolicies.list().sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
      this.readGenerations.clear();
      for (const o of objs) this.readGenerations.set(o.metadata.name, o.metadata.generation);
      return objs.map((o) => ({
          key: o.metadata.name,
          file: `${STORAGE_POLICIES}/${o.metadata.name}`,
          name: o.metadata.name,
          // The parser reads YAML, of which JSON is a part; the object as the apiserver keeps it, with its own kind.
          text: JSON.stringify({ apiVersion: o.apiVersion ?? POLICY_API_VERSION, kind: o.kind ?? POLICY_KIND, metadata: { name: o.metadata.name }, spec: o.spec }),
          error: null,
        }));
    },
  };

  /** The ErasureCodingPolicies a StoragePolicy's ecPolicyRef may name: every one in the cluster. */
  ecPolicyNames(): string[] {
    return this.ecPolicies.list().map((o) => o.metadata.name);
  }

  /** Why /readyz fails: the policy source has not listed yet. */
  notReadyReasons(): string[] {
    const out: string[] = [];
    for (const inf of [this.storagePolicies, this.ecPolicies]) {
      if (!inf.synced) out.push(`policy source not synced: ${inf.plural} not listed yet from the apiserver${inf.lastError ? ` (${inf.lastError})` : ''}`);
    }
    return out;
  }

  /** After a control-loop pass (and a migration's end): this node's entries, written when they changed. */
  afterPass(statuses: PolicyStatus[]): void {
    for (const s of statuses) {
      const obj = this.storagePolicies.get(s.name);
      // A state kept for running moves of a policy deleted meanwhile (loop "gone:" key): nothing to write.
      if (!obj || s.file !== `${STORAGE_POLICIES}/${s.name}`) continue;
      const { entry, compareKey } = storagePolicyEntry(s, this.readGenerations.get(s.name) ?? obj.metadata.generation);
      this.writer.set(STORAGE_POLICIES, s.name, obj.metadata.uid, entry, compareKey);
    }
    // Once the last run's conditions are in (at once, after the first pass).
    void this.ownConditionsLoaded.then(() => this.writeEcStatus());
  }

  private writeEcStatus(): void {
    const now = new Date().toISOString();
    for (const obj of this.ecPolicies.list()) {
      const name = obj.metadata.name;
      // Ours from the last computation, or as the last run left them (loadOwnConditions).
      const prevConditions = this.ecConditions.get(name) ?? [];
      const conditions: Condition[] = [];
      const cond = (type: string, status: 'True' | 'False', reason: string, message: string) => {
        const was = prevConditions.find((c) => c.type === type);
        conditions.push({ type, status, reason: clip(reason, MAX_CONDITION_REASON_CHARS), message: clip(message, MAX_REASON_CHARS), lastTransitionTime: was && was.status === status ? was.lastTransitionTime : now });
      };
      const coldPools = this.manager ? [...this.manager.pools.values()].filter((p) => p.rec.tier === 'cold').length : 0;
      let spec: ErasureCodingPolicy | null = null;
      let invalid: string | null = null;
      try {
        spec = parsePolicyYaml(ecText(obj), coldPools);
      } catch (err) {
        invalid = (err as Error).message;
      }
      const running = this.manager?.cold?.policy;
      const entry: Record<string, unknown> = { coldPools, observedGeneration: obj.metadata.generation ?? 0 };
      if (running && running.name === name) {
        entry.phase = 'Active';
        entry.activeDataShards = running.dataShards;
        entry.activeParityShards = running.parityShards;
        const c = this.manager!.cold!.reconstructor.counts();
        entry.stripes = { healthy: c.Healthy, degraded: c.Degraded, rebuilding: c.Reconstructing, unrecoverable: c.Failed };
        if (invalid) cond('Valid', 'False', 'InvalidSpec', `${invalid}; the node keeps running the spec it started with`);
        else cond('Valid', 'True', 'SpecValid', 'policy is valid on this node');
        const same = spec !== null && sameCoding(spec, running);
        if (same) cond('Applied', 'True', 'Running', `the cold tier writes ${running.dataShards}+${running.parityShards} stripes with this spec`);
        else cond('Applied', 'False', 'RestartRequired', `the spec changed since the daemon started (running ${describeCoding(running)}${spec ? `, spec ${describeCoding(spec)}` : ''}): new stripes use the new spec after the next start; existing stripes keep their own k+m`);
        const bad = c.Failed > 0 ? `${c.Failed} stripes unrecoverable` : c.Degraded + c.Reconstructing > 0 ? `${c.Degraded} degraded, ${c.Reconstructing} rebuilding` : '';
        cond('StripesHealthy', bad ? 'False' : 'True', bad ? (c.Failed > 0 ? 'Unrecoverable' : 'Degraded') : 'AllHealthy', bad || 'every stripe healthy');
      } else if (invalid) {
        entry.phase = 'Invalid';
        entry.reason = clip(invalid, MAX_REASON_CHARS);
        cond('Valid', 'False', 'InvalidSpec', invalid);
      } else {
        entry.phase = 'Unused';
        cond('Valid', 'True', 'SpecValid', 'policy is valid on this node');
        if (name === this.cfg.ecPolicyName && this.cold && 'disabled' in this.cold) {
          entry.reason = clip(`the cold tier did not start with it: ${this.cold.disabled}`, MAX_REASON_CHARS);
          cond('Applied', 'False', 'NotStarted', entry.reason as string);
        }
      }
      entry.conditions = conditions;
      this.ecConditions.set(name, conditions);
      // lastUpdateTime is left out of the comparison: a write only when something else changed. The healthy
      // stripe count grows with every stripe written: compared by its power of two (a write when it doubles, the
      // exact figure at the 5-minute refresh), else a node writing to its cold tier rewrote this object, and
      // sent it to every node's watch, after every pass. The unhealthy counts are compared exactly.
      const stripes = entry.stripes as { healthy: number } | undefined;
      const compareKey = JSON.stringify(stripes ? { ...entry, stripes: { ...stripes, healthy: Math.floor(Math.log2(stripes.healthy + 1)) } } : entry);
      entry.lastUpdateTime = now;
      this.writer.set(EC_POLICIES, name, obj.metadata.uid, entry, compareKey);
    }
  }
}

/**
 * The cold tier's ErasureCodingPolicy read once from the cluster, for a
 * process that runs no informers (an offline command on a node on Kubernetes,
 * where no policy file is written).
 */
export async function readColdPolicyOnce(cfg: KubernetesConfig, coldPoolCount: number, ecCacheFile?: string): Promise<ColdPolicyChoice> {
  const kube = await KubePolicies.create(cfg, ecCacheFile ? { ecCacheFile } : {});
  kube.ecPolicies.start();
  try {
    return await kube.coldPolicy(coldPoolCount);
  } finally {
    await kube.stop();
  }
}

/** The StoragePolicy status entry of this node, and the part whose change is worth a write. */
export function storagePolicyEntry(s: PolicyStatus, generation: number | undefined): { entry: Record<string, unknown>; compareKey: string } {
  // Not "stay" first, then by volume: the 20 kept are the ones a reader wants.
  const decisions = [...s.decisions].sort((a, b) => Number(a.action === 'stay') - Number(b.action === 'stay') || (a.volume < b.volume ? -1 : a.volume > b.volume ? 1 : 0)).slice(0, MAX_DECISIONS);
  const entry: Record<string, unknown> = {
    phase: s.phase,
    ...(s.reason !== undefined ? { reason: clip(s.reason, MAX_REASON_CHARS) } : {}),
    observedGeneration: generation ?? 0,
    watchedVolumes: s.watchedVolumes,
    hotVolumes: s.hotVolumes,
    warmVolumes: s.warmVolumes,
    coldVolumes: s.coldVolumes,
    activeMigrations: s.activeMigrations,
    totalMigrations: s.totalMigrations,
    conditions: s.conditions.slice(0, 8).map((c) => ({ ...c, reason: clip(c.reason, MAX_CONDITION_REASON_CHARS), message: clip(c.message, MAX_REASON_CHARS) })),
    decisionsTotal: s.decisions.length,
    decisions: decisions.map((d) => ({ volume: d.volume, currentTier: d.currentTier, targetTier: d.targetTier, iops: d.iops, action: d.action, reason: clip(d.reason, MAX_DECISION_REASON_CHARS) })),
    migrationHistory: s.migrationHistory.slice(-MAX_HISTORY).map((h) => ({ ...h, ...(h.error !== undefined ? { error: clip(h.error, MAX_DECISION_REASON_CHARS) } : {}) })),
  };
  // A decision's IOPS and reason (which quotes them) change every pass: compared by what it decided.
  const compareKey = JSON.stringify({ ...entry, decisions: decisions.map((d) => [d.volume, d.currentTier, d.targetTier, d.action]) });
  entry.lastReconcileTime = s.lastReconcileTime;
  return { entry, compareKey };
}

function ecText(obj: KubeObject): string {
  return JSON.stringify({ apiVersion: obj.apiVersion ?? EC_API_VERSION, kind: obj.kind ?? EC_KIND, metadata: { name: obj.metadata.name }, spec: obj.spec });
}

function sameCoding(a: ErasureCodingPolicy, b: ErasureCodingPolicy): boolean {
  return (
    a.dataShards === b.dataShards &&
    a.parityShards === b.parityShards &&
    a.stripeSizeBytes === b.stripeSizeBytes &&
    a.compression === b.compression &&
    a.scrubbingEnabled === b.scrubbingEnabled &&
    a.scrubIntervalMs === b.scrubIntervalMs
  );
}

function describeCoding(p: ErasureCodingPolicy): string {
  return `${p.dataShards}+${p.parityShards}, ${p.stripeSizeBytes}-byte stripes, compression ${p.compression}`;
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 3)}...`;
}

/** /readyz with the policy source's reasons added. */
export function readyWithPolicySource(ready: HealthProbe, kube: KubePolicies): HealthProbe {
  return async () => {
    const r = await ready();
    const extra = kube.notReadyReasons();
    return extra.length === 0 ? r : { ok: false, reasons: [...r.reasons, ...extra] };
  };
}

/** couchestor_kube_* on /metrics. */
export function registerKubeMetrics(kube: KubePolicies, registry: Registry): void {
  new Counter({
    name: 'couchestor_kube_watch_restarts_total',
    help: 'Kubernetes watches started again, by resource and why (expired: 410 Gone, relisted; error: failed, retried with backoff; closed: ended by the server, resumed)',
    labelNames: ['resource', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const inf of [kube.storagePolicies, kube.ecPolicies]) for (const [reason, n] of Object.entries(inf.restarts)) this.inc({ resource: inf.plural, reason }, n);
    },
  });
  new Counter({
    name: 'couchestor_kube_status_writes_total',
    help: "Status writes (this node's StoragePolicyNodeStatus / ErasureCodingPolicyNodeStatus objects) to the apiserver by result (ok; failed: retried with backoff; gone: the object of a deleted policy deleted; rejected: refused, not retried until the status changes)",
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [result, n] of Object.entries(kube.writer.writes) as [StatusWriteResult, number][]) this.inc({ result }, n);
    },
  });
  new Gauge({
    name: 'couchestor_kube_status_writes_pending',
    help: "Status entries of this node that differ from what was last written (waiting for the next write round, or for the apiserver)",
    registers: [registry],
    collect() {
      this.set(kube.writer.pending());
    },
  });
  new Counter({
    name: 'couchestor_kube_departed_node_entries_pruned_total',
    help: "Node-status objects of departed nodes (their Node object gone, their report time older than kubernetes.departedNodeEntryTimeoutMs) this node removed",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(kube.pruner.pruned);
    },
  });
  new Counter({
    name: 'couchestor_kube_credential_reloads_total',
    help: 'Credentials read again after a 401 from the apiserver (ok; failed: could not be read), each followed by one more try of the request',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [result, n] of Object.entries(kube.credentialReloads)) this.inc({ result }, n);
    },
  });
  new Gauge({
    name: 'couchestor_kube_policy_source_synced',
    help: 'Whether the resource has been listed from the apiserver (1) or not yet (0)',
    labelNames: ['resource'],
    registers: [registry],
    collect() {
      for (const inf of [kube.storagePolicies, kube.ecPolicies]) this.set({ resource: inf.plural }, inf.synced ? 1 : 0);
    },
  });
}
