// Daemon configuration: a YAML file in the data directory. With no file, the
// embedded default is written: one hot pool, six cold pools (enough for the
// default 4+2 erasure coding), all as directories under the data directory.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { InvalidArgument } from './dataplane/errors.js';
import { TIERS, type Tier } from './dataplane/meta/store.js';
import { filesystemFreeBytes } from './dataplane/pools/pool.js';
import { ensureDurableDir, writeFileDurableSync } from './dataplane/dir-sync.js';
import { DEFAULT_STORAGE_POLICY_YAML } from './control/policy.js';
import { DEFAULT_INFLIGHT_BUDGET_BYTES } from './dataplane/inflight-budget.js';

export interface PoolConfig {
  name: string;
  tier: Tier;
  /** Absolute, or relative to the data directory. */
  path: string;
  /** Bytes, or "auto": the filesystem's free space at start-up. */
  capacity: number | 'auto';
  labels?: Record<string, string>;
}

export interface DaemonConfig {
  dataDir: string;
  listenHost: string;
  nbd: { port: number; socketPath: string };
  api: { port: number };
  metrics: { port: number };
  /**
   * domains: names under which buckets are also addressed virtual-host style
   * (`bucket.<domain>`, as the AWS SDKs do by default); path style always works.
   * bodyIdleTimeoutMs: a request body that sends no byte this long fails with
   * RequestTimeout (S3 closes such a connection after about 20 s).
   * sendIdleTimeoutMs: a response the client stops reading (no byte accepted
   * this long) is cut and its connection closed (nginx's send_timeout, 60 s).
   */
  s3: { port: number; domains: string[]; bodyIdleTimeoutMs: number; sendIdleTimeoutMs: number };
  pools: PoolConfig[];
  coldTier: {
    /** ErasureCodingPolicy YAML (relative to the data directory). */
    ecPolicyFile: string;
    journalCapacityBytes: number;
    destageIntervalMs: number;
    destageThresholdPercent: number;
    /** Size at which a cold pool's segment file is sealed and a new one started. */
    segmentSizeBytes: number;
    /** Segment compaction (space reclaim), see src/dataplane/ec/compaction.ts; intervalMs 0 = only on request. */
    compaction: { intervalMs: number; deadFraction: number; maxBytesPerSecond: number };
  };
  /**
   * inflightBytes: bytes all NBD requests in flight may hold at once (WRITE
   * payloads, READ data; see src/dataplane/inflight-budget.ts). Past it,
   * connections stop reading requests until bytes come back, in turn.
   */
  limits: { inflightBytes: number };
  /** Read cache in front of the cold tier; l1CapacityBytes 0 turns it off. */
  cache: { l1CapacityBytes: number; l2CapacityBytes: number; l2MinEntryBytes: number; lz4ThresholdBytes: number | null };
  control: {
    /** StoragePolicy (and ErasureCodingPolicy) YAML files, re-read every pass. */
    policiesDir: string;
    reconcileIntervalMs: number;
    /** Keep the old copy after every migration (RELEASE skipped). */
    preservationMode: boolean;
    heatSampleIntervalMs: number;
    heatSource: { type: 'local' } | { type: 'prometheus'; url: string; metrics: 'seed' | 'couchestor' };
  };
  /**
   * On Kubernetes: StoragePolicies and the cold tier's ErasureCodingPolicy are
   * custom resources (the policies directory and coldTier.ecPolicyFile are not
   * read), status written back per node. kubeconfig null: the pod's service
   * account; nodeName null: env NODE_NAME, else the host name.
   */
  kubernetes: KubernetesConfig;
  /** Created at first start when the daemon has no volumes at all. */
  demoVolume: { name: string; sizeBytes: number } | null;
  defaultExport: string;
}

export interface KubernetesConfig {
  enabled: boolean;
  kubeconfig: string | null;
  nodeName: string | null;
  /** The ErasureCodingPolicy custom resource the cold tier runs (read once, at start). */
  ecPolicyName: string;
  /** Least time between two rounds of status writes to the apiserver. */
  statusWriteIntervalMs: number;
  /** How long a start waits for the apiserver's first list (the cold tier's policy) before going on without it. */
  startSyncTimeoutMs: number;
  /**
   * A watch with no byte for this long is dead (a partition that sent no RST) and started again.
   * Watches are asked to end after half to three quarters of it, so a live one is never taken for dead.
   */
  watchSilenceTimeoutMs: number;
  /**
   * A node's status objects (StoragePolicyNodeStatus, ErasureCodingPolicyNodeStatus) are removed once its Node
   * object is gone and their last report is older than this. Those of a node that exists are never removed.
   */
  departedNodeEntryTimeoutMs: number;
}

