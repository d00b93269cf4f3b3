// A scrub, a pool rebuild and a control-loop pass each opened every volume
// (VolumeManager.availableVolumes, the loop's "already cold?" look) and the
// manager kept each one open for good: after the first scrub a node held a
// descriptor per volume (and each one's chunk map in memory), and past the
// process's limit (20,000 here) every open failed EMFILE, NBD accepts, S3 and
// the journal included. Now the open volumes are what clients and work in
// flight hold: a pass opens a volume only for the time it needs it (the scrub
// and the loop's look read a closed volume's chunk map from the index and open
// none), and a volume an NBD client holds stays open and serves through them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { MiB, allHealthy, assertSameBytes, coldStatus, corruptSegments, createVolume as createColdVolume, destage, patternBytes, readExport, rebuildPool, scrub, startColdDaemon, startWithColdVolume } from './helpers/cold.js';
import { createVolume, decisionFor, metric, policyNamed, policyYaml, reconcile, scrape, startControlDaemon } from './helpers/control-loop.js';
import { addVolumesLike, processFds } from './helpers/many-volumes.js';
import { RawNbd } from './helpers/nbd-client.js';

const VOLUMES = 2_000;
/** Descriptors a pass may leave beside the baseline (sockets of the API calls, a segment file): not one per volume. */
const SLACK_FDS = 40;


/** Waits (up to 5 s) until the daemon has `want` volume files open: a volume given back is closed right after (its close awaits its files' close). */
async function untilVolumeFiles(pid: number, want: number, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (processFds(pid).volumeFiles !== want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(processFds(pid).volumeFiles, want, what);
}

test(`a scrub, a pool rebuild and a control-loop pass over ${VOLUMES} volumes keep the descriptors at their baseline; a volume an NBD client holds stays open and serves`, async (t) => {
  // Destaged only when the test asks: the stripe counts below are exact. Every volume reads
  // cold to the policy (the client's I/O too, far below the watermarks): each stays where it is.
  const policy = policyYaml('all', { lowWatermarkIOPS: 1_000_000, highWatermarkIOPS: 2_000_000 });
  let d = await startControlDaemon({ policies: { 'all.yaml': policy }, config: { destageIntervalMs: 3_600_000 } });
  t.after(() => d.cleanup());
  await createVolume(d, 'held', 4 * MiB, { tier: 'cold' });
  assert.equal(await d.stop(), 0);
  await addVolumesLike(d.dataDir, 'held', 'v', VOLUMES);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const pid = d.info.pid;

  // The client holds 'held' and writes it: 2 MiB destaged (2 stripes for the scrub and the rebuild), 1 MiB journaled.
  const nbd = await RawNbd.connect({ path: d.info.nbd.socketPath });
  t.after(() => nbd.close());
  await nbd.handshake('held');
  const model = patternBytes(4 * MiB, 7);
  const write = async (offsetBytes: number, lengthBytes: number) => {
    assert.equal((await nbd.writeAt(offsetBytes, model.subarray(offsetBytes, offsetBytes + lengthBytes))).error, 0);
    assert.equal((await nbd.flush()).error, 0);
  };
  await write(0, 2 * MiB);
  await destage(d);
  await write(2 * MiB, MiB);
  const base = processFds(pid);
  assert.equal(base.volumeFiles, 1, 'premise: only the held volume is open');

  // The client's I/O goes on through every pass: each block read back as written.
  let stop = false;
  let ios = 0;
  const io = (async () => {
    for (let i = 0; !stop; i++) {
      const at = 3 * MiB + (i % 256) * 4096;
      await write(at, 4096);
      const r = await nbd.readAt(at, 4096);
      assert.equal(r.error, 0);
      assert.ok(r.data!.equals(model.subarray(at, at + 4096)), `block at ${at} read back`);
      ios++;
    }
  })();

  const report = await scrub(d);
  assert.equal(report.stripesChecked, 2, JSON.stringify(report));
  assert.equal(report.badStripes, 0);
  const afterScrub = processFds(pid);
  t.diagnostic(`${VOLUMES + 1} volumes: fds ${base.all} before the scrub, ${afterScrub.all} after; scrub ${report.durationMs} ms`);
  assert.equal(afterScrub.volumeFiles, 1, 'the scrub left volume files open');
  assert.ok(afterScrub.all <= base.all + SLACK_FDS, `descriptors ${base.all} -> ${afterScrub.all} after the scrub`);

  const rebuilt = await rebuildPool(d, 0);
  assert.equal(rebuilt.stripesChecked, 2, JSON.stringify(rebuilt));
  assert.equal(processFds(pid).volumeFiles, 1, 'the pool rebuild left volume files open');

  // A pass that looks at every volume: the heat window (2 s) covered, each idle cold volume stays cold.
  const deadline = Date.now() + 10_000;
  let all = policyNamed(await reconcile(d, true), 'all');
  while (decisionFor(all, 'v0').action === 'no-data' && Date.now() < deadline) all = policyNamed(await reconcile(d, true), 'all');
  assert.equal(decisionFor(all, 'v0').action, 'stay', JSON.stringify(decisionFor(all, 'v0')));
  assert.match(decisionFor(all, `v${VOLUMES - 1}`).reason, /already cold/);
  assert.equal(all.decisions.length, VOLUMES + 1);
  assert.equal(decisionFor(all, 'held').action, 'stay', JSON.stringify(decisionFor(all, 'held')));
  const afterPass = processFds(pid);
  assert.equal(afterPass.volumeFiles, 1, 'the control-loop pass left volume files open');
  assert.ok(afterPass.all <= base.all + SLACK_FDS, `descriptors ${base.all} -> ${afterPass.all} after the pass`);
  const text = await scrape(d);
  // Held by its client's loan (an NBD connection borrows its volume), pinned too where the destager pins what it destaged.
  const [pinned, lent, idle] = ['pinned', 'lent', 'idle'].map((held) => metric(text, 'couchestor_open_volumes', { held })!);
  assert.deepEqual({ held: pinned! + lent!, idle }, { held: 1, idle: 0 }, 'couchestor_open_volumes: the held volume, held by its client');

  stop = true;
  await io;
  assert.ok(ios > 0, 'the client did I/O during the passes');
  // Every byte the client wrote reads back over the held connection.
  const back = await nbd.readAt(0, 4 * MiB);
  assert.equal(back.error, 0);
  const want = Buffer.concat([model.subarray(0, 3 * MiB), Buffer.alloc(MiB)]);
  want.set(model.subarray(3 * MiB, 3 * MiB + Math.min(ios, 256) * 4096), 3 * MiB);
  assert.ok(back.data!.equals(want), 'the held volume reads back what was written');
  await nbd.disconnect();
});

test('a scrub repairs the damaged stripes of a volume nothing holds open, listed from the index', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'closed-scrub-'));
  let { d, model } = await startWithColdVolume(work, 3 * MiB, 3 * MiB, 11);
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  // Its 3 stripes' shards on cold-2 damaged while the daemon is down; after the start nothing has the volume open.
  assert.equal(await d.stop(), 0);
  corruptSegments(d, 2, 300, 5);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.equal(processFds(d.info.pid).volumeFiles, 0, 'premise: no volume open');
  const report = await scrub(d);
  assert.equal(report.stripesChecked, 3, JSON.stringify(report));
  assert.equal(report.badStripes, 3, JSON.stringify(report));
  assert.deepEqual(report.stripes, allHealthy(3));
  await untilVolumeFiles(d.info.pid, 0, 'the repair left the volume open');
  const again = await scrub(d);
  assert.equal(again.stripesChecked, 3);
  assert.equal(again.badStripes, 0, 'repaired: a second scrub finds nothing');
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'read back after the repair');
});

