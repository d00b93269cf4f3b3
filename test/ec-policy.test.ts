// ErasureCodingPolicy parsing and validation: the shipped example, defaults,
// durations, and one rejection (with the offending field named) per rule.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  InvalidPolicy,
  parseDurationMs,
  parsePolicyYaml,
  shardSizeBytes,
  validatePolicy,
  type ErasureCodingPolicySpec,
} from "../src/dataplane/ec/policy.js";
import { InvalidArgument } from "../src/dataplane/errors.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

function yamlWith(specLines: string, header = "apiVersion: storage.billyronks.io/v1\nkind: ErasureCodingPolicy\nmetadata:\n  name: p\n"): string {
  return `${header}spec:\n${specLines}`;
}

function rejects(fn: () => unknown, field: string, reasonPart: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InvalidPolicy, `expected InvalidPolicy, got ${String(error)}`);
    assert.ok(error instanceof InvalidArgument, "front ends map the shared errors.ts class");
    assert.equal(error.field, field);
    assert.match(error.reason, reasonPart);
    return true;
  });
}

test("the shipped deploy/examples/standard-ec.yaml parses to 4+2 with 1 MiB stripes", async () => {
  const text = await readFile(`${repoRoot}deploy/examples/standard-ec.yaml`, "utf8");
  const policy = parsePolicyYaml(text, 6);
  assert.deepEqual(policy, {
    name: "standard-ec",
    dataShards: 4,
    parityShards: 2,
    stripeSizeBytes: 1048576,
    algorithm: "ReedSolomon",
    compression: "none",
    scrubbingEnabled: true,
    scrubIntervalMs: 86_400_000,
  });
  assert.equal(shardSizeBytes(policy), 262144);
});

test("omitted optional fields take their defaults", () => {
  const policy = parsePolicyYaml(yamlWith("  dataShards: 8\n  parityShards: 3\n"), 11);
  assert.equal(policy.stripeSizeBytes, 1048576);
  assert.equal(policy.algorithm, "ReedSolomon");
  assert.equal(policy.compression, "none");
  assert.equal(policy.scrubbingEnabled, true);
  assert.equal(policy.scrubIntervalMs, 24 * 3600 * 1000);
});

test("lz4 compression and a custom scrub interval are carried through", () => {
  const policy = parsePolicyYaml(
    yamlWith("  dataShards: 10\n  parityShards: 4\n  stripeSizeBytes: 1024000\n  compression: lz4\n  scrubbingEnabled: false\n  scrubInterval: 1h30m\n"),
    14,
  );
  assert.equal(policy.compression, "lz4");
  assert.equal(policy.scrubbingEnabled, false);
  assert.equal(policy.scrubIntervalMs, 5_400_000);
  assert.equal(shardSizeBytes(policy), 102400);
});

test("durations: ms, s, m, h, d and sequences; unitless and garbage rejected", () => {
  assert.equal(parseDurationMs("24h"), 86_400_000);
  assert.equal(parseDurationMs("30m"), 1_800_000);
  assert.equal(parseDurationMs("90s"), 90_000);
  assert.equal(parseDurationMs("250ms"), 250);
  assert.equal(parseDurationMs("7d"), 604_800_000);
  assert.equal(parseDurationMs("1h30m15s"), 5_415_000);
  for (const bad of ["30", "", "h", "1.5h", "-1h", "1 h", "1w", "abc"]) {
    rejects(() => parseDurationMs(bad, "x"), "x", /duration/);
  }
});

test("shard counts outside 2..16 data and 1..4 parity are rejected", () => {
  const spec = (k: unknown, m: unknown): ErasureCodingPolicySpec => ({ dataShards: k, parityShards: m });
  rejects(() => validatePolicy("p", spec(1, 2), 64), "spec.dataShards", /between 2 and 16, got 1/);
  rejects(() => validatePolicy("p", spec(17, 2), 64), "spec.dataShards", /between 2 and 16, got 17/);
  rejects(() => validatePolicy("p", spec(4, 0), 64), "spec.parityShards", /between 1 and 4, got 0/);
  rejects(() => validatePolicy("p", spec(4, 5), 64), "spec.parityShards", /between 1 and 4, got 5/);
  rejects(() => validatePolicy("p", spec("4", 2), 64), "spec.dataShards", /integer/);
  rejects(() => validatePolicy("p", spec(4.5, 2), 64), "spec.dataShards", /integer/);
  rejects(() => validatePolicy("p", spec(undefined, 2), 64), "spec.dataShards", /integer/);
});

