// Review of 6e1e2f7: a cold pool whose disk filled gets room back the way an
// operator expects, by deleting a volume and compacting, and its segment
// store then recovers without a restart. Before, compaction's removal of the
// deleted volume's segments was refused by the store failed by the full disk
// ("an earlier write failed (ENOSPC...)"): nothing was freed, so the store,
// waiting for room, stayed failed and every destage kept failing until a
// restart. Real daemon, nbdcopy; cold-0 on a 16 MiB tmpfs (root;
// helpers/small-pool, unmounted after the test in every outcome); 1 MiB
// segments so the deleted volume's records fill sealed segments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { MiB, api, assertSameBytes, createVolume, dropCache, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';
import { daemonWithWork, readyz } from './helpers/missing-pool.js';
import { smallDisk } from './helpers/small-pool.js';

function config(cold0: string): string {
  const pool = (name: string, tier: string, dir = `pools/${name}`) => `  - { name: ${name}, tier: ${tier}, path: ${dir}, capacity: auto }\n`;
  return (
    'demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: 1048576\n  compaction:\n    intervalMs: 0\npools:\n' +
    pool('hot-0', 'hot') +
    pool('cold-0', 'cold', cold0) +
    [1, 2, 3, 4, 5].map((i) => pool(`cold-${i}`, 'cold')).join('')
  );
}

async function postDestage(port: number): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/destage`, { method: 'POST' });
  return { status: res.status, text: await res.text() };
}

test('a full cold pool: deleting a volume and compacting frees room although the store is failed, and the next destage finishes without a restart', async (t) => {
  const disk = await smallDisk(t, 'rseg-cold-full-', 16 * MiB);
  const { d, work } = await daemonWithWork(t, 'rseg-cold-full-work-', () => startColdDaemon(config(disk.poolDir)));
  const src = path.join(work, 'src.bin');
  await createVolume(d, 'gone', 16 * MiB, 'cold');
  fs.writeFileSync(src, patternBytes(16 * MiB, 3));
  run('nbdcopy', [src, d.exportUri('gone')]);
  assert.equal((await postDestage(d.info.api.port)).status, 200); // ~4 MiB on cold-0, most in sealed segments
  const del = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes/gone`, { method: 'DELETE' });
  assert.equal(del.status, 204);

  const model = patternBytes(4 * MiB, 14);
  await createVolume(d, 'c2', model.length, 'cold');
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri('c2')]);
  disk.leaveFree(64 * 1024); // stays: only compaction can give cold-0 room
  const failed = await postDestage(d.info.api.port);
  assert.equal(failed.status, 503, failed.text);
  assert.match(failed.text, /ENOSPC/);
  const freeBefore = disk.freeBytes();

  const compacted = await api<{ segmentsCompacted: number }>(d, 'POST', '/v1/compact');
  assert.ok(disk.freeBytes() >= freeBefore + 2 * MiB, `compaction freed cold-0's dead segments: ${freeBefore} -> ${disk.freeBytes()} bytes free (${JSON.stringify(compacted)})`);
  const done = await postDestage(d.info.api.port);
  assert.equal(done.status, 200, `no restart needed: ${done.text}`);
  assert.deepEqual(await readyz(d), { status: 200, reasons: [] });
  await dropCache(d);
  assertSameBytes(readExport(d, 'c2', path.join(work, 'back.bin')), model, 'c2 read back from its stripes');
});
