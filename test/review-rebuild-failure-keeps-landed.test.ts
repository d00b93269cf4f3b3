// A whole-pool rebuild that throws part way keeps what it landed (review of
// c826ec8). Its last window (written, never synced) was ended without flips:
// the records stayed on the replaced pool as dead space no running count
// knows of (StripeStore.releaseReplaced: under-counted until the start-up
// recount), their stripes went back to the queue, and with the fault still
// there the retry timer's whole-pool rebuild (every retryIntervalMs, 10 s)
// landed the same stripes again and threw again: the pool grew by a window
// (up to REBUILD_SYNC_BYTES) per retry, without end, while none of it was ever
// made durable. The fault is real data, not a mock: a damaged S3 object
// record the rebuild's object listing throws on after the volume's shards
// landed (as test/rebuild-failure-listed). In process: real manager, stripe
// store, segment files, LMDB index, Reconstructor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { openColdTierManager, readVolume, tempDirClosing } from './helpers/volume.js';
import { coldVolumeWithObjectSource, poolBytes, putDamagedObjectRecord, replacePoolDir } from './helpers/rebuild.js';

const LOST = 'cold-2';
/** 1 MiB chunks: one 4+2 stripe each, so 32 shards of 256 KiB on every pool. */
const STRIPES = 32;
const RETRIES = 3;

test('a pool rebuild that fails after its shards landed keeps them (synced, flipped); retries with the fault still there land nothing again', async (t) => {
  let m: VolumeManager | null = null;
  const dir = tempDirClosing(t, 'couchestor-review-rebuild-failure-keeps-', () => m!);
  m = await openColdTierManager(dir);
  const want = await coldVolumeWithObjectSource(t, m, STRIPES);
  const r = m.cold!.reconstructor;
  const removeDamaged = await putDamagedObjectRecord(m);

  replacePoolDir(dir, LOST);
  await assert.rejects(r.rebuildPool(LOST), TypeError, 'the listing of the object stripes throws on the damaged record');
  const afterFailure = poolBytes(dir, LOST);
  assert.ok(afterFailure >= STRIPES * 256 * 1024, `the volume's shards landed (${afterFailure} bytes)`);
  // What it landed is kept: durable (inside the store's durable end) and named by the index.
  const present = async () => {
    let n = 0;
    for (const [, ref] of m!.openVolume('c').stripes) if (await m!.cold!.stripes.shardPresent(ref, ref.shards.findIndex((s) => s.pool === LOST))) n++;
    return n;
  };
  assert.equal(await present(), STRIPES, "the volume's rebuilt shards are kept");
  assert.equal(r.counts().Reconstructing, 0);
  assert.equal(await m.cold!.stripes.writesSettled(2_000), true, 'no write session left open');
  assert.equal(m.meta.incompleteRebuilds.get(LOST)?.state, 'interrupted');

  // The fault stays: each retry of the interrupted pool throws again, and lands nothing again.
  for (let i = 0; i < RETRIES; i++) {
    await assert.rejects(r.retrySkippedVolumes(), TypeError);
    assert.equal(poolBytes(dir, LOST), afterFailure, `retry ${i + 1} landed the same shards again`);
  }
  assert.equal(m.meta.incompleteRebuilds.get(LOST)?.state, 'interrupted', 'still listed: the object stripes are not known rebuilt');

  // The fault removed: the next retry completes, and the volume reads back with two more pools lost.
  await removeDamaged();
  const reports = await r.retrySkippedVolumes();
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.complete, true, JSON.stringify(reports[0]));
  assert.equal(reports[0]!.stripesRebuilt, 0, 'nothing left to rebuild');
  assert.equal(m.meta.incompleteRebuilds.get(LOST), undefined);
  await m.close();
  for (const p of ['cold-0', 'cold-5']) fs.renameSync(path.join(dir, p), path.join(dir, `${p}.gone`));
  m = await openColdTierManager(dir, false);
  assert.ok((await readVolume(m.openVolume('c'), 0, want.length)).equals(want), 'c reads back byte-exact with cold-0 and cold-5 lost');
});
