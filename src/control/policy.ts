// StoragePolicy: the resource that tells the control loop how to classify
// volumes by heat and where each tier lives. Same schema as the Kubernetes
// custom resource (group storage.billyronks.io/v1); on one machine it is a
// YAML file in the policies directory.
import YAML from 'yaml';
import { InvalidPolicy, parseDurationMs } from '../dataplane/ec/policy.js';

export const POLICY_API_VERSION = 'storage.billyronks.io/v1';
export const POLICY_KIND = 'StoragePolicy';

export interface LabelSelector {
  matchLabels: Record<string, string>;
}

export interface StoragePolicy {
  name: string;
  highWatermarkIOPS: number;
  lowWatermarkIOPS: number;
  samplingWindowMs: number;
  cooldownPeriodMs: number;
  hotPoolSelector: LabelSelector;
  warmPoolSelector: LabelSelector | null;
  coldPoolSelector: LabelSelector;
  /** null selects every volume. */
  volumeSelector: LabelSelector | null;
  ecPolicyRef: string | null;
  maxConcurrentMigrations: number;
  enabled: boolean;
  dryRun: boolean;
}

export class InvalidStoragePolicy extends Error {
  override name = 'InvalidStoragePolicy';
}

const KNOWN = new Set([
  'highWatermarkIOPS',
  'lowWatermarkIOPS',
  'samplingWindow',
  'cooldownPeriod',
  'hotPoolSelector',
  'warmPoolSelector',
  'coldPoolSelector',
  'volumeSelector',
  'ecPolicyRef',
  'maxConcurrentMigrations',
  'enabled',
  'dryRun',
]);

function selector(v: unknown, field: string, required: boolean): LabelSelector | null {
  if (v === undefined || v === null) {
    if (required) throw new InvalidStoragePolicy(`spec.${field} is required`);
    return null;
  }
  // matchExpressions (or a misspelt key) ignored would make the selector match more than it says.
  if (typeof v === 'object' && !Array.isArray(v)) {
    for (const k of Object.keys(v)) {
      if (k !== 'matchLabels') throw new InvalidStoragePolicy(`spec.${field}.${k} is not supported: a selector here has matchLabels only`);
    }
  }
  const ml = (v as { matchLabels?: unknown }).matchLabels;
  if (typeof v !== 'object' || ml === null || typeof ml !== 'object' || Array.isArray(ml)) {
    throw new InvalidStoragePolicy(`spec.${field}.matchLabels must be a map of label -> value`);
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(ml as Record<string, unknown>)) {
    if (typeof val !== 'string') throw new InvalidStoragePolicy(`spec.${field}.matchLabels.${k} must be a string`);
    out[k] = val;
  }
  return { matchLabels: out };
}

function nonNegative(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new InvalidStoragePolicy(`spec.${field} must be a number >= 0, got ${JSON.stringify(v)}`);
  return v;
}

function duration(v: unknown, field: string, fallback: string, minMs = 0): number {
  let ms: number;
  try {
    ms = parseDurationMs(v === undefined ? fallback : String(v), field);
  } catch (err) {
    // The parser is the ErasureCodingPolicy's: its message names that kind; this is a StoragePolicy.
    throw new InvalidStoragePolicy(`spec.${field}: ${err instanceof InvalidPolicy ? err.reason : (err as Error).message}`);
  }
  if (ms < minMs) throw new InvalidStoragePolicy(`spec.${field} must be at least ${minMs / 1000}s, got ${JSON.stringify(v)}`);
  return ms;
}

/**
 * Shortest samplingWindow: heat is an average between two samples of the
 * volume's counters, so a window of 0 (or below the sampling interval) never
 * has a reading and the policy would leave every volume at "no-data" for good.
 */
export const MIN_SAMPLING_WINDOW_MS = 1000;

/** A StoragePolicy document's top-level fields, as a custom resource has them (status: written by the control loop). */
const TOP_LEVEL: ReadonlySet<string> = new Set(['apiVersion', 'kind', 'metadata', 'spec', 'status']);