export const CONFIG_FILE = 'couchestor.yaml';

export function embeddedDefault(dataDir: string): DaemonConfig {
  return {
    dataDir,
    listenHost: '127.0.0.1',
    nbd: { port: 10809, socketPath: 'nbd.sock' },
    api: { port: 8081 },
    metrics: { port: 8080 },
    s3: { port: 9000, domains: [], bodyIdleTimeoutMs: 20_000, sendIdleTimeoutMs: 60_000 },
    pools: [
      { name: 'hot-0', tier: 'hot', path: 'pools/hot-0', capacity: 'auto' },
      ...Array.from({ length: 6 }, (_, i) => ({ name: `cold-${i}`, tier: 'cold' as Tier, path: `pools/cold-${i}`, capacity: 'auto' as const })),
    ],
    coldTier: {
      ecPolicyFile: 'policies/standard-ec.yaml',
      journalCapacityBytes: 256 * 1024 * 1024,
      destageIntervalMs: 5_000,
      destageThresholdPercent: 50,
      segmentSizeBytes: 256 * 1024 * 1024,
      compaction: { intervalMs: 30_000, deadFraction: 0.5, maxBytesPerSecond: 64 * 1024 * 1024 },
    },
    limits: { inflightBytes: DEFAULT_INFLIGHT_BUDGET_BYTES },
    cache: { l1CapacityBytes: 128 * 1024 * 1024, l2CapacityBytes: 64 * 1024 * 1024, l2MinEntryBytes: 64 * 1024, lz4ThresholdBytes: null },
    control: {
      policiesDir: 'policies',
      reconcileIntervalMs: 30_000,
      preservationMode: false,
      heatSampleIntervalMs: 1_000,
      heatSource: { type: 'local' },
    },
    kubernetes: { enabled: false, kubeconfig: null, nodeName: null, ecPolicyName: 'standard-ec', statusWriteIntervalMs: 2_000, startSyncTimeoutMs: 30_000, watchSilenceTimeoutMs: 120_000, departedNodeEntryTimeoutMs: 3_600_000 },
    demoVolume: { name: 'demo', sizeBytes: 1024 ** 3 },
    defaultExport: 'demo',
  };
}

/** Loads dataDir/couchestor.yaml, writing the embedded default first if absent. */
export function loadConfig(dataDir: string): DaemonConfig {
  const abs = path.resolve(dataDir);
  // Holds the index (meta/) and, by default, the pools: its name must
  // survive a power cut once anything in it is acknowledged.
  ensureDurableDir(abs);
  const file = path.join(abs, CONFIG_FILE);
  if (!fs.existsSync(file)) {
    const def = embeddedDefault(abs);
    const { dataDir: _omit, ...onDisk } = def;
    writeFileDurableSync(file, '# CoucheStor daemon configuration (embedded default).\n' + YAML.stringify(onDisk));
    const sp = path.join(abs, def.control.policiesDir, 'default-storage-policy.yaml');
    if (!fs.existsSync(sp)) {
      ensureDurableDir(path.dirname(sp));
      writeFileDurableSync(sp, DEFAULT_STORAGE_POLICY_YAML);
    }
  }
  const raw = readConfigFile(file);
  const def = embeddedDefault(abs);
  const cfg: DaemonConfig = {
    ...def,
    ...raw,
    dataDir: abs,
    nbd: { ...def.nbd, ...raw.nbd },
    api: { ...def.api, ...raw.api },
    metrics: { ...def.metrics, ...raw.metrics },
    s3: { ...def.s3, ...raw.s3 },
    coldTier: { ...def.coldTier, ...raw.coldTier, compaction: { ...def.coldTier.compaction, ...raw.coldTier?.compaction } },
    control: { ...def.control, ...raw.control },
    cache: { ...def.cache, ...raw.cache },
    limits: { ...def.limits, ...raw.limits },
    kubernetes: { ...def.kubernetes, ...raw.kubernetes },
  };
  if (cfg.control.heatSource?.type === 'prometheus' && (cfg.control.heatSource as { metrics?: unknown }).metrics === undefined) {
    cfg.control.heatSource = { ...cfg.control.heatSource, metrics: 'seed' };
  }
  validateConfig(cfg, file);
  // The erasure-coding policy is part of the embedded default: written when absent
  // (not on Kubernetes, where it is a custom resource and the file is not read).
  const ec = path.resolve(abs, cfg.coldTier.ecPolicyFile);
  if (!cfg.kubernetes.enabled && !fs.existsSync(ec)) {
    ensureDurableDir(path.dirname(ec));
    writeFileDurableSync(ec, DEFAULT_EC_POLICY_YAML);
  }
  return cfg;
}

