// Review of 1117d8c (fsck's unreachablePools). A pool stays in the index when
// it is taken out of couchestor.yaml (there is no command that forgets one):
// the README's way to retire a dead cold pool is to take it out of the
// configuration and `couchestor rebuild` it, which places its shards on the
// other pools. Once nothing the index knows is on it (no stripe names it, no
// volume file, not the journal's pool), its missing directory is not damage:
// fsck listed it as unreachable and exited 1 on every run from then on, with
// all data readable and no way to make it clean. A missing pool the
// configuration still names, or one that still holds something, stays damage
// (unreachablePools); a retired one is listed in retiredPools.
// Real daemon processes, real CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, api, assertSameBytes, dropCache, losePool, patternBytes, readExport, startColdDaemon, writeColdVolume } from './helpers/cold.js';
import YAML from 'yaml';
import { startWarmDaemon } from './helpers/hot-warm.js';

interface FsckOut {
  unreachablePools: { pool: string; tier: string; problem: string; holds: string }[];
  retiredPools: { pool: string; tier: string; problem: string }[];
  stripes: { Healthy: number; Degraded: number; Failed: number };
}

const poolsConfig = (cold: number) =>
  MANUAL_DESTAGE_CONFIG +
  'pools:\n  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }\n' +
  Array.from({ length: cold }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

test('a dead cold pool taken out of the configuration and rebuilt away: fsck exits 0 (listed, not damage); before the rebuild, 1', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-fsck-removed-pool-'));
  let d = await startColdDaemon(poolsConfig(7));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const model = patternBytes(8 * MiB, 0x7e01);
  await writeColdVolume(d, 'c1', model, work);
  assert.equal(await d.stop(), 0);
  assert.equal(d.cli('fsck').status, 0, 'clean to begin with');

  // cold-6's disk dies; the operator takes it out of couchestor.yaml.
  losePool(d, 6);
  fs.writeFileSync(path.join(d.dataDir, 'couchestor.yaml'), poolsConfig(6));
  const before = d.cli('fsck');
  assert.equal(before.status, 1, `stripes still name cold-6: damage\n${before.stdout}`);
  const b = JSON.parse(before.stdout) as FsckOut;
  assert.deepEqual(b.unreachablePools.map((p) => p.pool), ['cold-6']);
  assert.deepEqual(b.retiredPools ?? [], []);

  // The rebuild places its shards on the other pools: nothing names cold-6 any more.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const report = await api<{ complete: boolean; stripesChecked: number }>(d, 'POST', '/v1/rebuild', { pool: 'cold-6' });
  assert.equal(report.complete, true, JSON.stringify(report));
  assert.ok(report.stripesChecked > 0);
  assert.equal(await d.stop(), 0);

  const after = d.cli('fsck');
  assert.equal(after.status, 0, `nothing is on cold-6 any more: not damage\n${after.stdout}\n${after.stderr}`);
  const a = JSON.parse(after.stdout) as FsckOut;
  assert.deepEqual(a.unreachablePools, [], 'not damage');
  assert.deepEqual(a.retiredPools.map((p) => [p.pool, p.tier, p.problem]), [['cold-6', 'cold', 'directory missing']]);
  assert.equal(a.stripes.Degraded + a.stripes.Failed, 0);
  assert.match(after.stderr, /fsck: pool cold-6 \(cold\) at .*cold-6: directory missing; the configuration no longer names it and nothing the index knows is on it: not damage/);

  // It is really so: the data reads back.
  d = await TestDaemon.start({ dataDir: d.dataDir });
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 after cold-6 was rebuilt away');
});

test('a warm pool taken out of the configuration: missing and empty is not damage; still placing a volume, or still configured, it is', async (t) => {
  const d = await startWarmDaemon();
  t.after(() => d.cleanup());
  assert.equal(await d.stop(), 0);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  fs.renameSync(warm0, `${warm0}.unmounted`);
  // Still configured (holding nothing): its disk is expected, serve leaves it offline. Damage.
  const configured = d.cli('fsck');
  assert.equal(configured.status, 1, configured.stdout);
  assert.deepEqual((JSON.parse(configured.stdout) as FsckOut).unreachablePools.map((p) => p.pool), ['warm-0']);

  // Taken out of the configuration, holding nothing: not damage.
  const yamlPath = path.join(d.dataDir, 'couchestor.yaml');
  const full = fs.readFileSync(yamlPath, 'utf8');
  const withoutWarm = () => {
    const cfg = YAML.parse(full) as { pools: { name: string }[] };
    cfg.pools = cfg.pools.filter((p) => p.name !== 'warm-0');
    fs.writeFileSync(yamlPath, YAML.stringify(cfg));
  };
  withoutWarm();
  assert.doesNotMatch(fs.readFileSync(yamlPath, 'utf8'), /warm-0/, 'the test took warm-0 out');
  const removed = d.cli('fsck');
  assert.equal(removed.status, 0, `${removed.stdout}\n${removed.stderr}`);
  const r = JSON.parse(removed.stdout) as FsckOut;
  assert.deepEqual(r.unreachablePools, []);
  assert.deepEqual(r.retiredPools.map((p) => p.pool), ['warm-0']);
  // pools list names it offline, without telling to mount a disk the configuration dropped.
  const listed = d.cli('pools', 'list');
  assert.equal(listed.status, 0);
  assert.match(listed.stderr, /pool warm-0 \(warm\) is offline: .*\(the configuration no longer names it: `couchestor fsck` says whether anything is still on it\)\n/);
  assert.doesNotMatch(listed.stderr, /Mount its disk/);

  // A volume placed on it (made while it was there): damage, configured or not.
  fs.renameSync(`${warm0}.unmounted`, warm0);
  fs.writeFileSync(yamlPath, full);
  const d2 = await TestDaemon.start({ dataDir: d.dataDir });
  t.after(() => d2.cleanup());
  d2.createVolume('w', '4M', '--tier', 'warm');
  assert.equal(await d2.stop(), 0);
  withoutWarm();
  fs.renameSync(warm0, `${warm0}.unmounted`);
  const holding = d2.cli('fsck');
  assert.equal(holding.status, 1, holding.stdout);
  const h = (JSON.parse(holding.stdout) as FsckOut).unreachablePools;
  assert.deepEqual(h.map((p) => p.pool), ['warm-0']);
  assert.match(h[0]!.holds, /the volume files of w/);
});
