// Review of 978c244 (a new segment's name is made durable by the first
// commit) and of unsynced appends (fefe08e): a segment or segments/ directory
// created by a process that died before its first commit is reopened by the
// next process as an existing head; its name, and any bytes the dead process
// wrote unsynced, must be made durable before a record in it counts.
// Observed with strace on real child processes (no mocks).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { appendFile, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const SEGMENT_STORE_JS = fileURLToPath(new URL("../src/dataplane/ec/segment-store.js", import.meta.url));
const SHARD_RECORD_JS = fileURLToPath(new URL("../src/dataplane/ec/shard-record.js", import.meta.url));

/** Runs `body` (ESM, with SegmentStore and encodeShardRecord imported) in a child node; under strace when `traceTo` is set. */
function child(body: string, traceTo?: string): { status: number | null; signal: NodeJS.Signals | null; stderr: string } {
  const script = `
import { mkdir } from "node:fs/promises";
import { SegmentStore } from ${JSON.stringify(SEGMENT_STORE_JS)};
import { encodeShardRecord } from ${JSON.stringify(SHARD_RECORD_JS)};
const record = encodeShardRecord(
  { ownerId: Buffer.alloc(16, 7), chunkIndex: 1, stripeGeneration: 1, shardIndex: 0, dataShards: 4, parityShards: 2 },
  Buffer.alloc(4096, 1),
);
${body}`;
  const node = [process.execPath, "--input-type=module", "-e", script];
  const argv = traceTo === undefined ? node : ["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o", traceTo, ...node];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: 30_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

/** Paths strace saw fsync'd or fdatasync'd (directories and files), in order. */
async function fsyncedPaths(traceFile: string): Promise<string[]> {
  const out: string[] = [];
  // Concurrent syncs on threadpool threads show as "<unfinished ...>" then "<... fsync resumed>".
  const unfinished = new Map<string, string>(); // thread id -> path
  for (const line of (await readFile(traceFile, "utf8")).split("\n")) {
    const whole = /^(\d+)\s+f(?:data)?sync\(\d+<([^>]+)>\)\s+=\s+0/.exec(line);
    if (whole) out.push(whole[2]!);
    const started = /^(\d+)\s+f(?:data)?sync\(\d+<([^>]+)> <unfinished/.exec(line);
    if (started) unfinished.set(started[1]!, started[2]!);
    const resumed = /^(\d+)\s+<\.\.\. f(?:data)?sync resumed>\)\s+=\s+0/.exec(line);
    if (resumed && unfinished.has(resumed[1]!)) out.push(unfinished.get(resumed[1]!)!);
  }
  return out;
}

test("a head segment (and segments/ dir) created by a process killed before its first commit gets its name synced before the next process acknowledges a record in it", async () => {
  const root = await mkdtemp(join(tmpdir(), "review-dirsync-"));
  try {
    const segDir = join(root, "segments");
    // Process 1: creates segments/ and a head segment, then dies before any commit (SIGKILL: no cleanup).
    const first = child(`
await mkdir(${JSON.stringify(segDir)});
await SegmentStore.open(${JSON.stringify(segDir)}, { createdDir: true });
process.kill(process.pid, "SIGKILL");`);
    assert.equal(first.signal, "SIGKILL", first.stderr);
    assert.deepEqual(await readdir(segDir), ["seg-000000000001.cseg"], "process 1 left an empty head whose name it never synced");

    // Process 2: segments/ exists and the empty head is reused; a durable append is then acknowledged.
    const trace = join(root, "strace.txt");
    const second = child(`
const store = await SegmentStore.open(${JSON.stringify(segDir)});
const [loc] = await store.append([record]);
if (loc.segment !== 1) throw new Error("expected the reused head, got segment " + loc.segment);
process.kill(process.pid, "SIGKILL");`, trace);
    assert.equal(second.signal, "SIGKILL", second.stderr);
    const synced = await fsyncedPaths(trace);
    // The acknowledged record lives in seg-1: its directory entry (in segments/) and
    // segments/'s own entry (in root) must have been fsync'd before the append resolved.
    assert.ok(synced.includes(segDir), `segments/ directory never fsync'd: ${JSON.stringify(synced)}`);
    assert.ok(synced.includes(root), `the directory holding segments/ never fsync'd: ${JSON.stringify(synced)}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

for (const torn of [false, true]) {
  test(`records a killed process wrote unsynced are durable before the next process's store says it holds them (${torn ? "segment abandoned for a torn tail" : "segment reused as head"})`, async () => {
    const root = await mkdtemp(join(tmpdir(), "review-unsynced-"));
    try {
      const segDir = join(root, "segments");
      const seg1 = join(segDir, "seg-000000000001.cseg");
      // Process 1: a pool rebuild's bulk write (durable: false), killed before its sync.
      const first = child(`
await mkdir(${JSON.stringify(segDir)});
const store = await SegmentStore.open(${JSON.stringify(segDir)});
await store.append([record], { durable: false });
process.kill(process.pid, "SIGKILL");`);
      assert.equal(first.signal, "SIGKILL", first.stderr);
      // The page cache kept the record (a process kill, not a power loss); a torn second record after it.
      if (torn) await appendFile(seg1, Buffer.alloc(10, 0x5a));
      // Process 2: a pool rebuild asks whether the stale index reference (segment 1,
      // offset 0) is held: the same record sits there (a replaced pool reuses places).
      const trace = join(root, "strace.txt");
      const second = child(`
const store = await SegmentStore.open(${JSON.stringify(segDir)});
if (!store.contains({ segment: 1, offsetBytes: 0, lengthBytes: record.length })) throw new Error("record not held");
const rec = await store.read({ segment: 1, offsetBytes: 0, lengthBytes: record.length });
if (rec.header.chunkIndex !== 1) throw new Error("wrong record");
process.kill(process.pid, "SIGKILL");`, trace);
      assert.equal(second.signal, "SIGKILL", second.stderr);
      const synced = await fsyncedPaths(trace);
      assert.ok(synced.includes(seg1), `segment 1 was never fdatasync'd before its record counted as held: ${JSON.stringify(synced)}`);
      assert.ok(synced.includes(segDir), `segments/ never fsync'd: ${JSON.stringify(synced)}`);
      assert.ok(synced.includes(root), `the directory holding segments/ never fsync'd: ${JSON.stringify(synced)}`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
}
