// ErasureCodingPolicy: the type, its validation and its parsing from a
// Kubernetes-shaped YAML resource (the same text on a cluster and on one node).
import { parse as parseYaml } from "yaml";
import { InvalidArgument } from "../errors.js";

export const EC_API_VERSION = "storage.billyronks.io/v1";
export const EC_KIND = "ErasureCodingPolicy";

/** Smallest I/O unit the front ends promise (DESIGN.md "block"). Shards are whole blocks. */
export const BLOCK_SIZE_BYTES = 4096;
export const MIN_DATA_SHARDS = 2;
export const MAX_DATA_SHARDS = 16;
export const MIN_PARITY_SHARDS = 1;
export const MAX_PARITY_SHARDS = 4;
export const DEFAULT_STRIPE_SIZE_BYTES = 1024 * 1024;
/** Bound on one stripe's buffer (encode allocates stripe + parity at once). */
export const MAX_STRIPE_SIZE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_SCRUB_INTERVAL = "24h";
/** A scrub more often than every minute would re-read the cold tier continuously. */
export const MIN_SCRUB_INTERVAL_MS = 60_000;

export type EcCompression = "none" | "lz4";
export type EcAlgorithm = "ReedSolomon";

export interface ErasureCodingPolicy {
  readonly name: string;
  readonly dataShards: number;
  readonly parityShards: number;
  /** Data bytes per stripe (= one chunk); a multiple of dataShards x 4 KiB. */
  readonly stripeSizeBytes: number;
  readonly algorithm: EcAlgorithm;
  readonly compression: EcCompression;
  readonly scrubbingEnabled: boolean;
  readonly scrubIntervalMs: number;
}

/** The `spec` as a user writes it (scrubInterval is a duration string). */
export interface ErasureCodingPolicySpec {
  dataShards?: unknown;
  parityShards?: unknown;
  stripeSizeBytes?: unknown;
  algorithm?: unknown;
  compression?: unknown;
  scrubbingEnabled?: unknown;
  scrubInterval?: unknown;
}

/** Rejected policy. `field` is the dotted path of the offending field. */
export class InvalidPolicy extends InvalidArgument {
  override name = "InvalidPolicy";
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`invalid ErasureCodingPolicy: ${field}: ${reason}`);
  }
}

const SPEC_FIELDS = new Set([
  "dataShards",
  "parityShards",
  "stripeSizeBytes",
  "algorithm",
  "compression",
  "scrubbingEnabled",
  "scrubInterval",
]);

const DURATION_UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * "90s", "30m", "24h", "1h30m", "500ms", "7d" -> milliseconds.
 * Go-style sequence of <integer><unit>; no bare numbers (a unitless "30" is a
 * typo waiting to happen).
 */
export function parseDurationMs(text: string, field = "duration"): number {
  const trimmed = text.trim();
  if (trimmed.length === 0 || trimmed.length > 64) {
    throw new InvalidPolicy(field, `expected a duration like "24h", "30m" or "90s", got ${JSON.stringify(text)}`);
  }
  const part = /(\d+)(ms|s|m|h|d)/y;
  let totalMs = 0;
  let pos = 0;
  while (pos < trimmed.length) {
    part.lastIndex = pos;
    const match = part.exec(trimmed);
    if (match === null) {
      throw new InvalidPolicy(
        field,
        `expected a duration like "24h", "30m" or "90s" (units ms, s, m, h, d), got ${JSON.stringify(text)}`,
      );
    }
    totalMs += Number(match[1]) * DURATION_UNIT_MS[match[2]!]!;
    pos = part.lastIndex;
  }
  if (!Number.isSafeInteger(totalMs)) {
    throw new InvalidPolicy(field, `duration ${JSON.stringify(text)} is too large`);
  }
  return totalMs;
}

function requireInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InvalidPolicy(field, `must be an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max) {
    throw new InvalidPolicy(field, `must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/**
 * Validate a spec against the node's cold pools. `coldPoolCount` is passed in
 * because k+m shards of a stripe must land on k+m different pools.
 */
export function validatePolicy(
  name: string,
  spec: ErasureCodingPolicySpec,
  coldPoolCount: number,
): ErasureCodingPolicy {
  if (typeof name !== "string" || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) {
    throw new InvalidPolicy("metadata.name", `must be a DNS-1123 subdomain name, got ${JSON.stringify(name)}`);
  }
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new InvalidPolicy("spec", "must be a mapping");
  }
  for (const key of Object.keys(spec)) {
    // A misspelt field would otherwise silently fall back to its default.
    if (!SPEC_FIELDS.has(key)) throw new InvalidPolicy(`spec.${key}`, "unknown field");
  }
  const dataShards = requireInteger("spec.dataShards", spec.dataShards, MIN_DATA_SHARDS, MAX_DATA_SHARDS);
  const parityShards = requireInteger("spec.parityShards", spec.parityShards, MIN_PARITY_SHARDS, MAX_PARITY_SHARDS);
  if (!Number.isInteger(coldPoolCount) || coldPoolCount < 0) {
    throw new InvalidPolicy("coldPoolCount", `must be a non-negative integer, got ${coldPoolCount}`);
  }
  if (dataShards + parityShards > coldPoolCount) {
    throw new InvalidPolicy(
      "spec",
      `dataShards + parityShards = ${dataShards + parityShards} needs that many cold pools, only ${coldPoolCount} available`,
    );
  }
  const stripeSizeBytes = requireInteger(
    "spec.stripeSizeBytes",
    spec.stripeSizeBytes ?? DEFAULT_STRIPE_SIZE_BYTES,
    BLOCK_SIZE_BYTES * dataShards,
    MAX_STRIPE_SIZE_BYTES,
  );
  const unitBytes = BLOCK_SIZE_BYTES * dataShards;
  if (stripeSizeBytes % unitBytes !== 0) {
    const below = Math.floor(stripeSizeBytes / unitBytes) * unitBytes;
    throw new InvalidPolicy(
      "spec.stripeSizeBytes",
      `must be a multiple of dataShards x 4096 = ${unitBytes}, got ${stripeSizeBytes} (nearest valid: ${below} or ${below + unitBytes})`,
    );
  }
  const algorithm = spec.algorithm ?? "ReedSolomon";
  if (algorithm !== "ReedSolomon") {
    throw new InvalidPolicy("spec.algorithm", `only "ReedSolomon" is supported, got ${JSON.stringify(algorithm)}`);
  }
  const compression = spec.compression ?? "none";
  if (compression !== "none" && compression !== "lz4") {
    throw new InvalidPolicy("spec.compression", `must be "none" or "lz4", got ${JSON.stringify(compression)}`);
  }
  const scrubbingEnabled = spec.scrubbingEnabled ?? true;
  if (typeof scrubbingEnabled !== "boolean") {
    throw new InvalidPolicy("spec.scrubbingEnabled", `must be true or false, got ${JSON.stringify(scrubbingEnabled)}`);
  }
  const scrubInterval = spec.scrubInterval ?? DEFAULT_SCRUB_INTERVAL;
  if (typeof scrubInterval !== "string") {
    throw new InvalidPolicy("spec.scrubInterval", `must be a duration string like "24h", got ${JSON.stringify(scrubInterval)}`);
  }
  const scrubIntervalMs = parseDurationMs(scrubInterval, "spec.scrubInterval");
  if (scrubIntervalMs < MIN_SCRUB_INTERVAL_MS) {
    throw new InvalidPolicy("spec.scrubInterval", `must be at least 1m, got ${JSON.stringify(scrubInterval)}`);
  }
  return {
    name,
    dataShards,
    parityShards,
    stripeSizeBytes,
    algorithm,
    compression,
    scrubbingEnabled,
    scrubIntervalMs,
  };
}

/** Parse one `kind: ErasureCodingPolicy` YAML document and validate it. */
export function parsePolicyYaml(text: string, coldPoolCount: number): ErasureCodingPolicy {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (error) {
    throw new InvalidPolicy("(document)", `not valid YAML: ${(error as Error).message}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new InvalidPolicy("(document)", "must be a YAML mapping");
  }
  const resource = doc as Record<string, unknown>;
  if (resource.apiVersion !== EC_API_VERSION) {
    throw new InvalidPolicy("apiVersion", `must be ${EC_API_VERSION}, got ${JSON.stringify(resource.apiVersion)}`);
  }
  if (resource.kind !== EC_KIND) {
    throw new InvalidPolicy("kind", `must be ${EC_KIND}, got ${JSON.stringify(resource.kind)}`);
  }
  const metadata = resource.metadata;
  if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
    throw new InvalidPolicy("metadata", "must be a mapping with a name");
  }
  const name = (metadata as Record<string, unknown>).name;
  if (typeof name !== "string") {
    throw new InvalidPolicy("metadata.name", `must be a string, got ${JSON.stringify(name)}`);
  }
  if (resource.spec === undefined) throw new InvalidPolicy("spec", "is required");
  return validatePolicy(name, resource.spec as ErasureCodingPolicySpec, coldPoolCount);
}

/** Bytes of one shard (data or parity) of a stripe under this policy. */
export function shardSizeBytes(policy: ErasureCodingPolicy): number {
  return policy.stripeSizeBytes / policy.dataShards;
}