/** The S3 front end's whole-request bound (1 h); an idle timeout is at most that. */
const MAX_S3_IDLE_TIMEOUT_MS = 60 * 60 * 1000;
const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** setTimeout/setInterval's largest delay: a longer one fires after 1 ms (TimeoutOverflowWarning), every time. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What the apiserver takes as a Node's name (and so as this node's status objects' annotation and name part): an
 * RFC 1123 DNS subdomain, as Kubernetes' IsDNS1123Subdomain checks it (no bound per label). The old check let
 * "a..b", "a.-b" and "a-.b" through, and every status write then got 422.
 */
const KUBE_NODE_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
export const KUBE_NODE_NAME_RULE = "an RFC 1123 DNS subdomain: at most 253 characters, lowercase letters, digits, '-' and '.', each '.'-separated part starting and ending with a letter or digit";
export function isKubeNodeName(name: string): boolean {
  return name.length <= 253 && KUBE_NODE_NAME_RE.test(name);
}

/**
 * Reads and parses couchestor.yaml: a YAML mapping whose sections and
 * settings are all known ones. A misspelt name (`cntrol:`, `reconcileInterval:`)
 * would otherwise be ignored and its default used without a word; the error
 * names the file and the setting.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- checked key by key here, value by value in validateConfig
function readConfigFile(file: string): Record<string, any> {
  let raw: unknown;
  try {
    raw = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InvalidArgument(`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  // Nothing in it (empty, only comments or whitespace, `null`): not "all defaults". The default
  // pools (hot-0, cold-0..5 under the data directory) would replace the operator's without a
  // word: the kubelet's empty file where a ConfigMap was mounted, an editor that truncated it.
  // The first start writes the default itself (loadConfig), when there is no file.
  if (raw === null || raw === undefined) throw new InvalidArgument(`${file}: holds no settings (empty, or only comments or null): not taken for the embedded default, whose pools (hot-0, cold-0..5 in the data directory) would stand in for the configured ones; restore it (or delete it: serve then writes the default)`);
  if (!isMapping(raw)) throw new InvalidArgument(`${file}: must be a YAML mapping of settings, got ${describe(raw)}`);
  const def = embeddedDefault('/');
  const { dataDir: _d, ...topLevel } = def;
  const known = (where: string, value: unknown, allowed: readonly string[]): void => {
    if (value === undefined || value === null) return;
    if (!isMapping(value)) throw new InvalidArgument(`${file}: ${where} must be a mapping, got ${describe(value)}`);
    for (const k of Object.keys(value)) {
      if (!allowed.includes(k)) throw new InvalidArgument(`${file}: ${where ? `${where}.` : ''}${k} is not a setting (known: ${allowed.join(', ')})`);
    }
  };
  known('', raw, Object.keys(topLevel));
  for (const section of ['nbd', 'api', 'metrics', 's3', 'coldTier', 'cache', 'limits', 'control', 'kubernetes'] as const) known(section, raw[section], Object.keys(def[section]));
  const coldTier = raw.coldTier as Record<string, unknown> | null | undefined;
  known('coldTier.compaction', coldTier?.compaction, Object.keys(def.coldTier.compaction));
  const control = raw.control as Record<string, unknown> | null | undefined;
  known('control.heatSource', control?.heatSource, ['type', 'url', 'metrics']);
  if (raw.demoVolume !== null) known('demoVolume', raw.demoVolume, ['name', 'sizeBytes']);
  if (raw.pools !== undefined) {
    if (!Array.isArray(raw.pools)) throw new InvalidArgument(`${file}: pools must be a list of pools, got ${describe(raw.pools)}`);
    raw.pools.forEach((p, i) => known(`pools[${i}]`, p ?? {}, ['name', 'tier', 'path', 'capacity', 'labels']));
  }
  return raw;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}

/**
 * Validates every setting; an error names it and the value given, prefixed
 * with `where` (the file, from loadConfig).
 */
