// Compaction's final look against a rebuild's index flip that is queued in
// LMDB but not committed when the look begins (the gap named in note 7:
// "nothing pins the flush before the final look").
//
// Why it matters for rebuild flips in particular: a rebuilt shard record is
// appended to a pool's head segment before its flip (Volume.replaceStripe)
// makes the index name it. That segment can be sealed meanwhile and picked
// by compaction, whose first look (the index) does not see the record: it
// is neither copied nor flipped. Only the final look can keep the segment,
// and it must see the flip. The generation check behind it
// (newerThanIndex) does not help here: a rebuild keeps the stripe's
// generation.
//
// Why the ordering holds (so nothing is changed in compaction.ts):
//  1. landRebuild's write session ends just before it resolves and the
//     reconstructor issues the flip in its continuation (a microtask);
//     compaction's writesSettled waits for that session and then yields a
//     whole macrotask (setImmediate), so the flip's meta.transaction is
//     queued before the final look does anything;
//  2. the final look first queues an empty meta.transaction (the barrier).
//     lmdb-js runs transaction callbacks in the order they were queued and
//     resolves one only once the batch holding it has committed (with
//     overlappingSync off, synced), so the barrier resolves after the flip
//     committed; and it resets its read transaction on each commit before
//     resolving, so the snapshot taken next holds the flip;
//  3. a flip queued after the barrier cannot name the segment any more:
//     what it replaces (the stripe read before its rebuild) still names a
//     place in the segment only if compaction did not move it, and then the
//     index already names the segment at the snapshot; if compaction did
//     move it, the flip's compare-and-swap fails.
// This test makes 1-2 happen with the flip's commit held for certain: a
// second process holds LMDB's writer lock (as a slow commit would) from
// before the flip is issued until the barrier is queued (or, without a
// barrier, until the final look has decided). Without the barrier
// the snapshot misses the flip and the segment holding the rebuilt shard
// is deleted (checked by removing the barrier once: the test fails).
// Real VolumeManager cold tier (1 MiB segments), Reconstructor, compactor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { Transaction } from 'lmdb';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import type { ShardRef, StripeRef } from '../src/dataplane/ec/stripe-store.js';
import type { ChunkEntry } from '../src/dataplane/meta/store.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';
import { openCompactionTier, readVolume, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const SHARD_HEADER_BYTES = 64;

/**
 * A second process holding the LMDB writer lock of `metaDir` (an empty
 * write transaction left open) until release(): this process's commits
 * wait for it, as behind a slow disk.
 */
async function holdWriterLock(metaDir: string): Promise<{ release: () => Promise<void> }> {
  const script = [
    "import { open } from 'lmdb';",
    "import fs from 'node:fs';",
    'const env = open({ path: process.argv[1], maxDbs: 64, mapSize: 4 * 1024 ** 3 });',
    "env.transactionSync(() => { process.stdout.write('locked\\n'); fs.readSync(0, Buffer.alloc(1), 0, 1, null); });",
    'await env.close();',
  ].join('\n');
  // cwd: this test's directory (inside the repository, whichever build dir), so that 'lmdb' resolves from its node_modules.
  const cwd = path.dirname(fileURLToPath(import.meta.url));
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script, metaDir], { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('locked')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`lock holder exited (${code}) before locking`)));
  });
  let released: Promise<void> | null = null;
  return {
    release: () =>
      (released ??= (async () => {
        const exited = once(child, 'exit');
        child.stdin!.end('x');
        await exited;
      })()),
  };
}

function samePlace(a: ShardRef | undefined, b: ShardRef): boolean {
  return a !== undefined && a.pool === b.pool && a.segment === b.segment && a.offsetBytes === b.offsetBytes;
}

async function writeChunk(m: VolumeManager, vol: Volume, want: Buffer, chunk: number): Promise<void> {
  const data = crypto.randomBytes(MiB);
  data.copy(want, chunk * MiB);
  await writeVolume(vol, chunk * MiB, data);
  await vol.flush();
  await m.cold!.destager.drain();
}

/** Every stripe of `vol` in the index: all 6 shards present and verifying. */
async function assertAllShardsThere(m: VolumeManager, vol: Volume, when: string): Promise<void> {
  const bad = [];
  for (const { chunkIndex, entry } of m.meta.volumeChunks(vol.rec.id)) {
    if (!entry.stripe) continue;
    const health = await m.cold!.stripes.check(entry.stripe);
    if (health.bad.length > 0) bad.push({ chunkIndex, bad: health.bad, shards: health.bad.map((i) => entry.stripe!.shards[i]) });
  }
  assert.deepEqual(bad, [], `${when}: every shard of every indexed stripe is present and verifies`);
}