test("k + m above the number of cold pools is rejected", () => {
  rejects(() => validatePolicy("p", { dataShards: 4, parityShards: 2 }, 5), "spec", /needs that many cold pools, only 5/);
  assert.equal(validatePolicy("p", { dataShards: 4, parityShards: 2 }, 6).dataShards, 4);
});

test("a stripe that is not a multiple of k x 4 KiB is rejected with the nearest valid sizes", () => {
  // 1 MiB default is not a multiple of 10 x 4096 = 40960.
  rejects(() => validatePolicy("p", { dataShards: 10, parityShards: 4 }, 14), "spec.stripeSizeBytes", /multiple of .* 40960.*1024000 or 1064960/);
  rejects(() => validatePolicy("p", { dataShards: 4, parityShards: 2, stripeSizeBytes: 1048577 }, 6), "spec.stripeSizeBytes", /multiple/);
  rejects(() => validatePolicy("p", { dataShards: 4, parityShards: 2, stripeSizeBytes: 8192 }, 6), "spec.stripeSizeBytes", /between 16384/);
  rejects(() => validatePolicy("p", { dataShards: 4, parityShards: 2, stripeSizeBytes: 128 * 1024 * 1024 }, 6), "spec.stripeSizeBytes", /between/);
});

test("unknown spec fields, algorithms, compressions and bad scrub settings are rejected", () => {
  const base = { dataShards: 4, parityShards: 2 };
  rejects(() => validatePolicy("p", { ...base, datashards: 4 } as ErasureCodingPolicySpec, 6), "spec.datashards", /unknown field/);
  rejects(() => validatePolicy("p", { ...base, algorithm: "Jerasure" }, 6), "spec.algorithm", /ReedSolomon/);
  rejects(() => validatePolicy("p", { ...base, compression: "zstd" }, 6), "spec.compression", /"none" or "lz4"/);
  rejects(() => validatePolicy("p", { ...base, scrubbingEnabled: "yes" }, 6), "spec.scrubbingEnabled", /true or false/);
  rejects(() => validatePolicy("p", { ...base, scrubInterval: 3600 }, 6), "spec.scrubInterval", /duration string/);
  rejects(() => validatePolicy("p", { ...base, scrubInterval: "10s" }, 6), "spec.scrubInterval", /at least 1m/);
  rejects(() => validatePolicy("Not_A_Name", base, 6), "metadata.name", /DNS-1123/);
});

test("documents of the wrong shape are rejected before the spec is looked at", () => {
  rejects(() => parsePolicyYaml("a: [1, 2", 6), "(document)", /not valid YAML/);
  rejects(() => parsePolicyYaml("- 1\n- 2\n", 6), "(document)", /mapping/);
  rejects(() => parsePolicyYaml(yamlWith("  dataShards: 4\n  parityShards: 2\n", "apiVersion: v1\nkind: ErasureCodingPolicy\nmetadata:\n  name: p\n"), 6), "apiVersion", /storage.billyronks.io\/v1/);
  rejects(() => parsePolicyYaml(yamlWith("  dataShards: 4\n  parityShards: 2\n", "apiVersion: storage.billyronks.io/v1\nkind: StoragePolicy\nmetadata:\n  name: p\n"), 6), "kind", /ErasureCodingPolicy/);
  rejects(() => parsePolicyYaml("apiVersion: storage.billyronks.io/v1\nkind: ErasureCodingPolicy\nspec:\n  dataShards: 4\n", 6), "metadata", /name/);
  rejects(() => parsePolicyYaml("apiVersion: storage.billyronks.io/v1\nkind: ErasureCodingPolicy\nmetadata:\n  name: p\n", 6), "spec", /required/);
});