/** Parses one StoragePolicy document (schema checks only; see checkAgainst for pool/EC checks). */
export function parseStoragePolicy(text: string): StoragePolicy {
  let doc: Record<string, unknown>;
  try {
    doc = YAML.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new InvalidStoragePolicy(`not valid YAML: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== 'object') throw new InvalidStoragePolicy('must be a YAML mapping');
  if (doc.apiVersion !== POLICY_API_VERSION) throw new InvalidStoragePolicy(`apiVersion must be ${POLICY_API_VERSION}`);
  if (doc.kind !== POLICY_KIND) throw new InvalidStoragePolicy(`kind must be ${POLICY_KIND}`);
  // A misspelt `spec:` would otherwise leave a policy of defaults, selecting every volume.
  for (const k of Object.keys(doc)) {
    if (!TOP_LEVEL.has(k)) throw new InvalidStoragePolicy(`${k} is not a StoragePolicy field (${[...TOP_LEVEL].join(', ')})`);
  }
  const name = (doc.metadata as { name?: unknown } | undefined)?.name;
  if (typeof name !== 'string' || name === '') throw new InvalidStoragePolicy('metadata.name is required');
  const spec = (doc.spec ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(spec)) if (!KNOWN.has(k)) throw new InvalidStoragePolicy(`spec.${k} is not a StoragePolicy field`);
  const high = nonNegative(spec.highWatermarkIOPS, 'highWatermarkIOPS');
  const low = nonNegative(spec.lowWatermarkIOPS, 'lowWatermarkIOPS');
  if (!(low < high)) throw new InvalidStoragePolicy(`lowWatermarkIOPS (${low}) must be below highWatermarkIOPS (${high})`);
  const maxConc = spec.maxConcurrentMigrations ?? 2;
  if (!Number.isInteger(maxConc) || (maxConc as number) < 1 || (maxConc as number) > 64) {
    throw new InvalidStoragePolicy('spec.maxConcurrentMigrations must be an integer from 1 to 64');
  }
  for (const f of ['enabled', 'dryRun'] as const) {
    if (spec[f] !== undefined && typeof spec[f] !== 'boolean') throw new InvalidStoragePolicy(`spec.${f} must be true or false`);
  }
  if (spec.ecPolicyRef !== undefined && typeof spec.ecPolicyRef !== 'string') throw new InvalidStoragePolicy('spec.ecPolicyRef must be a name');
  return {
    name,
    highWatermarkIOPS: high,
    lowWatermarkIOPS: low,
    samplingWindowMs: duration(spec.samplingWindow, 'samplingWindow', '1h', MIN_SAMPLING_WINDOW_MS),
    cooldownPeriodMs: duration(spec.cooldownPeriod, 'cooldownPeriod', '24h'),
    hotPoolSelector: selector(spec.hotPoolSelector, 'hotPoolSelector', true)!,
    warmPoolSelector: selector(spec.warmPoolSelector, 'warmPoolSelector', false),
    coldPoolSelector: selector(spec.coldPoolSelector, 'coldPoolSelector', true)!,
    volumeSelector: selector(spec.volumeSelector, 'volumeSelector', false),
    ecPolicyRef: (spec.ecPolicyRef as string | undefined) ?? null,
    maxConcurrentMigrations: maxConc as number,
    enabled: (spec.enabled as boolean | undefined) ?? true,
    dryRun: (spec.dryRun as boolean | undefined) ?? false,
  };
}

export function matches(sel: LabelSelector, labels: Record<string, string>): boolean {
  return Object.entries(sel.matchLabels).every(([k, v]) => labels[k] === v);
}

/** Checks what the schema cannot: selectors that match pools, an existing EC policy. */
export function checkAgainst(p: StoragePolicy, pools: { name: string; labels: Record<string, string> }[], ecPolicyNames: string[]): void {
  for (const [field, sel] of [['hotPoolSelector', p.hotPoolSelector], ['warmPoolSelector', p.warmPoolSelector], ['coldPoolSelector', p.coldPoolSelector]] as const) {
    if (sel && !pools.some((pool) => matches(sel, pool.labels))) {
      throw new InvalidStoragePolicy(`spec.${field} ${JSON.stringify(sel.matchLabels)} matches no pool`);
    }
  }
  if (p.ecPolicyRef !== null && !ecPolicyNames.includes(p.ecPolicyRef)) {
    throw new InvalidStoragePolicy(`spec.ecPolicyRef: no ErasureCodingPolicy named ${p.ecPolicyRef} (have: ${ecPolicyNames.join(', ') || 'none'})`);
  }
}

export const DEFAULT_STORAGE_POLICY_YAML = `# Tiering policy for every volume. dryRun: true logs decisions without
# moving data; set it to false to let the control loop migrate volumes.
apiVersion: storage.billyronks.io/v1
kind: StoragePolicy
metadata:
  name: default
spec:
  highWatermarkIOPS: 5000
  lowWatermarkIOPS: 500
  samplingWindow: 1h
  cooldownPeriod: 24h
  hotPoolSelector:
    matchLabels:
      tier: hot
  coldPoolSelector:
    matchLabels:
      tier: cold
  ecPolicyRef: standard-ec
  maxConcurrentMigrations: 2
  enabled: true
  dryRun: true
`;