test('the destager closes the volumes it opened once their journal records are destaged (restart with records left)', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'closed-destage-'));
  let d = await startColdDaemon();
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  // Each volume written and flushed by a client: its records stay in the journal (destaged only when asked).
  const VOLS = 3;
  const models: Buffer[] = [];
  for (let i = 0; i < VOLS; i++) {
    await createColdVolume(d, `j${i}`, 2 * MiB, 'cold');
    const nbd = await RawNbd.connect({ path: d.info.nbd.socketPath });
    await nbd.handshake(`j${i}`);
    const model = Buffer.alloc(2 * MiB);
    patternBytes(64 * 1024, 20 + i).copy(model, i * 4096);
    assert.equal((await nbd.writeAt(i * 4096, model.subarray(i * 4096, i * 4096 + 64 * 1024))).error, 0);
    assert.equal((await nbd.flush()).error, 0);
    await nbd.disconnect();
    models.push(model);
  }
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.equal(processFds(d.info.pid).volumeFiles, 0, 'premise: no volume open after the start');
  await destage(d);
  assert.equal((await coldStatus(d)).journalBytes, 0, 'premise: the journal is drained');
  await untilVolumeFiles(d.info.pid, 0, 'the destager left the volumes it destaged open');
  for (let i = 0; i < VOLS; i++) assertSameBytes(readExport(d, `j${i}`, path.join(work, `j${i}.bin`)), models[i]!, `j${i} read back after its close`);
});
