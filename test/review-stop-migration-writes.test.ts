// Review of 55bb538 (a stop aborts the control loop's moves in flight): SIGTERM
// during a hot -> cold move of a volume a client keeps writing and flushing
// (block after block, test/helpers/nbd-writer.ts). The stop is prompt, the
// volume is back on its old tier after a restart, and it reads exactly its
// acknowledged bytes: the original data with every acknowledged block over it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { bigMoveToColdUnderWay, nbdcopyOut, policyYaml, volume, writePolicy } from './helpers/control-loop.js';
import { expectedAfterBlocks, startBlockWriter } from './helpers/nbd-writer.js';

const MiB = 1024 * 1024;
const BIG_BYTES = 128 * MiB;

test('SIGTERM mid-migration (hot -> cold) with a client writing and flushing: exit 0, the volume hot again and every acknowledged byte reads back', { timeout: 300_000 }, async (t) => {
  const spec = { maxConcurrentMigrations: 1 };
  const started = await bigMoveToColdUnderWay(t, BIG_BYTES, spec);
  let d = started.d;
  const src = started.src;
  t.after(() => d.cleanup()); // the daemon restarted below
  const base = fs.readFileSync(src);
  const deadline = Date.now() + 60_000;
  const w = startBlockWriter(d.exportUri('big'));
  t.after(() => w.kill());
  while (w.acked < 4) {
    assert.ok(Date.now() < deadline, `the writer got no block acknowledged (${w.acked})`);
    await new Promise((r) => setTimeout(r, 20));
  }
  writePolicy(d, 'tiering.yaml', policyYaml('tiering', { ...spec, enabled: false }));
  assert.equal(await d.stop(), 0, d.stderr);
  await w.ended;
  const acked = w.acked;
  process.stdout.write(`# blocks acknowledged: ${acked + 1}\n`);
  assert.match(d.stderr, /migration did not complete; old copy kept volume=big from=hot to=cold result=(aborted|succeeded) /);

  d = await TestDaemon.start({ dataDir: d.dataDir });
  const back = nbdcopyOut(d.exportUri('big'), src, BIG_BYTES);
  const want = expectedAfterBlocks(base, acked, back);
  for (let off = 0; off < BIG_BYTES; off += MiB) assert.ok(back.subarray(off, off + MiB).equals(want.subarray(off, off + MiB)), `block at ${off / MiB} MiB (acknowledged up to block ${acked})`);
  assert.equal((await volume(d, 'big')).tier, 'hot', 'the aborted move left the volume on its old tier');
  assert.equal(await d.stop(), 0);
});