export function validateConfig(cfg: DaemonConfig, where = 'config'): void {
  const fail = (msg: string): never => {
    throw new InvalidArgument(`${where}: ${msg}`);
  };
  const int = (key: string, v: unknown, min: number, max: number, unit: string, note = ''): void => {
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      fail(`${key} must be a whole number of ${unit} ${range}${note ? ` (${note})` : ''}, got ${describe(v)}`);
    }
  };
  const str = (key: string, v: unknown): void => {
    if (typeof v !== 'string' || v === '') fail(`${key} must be a non-empty string, got ${describe(v)}`);
  };
  if (typeof cfg.listenHost !== 'string' || cfg.listenHost === '') fail(`listenHost must be a host name or address, got ${describe(cfg.listenHost)}`);
  str('nbd.socketPath', cfg.nbd.socketPath);
  if (!Array.isArray(cfg.pools)) fail(`pools must be a list of pools, got ${describe(cfg.pools)}`);
  const names = new Set<string>();
  for (const [i, p] of cfg.pools.entries()) {
    if (!isMapping(p)) fail(`pools[${i}] must be a mapping (name, tier, path, capacity, labels), got ${describe(p)}`);
    if (typeof p.name !== 'string' || !p.name || names.has(p.name)) fail(`pool name ${JSON.stringify(p.name)} is missing or duplicated`);
    names.add(p.name);
    if (!TIERS.includes(p.tier)) fail(`pool ${p.name}: tier must be one of ${TIERS.join(', ')}, got ${describe(p.tier)}`);
    if (typeof p.path !== 'string' || p.path === '') fail(`pool ${p.name}: path must be a directory path, got ${describe(p.path)}`);
    if (p.capacity !== 'auto' && !(Number.isSafeInteger(p.capacity) && p.capacity > 0)) {
      fail(`pool ${p.name}: capacity must be a positive number of bytes or "auto", got ${describe(p.capacity)}`);
    }
    if (p.labels !== undefined && p.labels !== null && !(isMapping(p.labels) && Object.values(p.labels).every((v) => typeof v === 'string'))) {
      fail(`pool ${p.name}: labels must be a mapping of label -> string value, got ${describe(p.labels)}`);
    }
  }
  // Two pools on one directory (or one inside the other) would each take the other's files
  // for their own: the index names shards and volume files by pool name, so a file seen
  // under the second name looks unreferenced to compaction and to a RELEASE. Links to one
  // directory are caught at start by refuseAliasedPools().
  const dirs = cfg.pools.map((p) => ({ name: p.name, dir: resolvePoolPath(cfg, p) }));
  for (let i = 0; i < dirs.length; i++) {
    for (let j = i + 1; j < dirs.length; j++) {
      const a = dirs[i]!;
      const b = dirs[j]!;
      if (isSameOrInside(a.dir, b.dir) || isSameOrInside(b.dir, a.dir)) {
        fail(`pools ${a.name} (${a.dir}) and ${b.name} (${b.dir}) share a directory: give each pool its own`);
      }
    }
  }
  const ct = cfg.coldTier;
  str('coldTier.ecPolicyFile', ct.ecPolicyFile);
  if (!Number.isSafeInteger(ct.segmentSizeBytes) || ct.segmentSizeBytes < 1024 * 1024) fail(`coldTier.segmentSizeBytes must be a whole number of bytes >= 1 MiB, got ${describe(ct.segmentSizeBytes)}`);
  // Below a few chunk records every write would wait on the destager (a record larger than the journal is refused).
  int('coldTier.journalCapacityBytes', ct.journalCapacityBytes, MIN_JOURNAL_CAPACITY_BYTES, Number.MAX_SAFE_INTEGER, 'bytes');
  int('coldTier.destageIntervalMs', ct.destageIntervalMs, 10, MAX_TIMER_MS, 'milliseconds');
  if (typeof ct.destageThresholdPercent !== 'number' || !(ct.destageThresholdPercent > 0 && ct.destageThresholdPercent <= 100)) {
    fail(`coldTier.destageThresholdPercent must be a percentage in (0, 100], got ${describe(ct.destageThresholdPercent)}`);
  }
  if (typeof ct.compaction.deadFraction !== 'number' || !(ct.compaction.deadFraction > 0 && ct.compaction.deadFraction <= 1)) fail(`coldTier.compaction.deadFraction must be in (0, 1], got ${describe(ct.compaction.deadFraction)}`);
  int('coldTier.compaction.intervalMs', ct.compaction.intervalMs, 0, MAX_TIMER_MS, 'milliseconds', '0: on request only');
  if (typeof ct.compaction.maxBytesPerSecond !== 'number' || !(ct.compaction.maxBytesPerSecond > 0) || !Number.isFinite(ct.compaction.maxBytesPerSecond)) {
    fail(`coldTier.compaction.maxBytesPerSecond must be a number > 0, got ${describe(ct.compaction.maxBytesPerSecond)}`);
  }
  const c = cfg.cache;
  int('cache.l1CapacityBytes', c.l1CapacityBytes, 0, Number.MAX_SAFE_INTEGER, 'bytes', '0: no cache');
  int('cache.l2CapacityBytes', c.l2CapacityBytes, 0, Number.MAX_SAFE_INTEGER, 'bytes', '0: no L2');
  int('cache.l2MinEntryBytes', c.l2MinEntryBytes, 0, Number.MAX_SAFE_INTEGER, 'bytes');
  if (c.lz4ThresholdBytes !== null) int('cache.lz4ThresholdBytes', c.lz4ThresholdBytes, 0, Number.MAX_SAFE_INTEGER, 'bytes', 'or null: no compression');
  // Below 1 MiB most requests would run one at a time across the daemon (one larger than the budget always runs, alone).
  if (!isMapping(cfg.limits)) fail(`limits must be a mapping (inflightBytes), got ${describe(cfg.limits)}`);
  int('limits.inflightBytes', cfg.limits.inflightBytes, MIN_INFLIGHT_BYTES, Number.MAX_SAFE_INTEGER, 'bytes');
  const ctl = cfg.control;
  str('control.policiesDir', ctl.policiesDir);
  // 0 (or a string, which the timer reads as 1 ms) would run passes back to back.
  int('control.reconcileIntervalMs', ctl.reconcileIntervalMs, 100, MAX_TIMER_MS, 'milliseconds');
  int('control.heatSampleIntervalMs', ctl.heatSampleIntervalMs, 10, 3_600_000, 'milliseconds');
  if (typeof ctl.preservationMode !== 'boolean') fail(`control.preservationMode must be true or false, got ${describe(ctl.preservationMode)}`);
  const hs = ctl.heatSource as { type?: unknown; url?: unknown; metrics?: unknown } | null;
  if (!isMapping(hs) || (hs.type !== 'local' && hs.type !== 'prometheus')) fail(`control.heatSource.type must be local or prometheus, got ${describe(hs?.type)}`);
  if (hs!.type === 'local' && (hs!.url !== undefined || hs!.metrics !== undefined)) fail('control.heatSource: url and metrics are settings of type prometheus, not local');
  if (hs!.type === 'prometheus') {
    if (typeof hs!.url !== 'string' || !/^https?:\/\/[^\s/]+/.test(hs!.url)) fail(`control.heatSource.url must be the Prometheus server's http(s) URL, got ${describe(hs!.url)}`);
    if (hs!.metrics !== 'seed' && hs!.metrics !== 'couchestor') fail(`control.heatSource.metrics must be seed or couchestor, got ${describe(hs!.metrics)}`);
  }
  const k = cfg.kubernetes;
  if (!isMapping(k)) fail(`kubernetes must be a mapping, got ${describe(k)}`);
  if (typeof k.enabled !== 'boolean') fail(`kubernetes.enabled must be true or false, got ${describe(k.enabled)}`);
  if (k.kubeconfig !== null) str('kubernetes.kubeconfig', k.kubeconfig);
  if (k.nodeName !== null) str('kubernetes.nodeName', k.nodeName);
  // The name is the Node's: the departed-node pruner looks it up, and it names the node's status objects.
  if (k.nodeName !== null && !isKubeNodeName(k.nodeName)) fail(`kubernetes.nodeName must be a Kubernetes node name (${KUBE_NODE_NAME_RULE}), got ${describe(k.nodeName)}`);
  str('kubernetes.ecPolicyName', k.ecPolicyName);
  int('kubernetes.statusWriteIntervalMs', k.statusWriteIntervalMs, 100, MAX_TIMER_MS, 'milliseconds');
  int('kubernetes.startSyncTimeoutMs', k.startSyncTimeoutMs, 100, 600_000, 'milliseconds');
  // From 4 s (watches of 2 s) to an hour (watches of 30-45 min).
  int('kubernetes.watchSilenceTimeoutMs', k.watchSilenceTimeoutMs, 4_000, 3_600_000, 'milliseconds');
  // From 1 s (tests) to a month: an existing node's entry is never removed, whatever the bound.
  int('kubernetes.departedNodeEntryTimeoutMs', k.departedNodeEntryTimeoutMs, 1_000, 31 * 86_400_000, 'milliseconds');
  if (cfg.demoVolume !== null) {
    if (!isMapping(cfg.demoVolume)) fail(`demoVolume must be null or a mapping (name, sizeBytes), got ${describe(cfg.demoVolume)}`);
    str('demoVolume.name', cfg.demoVolume.name);
    int('demoVolume.sizeBytes', cfg.demoVolume.sizeBytes, 1, Number.MAX_SAFE_INTEGER, 'bytes');
  }
  if (typeof cfg.defaultExport !== 'string') fail(`defaultExport must be a volume name, got ${describe(cfg.defaultExport)}`);
  if (!Array.isArray(cfg.s3.domains) || !cfg.s3.domains.every((d) => typeof d === 'string' && DOMAIN_RE.test(d))) {
    fail(`s3.domains must be a list of lowercase DNS names without a port (e.g. [s3.example.internal]), got ${describe(cfg.s3.domains)}`);
  }
  for (const [k, v] of [['s3.bodyIdleTimeoutMs', cfg.s3.bodyIdleTimeoutMs], ['s3.sendIdleTimeoutMs', cfg.s3.sendIdleTimeoutMs]] as const) {
    // Above the 1 h request timeout an idle bound would never fire first.
    if (!Number.isSafeInteger(v) || v < 1 || v > MAX_S3_IDLE_TIMEOUT_MS) fail(`${k} must be a whole number of milliseconds from 1 to ${MAX_S3_IDLE_TIMEOUT_MS}, got ${describe(v)}`);
  }
  for (const [k, v] of [['nbd.port', cfg.nbd.port], ['api.port', cfg.api.port], ['metrics.port', cfg.metrics.port], ['s3.port', cfg.s3.port]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 65535) fail(`${k} must be a port number, got ${describe(v)}`);
  }
}

