// The destager's interval tick with one volume it cannot open (its hot
// pool's directory gone, as when a disk drops out). That volume's records
// stay in the journal and pin their journal file, which no pass can free
// until the volume opens: counted as pinned, they made every tick a full
// pass (the other volumes' small records destaged at once, one 1 MiB stripe
// rewrite each, the laziness of 57e4bfc gone), and each tick logged the
// volume twice (once looking for ripe chunks, once in the pass). Now the
// files only it pins are left out, the line is logged once (then rate
// limited), the reason still names the pool, and nothing is lost. Once the
// pool is back that must end at once (the review of f7a5748): its old record
// is destaged within two ticks (the first opens it, the next counts its file
// as pinned) under writes that never let the journal go idle, not after the
// 12-interval full pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { parsePolicyYaml } from '../src/dataplane/ec/policy.js';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import type { TestContext } from 'node:test';
import { stderrLines } from './helpers/stderr.js';
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

/**
 * Volume a (on hot-1) has a record in the journal file before a restart, b
 * small writes in the new one; hot-1 is renamed away and the destager ticked
 * TICKS times, a write to b before each: checks a's record stays, the reason
 * names hot-1, b's small records wait (no full pass forced), one log line.
 */
async function pinnedByUnopenable(t: TestContext, prefix: string) {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, prefix, () => m!);
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
    lines.push(...(await stderrLines(() => d.tick())).lines);
    assert.deepEqual(journal.dirtyChunks(ids.a), [0], `tick ${i}: a's record stays in the journal`);
    assert.match(journal.stalledReason ?? '', /cannot be opened.*hot-1/, `tick ${i}: the reason names the pool`);
    // The first tick may not know yet that a cannot be opened (one full pass); none after it is forced.
    if (i > 1) assert.deepEqual(journal.dirtyChunks(ids.b), [0], `tick ${i}: b's small record waits (no full pass forced by a's pinned file)`);
  }
  assert.ok(d.ticksDeferred - deferredBefore >= TICKS - 1, `ticks deferred: ${d.ticksDeferred - deferredBefore}`);
  const skipLines = lines.filter((l) => l.includes('cannot be opened'));
  assert.equal(skipLines.length, 1, `one line for ${TICKS} ticks:\n${skipLines.join('')}`);
  assert.ok(d.volumesSkipped >= 1);

  return { m, journal, d, hot1, ids, want, put };
}

test('an unopenable volume pinning an old journal file does not make every tick a full pass, and is logged once', async (t) => {
  const { m, journal, d, hot1, want } = await pinnedByUnopenable(t, 'couchestor-offline-destager-');
  // hot-1 is back: everything is destaged and reads back.
  fs.renameSync(`${hot1}.gone`, hot1);
  await d.drain();
  assert.equal(journal.bytesLive, 0);
  assert.equal(journal.stalledReason, null, 'a full pass with nothing skipped clears the reason');
  for (const name of ['a', 'b'] as const) assert.ok((await readVolume(m.openVolume(name), 0, 2 * MiB)).equals(want[name]), `${name} reads back`);
});

test('once its pool is back, an unopenable volume pinning an old journal file is destaged within two ticks under writes', async (t) => {
  const { m, journal, d, hot1, ids, want, put } = await pinnedByUnopenable(t, 'couchestor-rvoff-destager-back-');
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
