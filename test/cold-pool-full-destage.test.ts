// A cold pool's disk fills up under a destage: the segment store's write gets
// ENOSPC and the store refuses writes after it (latched). Before, that was
// silent: /readyz answered ok and couchestor_pool_online stayed 1 while every
// destage failed and cold writes piled up in the journal; and the latch held
// until a restart, even once the disk had room again. Now: /readyz answers
// 503 naming the pool and the ENOSPC, couchestor_pool_write_failed{pool} is 1,
// and once space is freed the next destage reopens the store in place (the
// partial head sealed, a new one started, as a restart does) and finishes,
// with no restart: the data reads back from the stripes and fsck is clean.
// Real daemon, nbdcopy, offline fsck; cold-0 on a 16 MiB tmpfs (root;
// helpers/small-pool, unmounted after the test in every outcome).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, createVolume, dropCache, fsck, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';
import { daemonWithWork, readyz } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';
import { metric, scrape } from './helpers/control-loop.js';

const VOLUME_BYTES = 8 * MiB;

function config(cold0: string): string {
  const pool = (name: string, tier: string, dir = `pools/${name}`) => `  - { name: ${name}, tier: ${tier}, path: ${dir}, capacity: auto }\n`;
  return 'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\npools:\n' + pool('hot-0', 'hot') + pool('cold-0', 'cold', cold0) + [1, 2, 3, 4, 5].map((i) => pool(`cold-${i}`, 'cold')).join('');
}

async function postDestage(port: number): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/destage`, { method: 'POST' });
  return { status: res.status, text: await res.text() };
}

test('a cold pool full under a destage: /readyz 503 and couchestor_pool_write_failed name it; once freed, the next destage finishes without a restart, data reads back, fsck clean', async (t) => {
  const disk = await smallDisk(t, 'cold-pool-full-', 16 * MiB);
  const { d, work } = await daemonWithWork(t, 'cold-pool-full-work-', () => startColdDaemon(config(disk.poolDir)));
  await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
  const model = patternBytes(VOLUME_BYTES, 14);
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri('c1')]); // acknowledged: in the journal (on hot-0)

  // cold-0's share of a stripe (a 4+2 shard of each MiB) does not fit: the segment store's writev gets ENOSPC.
  disk.leaveFree(64 * 1024);
  const failed = await postDestage(d.info.api.port);
  assert.equal(failed.status, 503, failed.text);
  assert.match(failed.text, /ENOSPC/);

  const notReady = await readyz(d);
  assert.equal(notReady.status, 503, JSON.stringify(notReady));
  const reason = notReady.reasons.find((r) => r.startsWith('pool cold-0 takes no writes'));
  assert.ok(reason !== undefined, `readyz names cold-0: ${JSON.stringify(notReady.reasons)}`);
  assert.match(reason, /ENOSPC.*retried at the next write once the disk has room/);
  const latched = await scrape(d);
  assert.equal(metric(latched, 'couchestor_pool_write_failed', { pool: 'cold-0', tier: 'cold' }), 1);
  assert.equal(metric(latched, 'couchestor_pool_write_failed', { pool: 'cold-1', tier: 'cold' }), 0);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'the writes wait in the journal');

  disk.freeFiller();
  const done = await postDestage(d.info.api.port);
  assert.equal(done.status, 200, `no restart needed once the disk has room: ${done.text}`);
  assert.equal((JSON.parse(done.text) as { journalBytes: number }).journalBytes, 0);
  assert.deepEqual(await readyz(d), { status: 200, reasons: [] });
  assert.equal(metric(await scrape(d), 'couchestor_pool_write_failed', { pool: 'cold-0', tier: 'cold' }), 0);
  const stripes = (await coldStatus(d)).stripes;
  assert.equal(stripes.Healthy, VOLUME_BYTES / MiB, JSON.stringify(stripes));
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'back.bin')), model, 'c1 read back from its stripes');

  assert.equal(await d.stop(), 0);
  const { report, stdout } = fsck(d);
  assert.deepEqual(report.stripes, { Healthy: VOLUME_BYTES / MiB, Degraded: 0, Failed: 0 }, stdout);
  assert.equal(report.halfWrittenStripes, 0, stdout);
  assert.equal(report.corruptRecords, 0, stdout);
  assert.deepEqual(report.badShards, [], stdout);
});
