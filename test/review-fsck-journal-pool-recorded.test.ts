// Review follow-up of 2f2bda7 (the journal stays on the hot pool the index
// records it was made on) for 1117d8c's fsck and offline `pools list`: both
// took "the first hot pool" as the journal's, on their own. With two hot pools
// listed hot-b then hot-a, the journal is on hot-b, but the pool map (index
// name order) puts hot-a first: with hot-b's disk missing, fsck said hot-b
// held volume files only and journal.problem was null (the journal not named
// at all), and pools list did not say hot-b holds the journal. Taken out of
// couchestor.yaml too, hot-b still holds the journal (serve still refuses):
// it must stay damage, never a retired pool. Real daemon, real CLI, nbdcopy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, assertSameBytes, coldStatus, createVolume, dropCache, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';

interface FsckOut {
  unreachablePools: { pool: string; holds: string }[];
  retiredPools: { pool: string }[];
  journal: { problem: string | null };
}

const config = (hotPools: string[]) =>
  MANUAL_DESTAGE_CONFIG +
  'pools:\n' +
  hotPools.map((n) => `  - { name: ${n}, tier: hot, path: pools/${n}, capacity: auto }\n`).join('') +
  Array.from({ length: 6 }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

test('journal on hot-b (listed first, sorts last), hot-b missing: fsck and pools list name hot-b as the journal pool; taken out of the configuration too, still damage', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-fsck-journal-recorded-'));
  let d = await startColdDaemon(config(['hot-b', 'hot-a']));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const model = patternBytes(4 * MiB, 0x3f7);
  await createVolume(d, 'c1', 4 * MiB, 'cold');
  fs.writeFileSync(path.join(work, 'in.bin'), model);
  run('nbdcopy', [path.join(work, 'in.bin'), d.exportUri('c1')]);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'writes wait in the journal');
  assert.equal(await d.stop(), 0);
  const dataDir = d.dataDir;
  const hotB = path.join(dataDir, 'pools', 'hot-b');
  assert.ok(fs.existsSync(path.join(hotB, 'journal')), 'the journal is on hot-b');
  fs.renameSync(hotB, `${hotB}.unmounted`);

  const check = (what: string) => {
    const r = d.cli('fsck');
    assert.equal(r.status, 1, `${what}: fsck exits 1\n${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout) as FsckOut;
    assert.deepEqual(report.unreachablePools.map((p) => p.pool), ['hot-b'], what);
    assert.match(report.unreachablePools[0]!.holds, /the cold tier's journal/, what);
    assert.match(report.journal.problem ?? '', /its pool hot-b is unreachable/, what);
    assert.deepEqual(report.retiredPools, [], what);
    const pools = d.cli('pools', 'list');
    assert.equal(pools.status, 0, what);
    assert.match(pools.stderr, /pool hot-b \(hot\) is offline: .*it holds the cold tier's journal/, what);
  };
  check('configured');
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), config(['hot-a']));
  check('taken out of the configuration');

  // Back (and configured again): clean, and the journaled writes read back.
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), config(['hot-b', 'hot-a']));
  fs.renameSync(`${hotB}.unmounted`, hotB);
  assert.equal(d.cli('fsck').status, 0);
  d = await TestDaemon.start({ dataDir });
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with hot-b back');
});
