// Review of f7a5748: while a volume cannot be opened the destager's tick
// leaves the journal files only it pins out of its pinned count (so they do
// not force a full pass every tick). Once its pool is back that must end at
// once: its old record, which pins an old journal file, is destaged within
// two ticks (the first tick opens it, the next counts its file as pinned),
// under writes that never let the journal go idle, not after the
// 12-interval full pass; nothing is lost meanwhile and both volumes read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { coldVolumeOnHot1, readVolume, tempDirClosing, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;
const COLD_POOLS = 6;
/** One journal file's worth (64 MiB files): records in two files are "pinned" past the 90% threshold. */
const JOURNAL_CAPACITY_BYTES = 64 * MiB;
const TICKS = 4;

/** openColdTierManager with a 64 MiB journal. */
async function openManager(dir: string, create: boolean): Promise<VolumeManager> {
  const m = VolumeManager.open(path.join(dir, 'meta'));
  if (create) {
    await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 1024 * MiB, labels: { tier: 'hot' } });
    for (let i = 0; i < COLD_POOLS; i++) await m.putPool({ name: `cold-${i}`, path: path.join(dir, `cold-${i}`), tier: 'cold', capacityBytes: 1024 * MiB, labels: { tier: 'cold' } });
  }
  // The timer never fires by itself: the test steps it with tick().
  m.startColdTier(parsePolicyYaml(DEFAULT_EC_POLICY_YAML, COLD_POOLS), { intervalMs: 3_600_000, thresholdPercent: 90, concurrency: 2, journalCapacityBytes: JOURNAL_CAPACITY_BYTES });
  return m;
}

/** Runs `fn`, returning the lines written to stderr meanwhile (the logger's sink). */
async function stderrLines(fn: () => Promise<void>): Promise<string[]> {
  const real = process.stderr.write;
  const lines: string[] = [];
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(String(chunk));
    return (real as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = real;
  }
  return lines;
}

test('once its pool is back, an unopenable volume pinning an old journal file is destaged within two ticks under writes', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-rvoff-destager-back-', () => m!);
  m = await openManager(dir, true);
  const hot1 = await coldVolumeOnHot1(m, dir, 'a');
  await m.createVolume({ name: 'b', sizeBytes: 2 * MiB, tier: 'cold', pool: 'hot-0' });
  const want = { a: Buffer.alloc(2 * MiB), b: Buffer.alloc(2 * MiB) };
  const put = async (name: 'a' | 'b', at: number) => {
    const block = crypto.randomBytes(BLOCK_BYTES);
    block.copy(want[name], at);
    await writeVolume(m!.openVolume(name), at, block);
  };
  await put('a', 0);
  const ids = { a: m.meta.volumes.get('a')!.id, b: m.meta.volumes.get('b')!.id };
  // A restart: a's record stays in the old journal file, writes go to a fresh head file.
  await m.close();
  m = await openManager(dir, false);
  const journal = m.cold!.journal;
  const d = m.cold!.destager;
  fs.renameSync(hot1, `${hot1}.gone`);

  const lines: string[] = [];
  const deferredBefore = d.ticksDeferred;
  for (let i = 1; i <= TICKS; i++) {
    // A small write to b (not ripe: it waits for more, or for an idle interval).
    await put('b', i * BLOCK_BYTES);
    lines.push(...(await stderrLines(() => d.tick())));
    assert.deepEqual(journal.dirtyChunks(ids.a), [0], `tick ${i}: a's record stays in the journal`);
    assert.match(journal.stalledReason ?? '', /cannot be opened.*hot-1/, `tick ${i}: the reason names the pool`);
    // The first tick may not know yet that a cannot be opened (one full pass); none after it is forced.
    if (i > 1) assert.deepEqual(journal.dirtyChunks(ids.b), [0], `tick ${i}: b's small record waits (no full pass forced by a's pinned file)`);
  }
  assert.ok(d.ticksDeferred - deferredBefore >= TICKS - 1, `ticks deferred: ${d.ticksDeferred - deferredBefore}`);
  const skipLines = lines.filter((l) => l.includes('cannot be opened'));
  assert.equal(skipLines.length, 1, `one line for ${TICKS} ticks:\n${skipLines.join('')}`);
  assert.ok(d.volumesSkipped >= 1);

  // hot-1 is back: writes to b keep coming (never idle); a's old record must not wait for the 12-interval pass.
  fs.renameSync(`${hot1}.gone`, hot1);
  let ticksUntilA = 0;
  for (let i = 1; i <= 6 && journal.dirtyChunks(ids.a).length > 0; i++) {
    await put('b', (TICKS + i) * BLOCK_BYTES);
    await d.tick();
    ticksUntilA = i;
  }
  assert.deepEqual(journal.dirtyChunks(ids.a), [], "a's record is destaged once hot-1 is back");
  assert.ok(ticksUntilA <= 2, `ticks: ${ticksUntilA}`);
  await d.drain();
  for (const name of ['a', 'b'] as const) assert.ok((await readVolume(m.openVolume(name), 0, 2 * MiB)).equals(want[name]), `${name} reads back`);
});
