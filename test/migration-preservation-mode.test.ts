// Preservation mode (`serve --preserve`): after a hot -> cold migration the
// old copy stays in the volume's file on the hot pool; without it, RELEASE
// truncates that file to zero bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestDaemon } from './helpers/daemon.js';
import { coldStatus, decisionFor, nbdcopyIn, nbdcopyOut, policyNamed, policyYaml, randomFile, reconcile, sleep, startControlDaemon, volume, waitForLog, WINDOW_SETTLE_MS, createVolume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const DATA_BYTES = 8 * MiB;

async function volumeFile(d: TestDaemon, name: string): Promise<string> {
  const rec = await volume(d, name);
  return path.join(d.dataDir, 'pools', 'hot-0', 'volumes', `${rec.id}.dat`);
}

test('--preserve keeps the hot copy after hot -> cold; without it the file is released', async (t) => {
  // Both daemons run side by side so their heat windows overlap.
  const kept = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') }, args: ['--preserve'] });
  const released = await startControlDaemon({ policies: { 'tiering.yaml': policyYaml('tiering') } });
  t.after(async () => {
    await kept.cleanup();
    await released.cleanup();
  });
  const source = path.join(kept.dataDir, 'src.bin');
  randomFile(source, DATA_BYTES);
  const expected = fs.readFileSync(source);
  for (const d of [kept, released]) {
    await createVolume(d, 'v', 16 * MiB);
    nbdcopyIn(source, d.exportUri('v'));
    assert.ok(fs.readFileSync(await volumeFile(d, 'v')).subarray(0, DATA_BYTES).equals(expected), 'bytes are in the hot file before');
  }
  await sleep(WINDOW_SETTLE_MS);
  for (const d of [kept, released]) {
    const p = policyNamed(await reconcile(d, true), 'tiering');
    assert.equal(decisionFor(p, 'v').action, 'migrate');
    assert.equal(p.migrationHistory[0]?.result, 'succeeded');
    assert.equal((await volume(d, 'v')).tier, 'cold');
    assert.equal((await coldStatus(d)).stripes.Healthy, DATA_BYTES / MiB);
  }
  await waitForLog(kept, /migration started .*volume=v .*preservationMode=true/);
  await waitForLog(released, /migration started .*volume=v .*preservationMode=false/);

  const keptFile = fs.readFileSync(await volumeFile(kept, 'v'));
  assert.ok(keptFile.length >= DATA_BYTES, `preserved file is ${keptFile.length} bytes`);
  assert.ok(keptFile.subarray(0, DATA_BYTES).equals(expected), 'preservation mode: the old copy still holds the bytes');
  assert.equal(fs.statSync(await volumeFile(released, 'v')).size, 0, 'without --preserve the old copy is released');

  // Either way the volume reads its data from the cold tier.
  for (const d of [kept, released]) {
    assert.ok(nbdcopyOut(d.exportUri('v'), path.join(d.dataDir, 'back.bin'), DATA_BYTES).equals(expected));
  }
});