/** The smallest limits.inflightBytes. */
export const MIN_INFLIGHT_BYTES = 1024 * 1024;

/** The smallest coldTier.journalCapacityBytes: a few 1 MiB chunk records. */
export const MIN_JOURNAL_CAPACITY_BYTES = 4 * 1024 * 1024;

/** The default 4+2 policy written at first start (same as deploy/examples/standard-ec.yaml). */
export const DEFAULT_EC_POLICY_YAML = `# Cold-tier erasure coding: 4 data + 2 parity shards, 1 MiB stripes.
apiVersion: storage.billyronks.io/v1
kind: ErasureCodingPolicy
metadata:
  name: standard-ec
spec:
  dataShards: 4
  parityShards: 2
  stripeSizeBytes: 1048576
  algorithm: ReedSolomon
  compression: none
  scrubbingEnabled: true
  scrubInterval: 24h
`;

export function resolvePoolPath(cfg: DaemonConfig, p: PoolConfig): string {
  return path.resolve(cfg.dataDir, p.path);
}

function isSameOrInside(dir: string, parent: string): boolean {
  const rel = path.relative(parent, dir);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * The configured pools' existing directories are distinct directories, links resolved (by
 * device and inode): validateConfig() compares the paths as written. A missing directory is
 * an offline pool, reported where it is used.
 */
