// `couchestor destage` (POST /v1/destage) while too few cold pools are online
// for a stripe answers 503 DestageStalled naming the cause, and the command
// prints it; once the pool is back the same command destages. Before, the
// API answered 500 with error "Error" (the destager threw a plain Error).
// A move to cold then is refused 503 TooFewOnlinePools (it was 507
// NoSuitablePool, "no space"), and once the pool is back it moves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { MiB, coldPoolDir, coldStatus, createVolume } from './helpers/cold.js';
import { coldDaemonWithWork } from './helpers/missing-pool.js';

test('destage with 5 of 6 cold pools online: 503 DestageStalled with the cause, printed by the CLI; destages once the pool is back', async (t) => {
  const { d, work } = await coldDaemonWithWork(t, 'destage-few-pools-');
  await createVolume(d, 'c1', 8 * MiB, 'cold');
  await createVolume(d, 'h1', 4 * MiB, 'hot');
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, Buffer.alloc(MiB, 0x5a));
  run('nbdcopy', [src, d.exportUri('c1')]);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'the write waits in the journal');

  const cold2 = coldPoolDir(d, 2);
  fs.renameSync(cold2, `${cold2}.away`);
  const want = 'destage made no progress: need 6 online cold pools for a stripe, have 5';
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/destage`, { method: 'POST' });
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { error: 'DestageStalled', message: want });
  const cli = d.cli('destage');
  assert.equal(cli.status, 1);
  assert.equal(cli.stderr, `couchestor: ${want}\n`);
  assert.ok((await coldStatus(d)).journalBytes > 0, 'the records stay in the journal');
  // A move to cold fails for the same reason and says so: 503 TooFewOnlinePools (a
  // NoSuitablePool whose cause is availability), not 507 "no space".
  const migrate = d.cli('volumes', 'migrate', 'h1', 'cold');
  assert.equal(migrate.status, 1);
  assert.equal(migrate.stderr, 'couchestor: cannot migrate h1 to cold: needs 6 online cold pools, 5 online\n');
  const moved = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes/h1/migrate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tier: 'cold' }),
  });
  assert.equal(moved.status, 503);
  assert.deepEqual(await moved.json(), { error: 'TooFewOnlinePools', message: 'cannot migrate h1 to cold: needs 6 online cold pools, 5 online' });

  fs.renameSync(`${cold2}.away`, cold2);
  const again = d.cli('destage');
  assert.equal(again.status, 0, again.stderr);
  assert.equal((JSON.parse(again.stdout) as { journalBytes: number }).journalBytes, 0);
  const movedBack = d.cli('volumes', 'migrate', 'h1', 'cold');
  assert.equal(movedBack.status, 0, movedBack.stderr);
});
