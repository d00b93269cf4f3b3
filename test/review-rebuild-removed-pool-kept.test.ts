// Review of 93a2580: the start-up drop of incomplete-rebuild records of cold
// pools "no longer configured". A cold pool taken out of couchestor.yaml stays
// a cold pool of the daemon: its record stays in the index, stripes keep their
// shard references to it, reads, placement, POST /v1/rebuild and the retry
// timer all still use it. Dropping its record at start hid a pool whose last
// rebuild was cut (stripes still lacking their shard on it): not listed, no
// gauge series, never retried, as if fully rebuilt. Here cold-6's disk dies
// after a crash during its rebuild and the operator takes it out of the
// configuration: it must stay listed until a rebuild of it completes (which
// places its shards on the other pools). Real daemon processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, api, assertSameBytes, coldStatus, dropCache, losePool, patternBytes, readExport, scrub, startColdDaemon, writeColdVolume } from './helpers/cold.js';
import { poolGauge, type ListedRebuild } from './helpers/rebuild.js';

const STRIPES = 8;

const poolsConfig = (cold: number) =>
  MANUAL_DESTAGE_CONFIG +
  'pools:\n  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }\n' +
  Array.from({ length: cold }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

test('a cold pool taken out of the configuration whose rebuild was cut stays listed until a rebuild of it completes', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-removed-kept-'));
  let d = await startColdDaemon(poolsConfig(7));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const model = patternBytes(STRIPES * MiB, 0x6c07);
  await writeColdVolume(d, 'c1', model, work);
  assert.equal((await coldStatus(d)).stripes.Healthy, STRIPES);
  await d.stop();

  // A whole-pool rebuild of cold-6 was cut by a crash (its 'running' record is left), then
  // cold-6's disk died for good, and the operator took it out of couchestor.yaml.
  const meta = MetaStore.open(d.dataDir);
  await meta.incompleteRebuilds.put('cold-6', { volumesSkipped: [], notRebuilt: 0, state: 'running' });
  await meta.close();
  losePool(d, 6);
  fs.writeFileSync(path.join(d.dataDir, 'couchestor.yaml'), poolsConfig(6));

  d = await TestDaemon.start({ dataDir: d.dataDir });
  const listed = (await api<{ incompleteRebuilds: ListedRebuild[] }>(d, 'GET', '/v1/cold')).incompleteRebuilds;
  assert.deepEqual(listed, [{ pool: 'cold-6', volumesSkipped: [], notRebuilt: 1, interrupted: true }], 'cold-6 is still not fully rebuilt: listed');
  assert.equal(await poolGauge(d, 'couchestor_rebuild_incomplete', 'cold-6'), 1);

  // It is still a cold pool of the daemon: a rebuild of it is accepted, finds the stripes that
  // still name it, and places their shards on the other pools (it is offline).
  const report = await api<{ complete: boolean; stripesChecked: number; notRebuilt: number }>(d, 'POST', '/v1/rebuild', { pool: 'cold-6' });
  assert.ok(report.stripesChecked > 0, `stripes still had their shard on cold-6: ${JSON.stringify(report)}`);
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.deepEqual((await api<{ incompleteRebuilds: ListedRebuild[] }>(d, 'GET', '/v1/cold')).incompleteRebuilds, [], 'cleared by the completed rebuild');
  assert.equal(await poolGauge(d, 'couchestor_rebuild_incomplete', 'cold-6'), undefined, 'no series once it is not listed (not configured)');
  const checked = await scrub(d);
  assert.equal(checked.stripesChecked, STRIPES);
  assert.equal(checked.badStripes, 0);
  // Two more pools lost: the shards placed elsewhere carry the reads.
  losePool(d, 0);
  losePool(d, 1);
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-0, cold-1 and cold-6 gone');
});