export function refuseAliasedPools(cfg: DaemonConfig): void {
  const seen = new Map<string, string>();
  for (const p of cfg.pools) {
    let st: fs.Stats;
    try {
      st = fs.statSync(resolvePoolPath(cfg, p));
    } catch {
      continue;
    }
    const id = `${st.dev}:${st.ino}`;
    const other = seen.get(id);
    if (other !== undefined) {
      throw new InvalidArgument(`config: pools ${other} and ${p.name} are the same directory (${resolvePoolPath(cfg, p)}, through a link): give each pool its own`);
    }
    seen.set(id, p.name);
  }
}

export function poolCapacityBytes(cfg: DaemonConfig, p: PoolConfig): number {
  if (p.capacity !== 'auto') return p.capacity;
  const dir = resolvePoolPath(cfg, p);
  ensureDurableDir(dir);
  return filesystemFreeBytes(dir);
}

/** "1G", "512MiB", "4096", "1.5T" -> bytes (binary units). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$/i.exec(text);
  if (!m) throw new InvalidArgument(`cannot parse size ${JSON.stringify(text)} (examples: 4096, 512M, 10G, 1TiB)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 }[m[2]!.toLowerCase() as '' | 'k'];
  const bytes = Number(m[1]) * mult;
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgument(`size ${text} is not a whole number of bytes`);
  return bytes;
}