test("a rebuild's flip queued but not committed when compaction's final look begins is in its snapshot: the segment holding the rebuilt shard is kept", { timeout: 120_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-final-look-rebuild-'));
  /** Called with each read snapshot the compactor opens on its objects database (every slice, and the final look's). */
  let onSnapshot: ((txn: Transaction) => void) | null = null;
  let tier = await openCompactionTier(dir, true, (mgr) => {
    const open = mgr.meta.openDB.bind(mgr.meta);
    mgr.meta.openDB = ((name: string) => {
      const db = open(name);
      if (name !== OBJECTS_DB) return db;
      return new Proxy(db, {
        get(target, prop) {
          const v = Reflect.get(target, prop, target) as unknown;
          if (prop === 'useReadTransaction') {
            return () => {
              const txn = (v as () => Transaction).apply(target);
              onSnapshot?.(txn);
              return txn;
            };
          }
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    }) as typeof mgr.meta.openDB;
  });
  let lock: { release: () => Promise<void> } | null = null;
  t.after(async () => {
    await lock?.release();
    await tier.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const { m, compactor } = tier;
  const stripes = m.cold!.stripes;
  await m.createVolume({ name: 'v', sizeBytes: 16 * MiB, tier: 'cold', pool: 'hot-0' });
  const vol = m.openVolume('v');
  const want = Buffer.alloc(16 * MiB);

  // Chunks 0-2 fill every pool's first segment (3 records of 256 KiB + header in 1 MiB); chunk 3 seals it.
  for (let c = 0; c < 4; c++) await writeChunk(m, vol, want, c);
  // Chunk 0's shard 0 damaged: the rebuild writes a new record for it (on that shard's pool, the only one the stripe does not use).
  const before = vol.stripes.get(0)!;
  const damaged = before.shards[0]!;
  const segFile = path.join(dir, damaged.pool, 'segments', `seg-${String(damaged.segment).padStart(12, '0')}.cseg`);
  const fd = fs.openSync(segFile, 'r+');
  fs.writeSync(fd, Buffer.alloc(16, 0xee), 0, 16, damaged.offsetBytes + SHARD_HEADER_BYTES + 1000);
  fs.closeSync(fd);

  // The rebuild, held (inside a write session, as landRebuild's own) once its record is appended, before its flip.
  const realLand = stripes.landRebuild.bind(stripes);
  let gateOpen!: () => void;
  const gate = new Promise<void>((resolve) => (gateOpen = resolve));
  let landed!: (next: StripeRef) => void;
  const rebuiltRef = new Promise<StripeRef>((resolve) => (landed = resolve));
  stripes.landRebuild = async (ref, prepared) => {
    const token = stripes.beginWrite();
    try {
      const next = await realLand(ref, prepared);
      landed(next);
      await gate;
      return next;
    } finally {
      stripes.endWrite(token);
    }
  };
  // Flips issued by the volume's replaceStripe, told from the compactor's transactions.
  const realReplace = vol.replaceStripe.bind(vol);
  let inFlip = false;
  vol.replaceStripe = (c, expected, next) => {
    inFlip = true;
    try {
      return realReplace(c, expected, next);
    } finally {
      inFlip = false;
    }
  };
  m.cold!.reconstructor.enqueue({ volumeId: vol.rec.id, chunkIndex: 0 }, 'test: shard 0 damaged');
  const next = await rebuiltRef;
  const rebuilt = next.shards[0]!;
  assert.ok(!samePlace(rebuilt, damaged), 'the rebuilt shard has a new place');
  const store = (await stripes.segmentStore(rebuilt.pool))!;
  // More chunks until the rebuilt record's segment is sealed: a compaction candidate holding it, unreferenced yet.
  for (let c = 4; store.segments().find((s) => s.segment === rebuilt.segment)!.head; c++) {
    assert.ok(c < 16, 'the rebuilt record\'s segment gets sealed');
    await writeChunk(m, vol, want, c);
  }
  await compactor.recount(); // the rebuilt record counts dead (nothing names it): its segment is a candidate
  const candidate = (await compactor.segments()).find((s) => s.pool === rebuilt.pool && s.segment === rebuilt.segment)!;
  assert.ok(candidate.deadBytes >= rebuilt.lengthBytes, `the rebuilt record's segment counts it dead: ${JSON.stringify(candidate)}`);

  // The pass: once it waits for the write sessions (the rebuild's), the writer lock is taken and the
  // rebuild let go: its flip is issued and cannot commit. The lock is let go as the final look queues
  // its barrier (or, without one, once it has taken its snapshot).
  const chunk0: [number, number] = [vol.rec.id, 0];
  let phase: 'first-look' | 'released' | 'done' = 'first-look';
  let flipIssued = false;
  let flipCommitted = false;
  /** What the final look met: the flip's state as it queued its barrier, and what its snapshot held. */
  const race: { barrier: { flipCommittedWhenQueued: boolean } | null; finalSnapshot: { flipInSnapshot: boolean; lockHeld: boolean } | null } = { barrier: null, finalSnapshot: null };
  let releasing: Promise<void> | null = null;
  const realSettled = stripes.writesSettled.bind(stripes);
  stripes.writesSettled = (timeoutMs, stop) => {
    const settled = realSettled(timeoutMs, stop); // its epoch first: the rebuild's session is older
    if (phase === 'first-look') {
      releasing = (async () => {
        lock = await holdWriterLock(path.join(dir, 'meta', 'meta'));
        phase = 'released';
        gateOpen();
      })();
    }
    return settled;
  };
  const realTxn = m.meta.transaction.bind(m.meta);
  m.meta.transaction = <T>(fn: () => T): Promise<T> => {
    const p = realTxn(fn);
    if (phase === 'released') {
      if (inFlip) {
        flipIssued = true;
        void p.then(() => (flipCommitted = true));
      } else if (flipIssued && race.barrier === null) {
        race.barrier = { flipCommittedWhenQueued: flipCommitted };
        void lock!.release();
      }
    }
    return p;
  };
  onSnapshot = (txn) => {
    if (phase !== 'released' || !flipIssued) return;
    phase = 'done';
    const [seen] = [...m.meta.chunks.getRange({ start: chunk0, end: [vol.rec.id, 1], transaction: txn })];
    race.finalSnapshot = { flipInSnapshot: samePlace((seen?.value as ChunkEntry | undefined)?.stripe?.shards[0], rebuilt), lockHeld: !flipCommitted };
    // Not let go here: a flip committing while the look reads its slices would reach the volume's map, which the
    // look reads after the index, and keep the segment for another reason. Held until the look has decided.
  };
  // The look decided to delete: let the lock go first (nothing waits on a commit before, but nothing may wait forever).
  const realRemove = store.removeSegment.bind(store);
  store.removeSegment = async (segment) => {
    await lock?.release();
    return realRemove(segment);
  };
  const report = await compactor.runOnce({ unthrottled: true });
  await releasing;
  await lock!.release();
  store.removeSegment = realRemove;
  await m.cold!.reconstructor.process();
  m.meta.transaction = realTxn;
  stripes.writesSettled = realSettled;
  onSnapshot = null;
  t.diagnostic(`pass ${JSON.stringify(report)}; ${JSON.stringify(race)}`);

  assert.equal(report.segmentsCompacted, 0, 'the segment holding the rebuilt shard is not deleted');
  assert.ok(report.segmentsDeferred >= 1, 'it is kept for a later pass');
  assert.ok(store.segments().some((s) => s.segment === rebuilt.segment), 'its file is still there');
  const entry = m.meta.chunks.get(chunk0)!;
  assert.ok(samePlace(entry.stripe!.shards[0], rebuilt), 'the index names the rebuilt shard');
  await assertAllShardsThere(m, vol, 'after the raced pass');
  assert.ok((await readVolume(vol, 0, 16 * MiB)).equals(want), 'the volume reads back byte-exact');
  // How: the interleaving happened as intended (the flip held uncommitted until the barrier was queued).
  assert.ok(flipIssued, 'the rebuild flip was issued during the pass');
  assert.deepEqual(race.barrier, { flipCommittedWhenQueued: false }, 'the final look queued its barrier while the flip was queued and not committed');
  assert.deepEqual(race.finalSnapshot, { flipInSnapshot: true, lockHeld: false }, "the final look's snapshot, taken once the flip committed, holds it");

  // Nothing racing: the next pass moves the rebuilt record out and deletes the segment.
  const second = await compactor.runOnce({ unthrottled: true });
  assert.ok(second.segmentsCompacted >= 1, `the next pass compacts it: ${JSON.stringify(second)}`);
  assert.ok(!store.segments().some((s) => s.segment === rebuilt.segment), 'the segment is gone now');
  await assertAllShardsThere(m, vol, 'after the next pass');
  await tier.close();
  tier = await openCompactionTier(dir, false);
  const again = tier.m.openVolume('v');
  await assertAllShardsThere(tier.m, again, 'after a restart');
  assert.ok((await readVolume(again, 0, 16 * MiB)).equals(want), 'the volume reads back byte-exact after a restart');
  assert.equal(tier.m.cold!.stripes.counters.degradedReads, 0, 'no read had to decode around a shard');
});
