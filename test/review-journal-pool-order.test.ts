// Review of 99c34f9 (r13, session 10): the cold tier's journal lived on "the
// first hot pool" of the manager's pool map. At a first start that map is the
// configured pools in couchestor.yaml's order; at every later start it is the
// index's pools in name order. With two hot pools listed "hot-z" then "hot-a",
// the first start made the journal on hot-z, the next on hot-a: empty, and
// refuseLostJournal did not refuse (a journal had been made, on another pool).
// The acknowledged, flushed writes still in hot-z's journal were dropped
// without a word: the cold volume read its older bytes. Now the journal stays
// on the pool the index records it was made on.
// Real daemon processes, nbdcopy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MANUAL_DESTAGE_CONFIG, MiB, assertSameBytes, coldStatus, dropCache, patternBytes, readExport, writeColdVolume } from './helpers/cold.js';
import { coldDaemonWithWork, poolsYaml, writeJournaled } from './helpers/missing-pool.js';

const HOT_Z_FIRST_CONFIG = MANUAL_DESTAGE_CONFIG + poolsYaml(['hot-z', 'hot'], ['hot-a', 'hot']);

test('two hot pools, the first listed sorting last: the journal stays on it across restarts and its writes read back', async (t) => {
  const fx = await coldDaemonWithWork(t, 'review-journal-pool-order-', HOT_Z_FIRST_CONFIG);
  const { work, dataDir } = fx;
  let d = fx.d;
  const model = Buffer.alloc(4 * MiB);
  patternBytes(2 * MiB, 0x5b1).copy(model);
  await writeColdVolume(d, 'c1', model, work); // destaged
  // 1 MiB of acknowledged, flushed writes left in the journal (no destage asked).
  writeJournaled(d, work, model, 1 * MiB, 0x5b2);
  assert.ok((await coldStatus(d)).journalBytes >= MiB, 'the writes wait in the journal');
  assert.equal(await d.stop(), 0);
  const hotZJournal = path.join(dataDir, 'pools', 'hot-z', 'journal');
  const hotAJournal = path.join(dataDir, 'pools', 'hot-a', 'journal');
  assert.ok(fs.existsSync(hotZJournal), 'the first start made the journal on hot-z, the first hot pool listed');

  for (let start = 1; start <= 2; start++) {
    d = await fx.restart();
    assert.ok((await coldStatus(d)).journalBytes >= MiB, `start ${start}: hot-z's journal replayed`);
    assert.equal(fs.existsSync(hotAJournal), false, `start ${start}: no second journal made on hot-a`);
    await dropCache(d);
    assertSameBytes(readExport(d, 'c1', path.join(work, `out${start}.bin`)), model, `c1 after restart ${start}`);
    assert.equal(await d.stop(), 0);
  }
});

test('the journal pool made a warm pool, a new hot pool added: the journal stays where its writes are and they read back', async (t) => {
  const fx = await coldDaemonWithWork(t, 'review-journal-pool-tier-');
  const { work, dataDir } = fx;
  let d = fx.d;
  const model = Buffer.alloc(4 * MiB);
  patternBytes(2 * MiB, 0x5b3).copy(model);
  await writeColdVolume(d, 'c1', model, work);
  writeJournaled(d, work, model, 1 * MiB, 0x5b4);
  assert.ok((await coldStatus(d)).journalBytes >= MiB, 'the writes wait in the journal');
  assert.equal(await d.stop(), 0);

  // hot-0 (the journal's pool) becomes a warm pool; a new hot pool hot-1 is added.
  const yamlPath = path.join(dataDir, 'couchestor.yaml');
  const yaml = fs.readFileSync(yamlPath, 'utf8');
  assert.doesNotMatch(yaml, /pools:/, 'the default pools (hot-0, cold-0..5)');
  fs.writeFileSync(yamlPath, yaml + poolsYaml(['hot-0', 'warm'], ['hot-1', 'hot']));
  d = await fx.restart();
  assert.ok((await coldStatus(d)).journalBytes >= MiB, "hot-0's journal replayed");
  assert.equal(fs.existsSync(path.join(dataDir, 'pools', 'hot-1', 'journal')), false, 'no second, empty journal on hot-1');
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 after hot-0 became warm');
  assert.equal(await d.stop(), 0);
  assert.match(d.stderr, /the cold tier's journal stays on pool hot-0, now a warm pool/);
});
