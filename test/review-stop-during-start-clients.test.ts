// Review of the stop during the start (c086e2f): the NBD listeners open
// before the start is over (steps 'the read cache', 'the HTTP listeners',
// 'ready'), so a client may write, flush and be acknowledged there. A stop
// at those steps undoes the start in reverse order (the read cache closed
// before the NBD server, the manager last): every acknowledged byte must
// read back after the next start, for a hot and a cold volume.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { spawnServe, TestDaemon } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG } from './helpers/cold.js';
import { nbdcopyIn, nbdcopyOut } from './helpers/control-loop.js';
import { expectedAfterBlocks, startBlockWriter } from './helpers/nbd-writer.js';

const MiB = 1024 * 1024;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

for (const step of ['the read cache', 'the HTTP listeners', 'ready']) {
  test(`SIGTERM held at '${step}' after an NBD client wrote and flushed to a hot and a cold volume: exit 143, both read back after the next start`, { timeout: 120_000 }, async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rsig-'));
    dirs.push(dataDir);
    fs.mkdirSync(path.join(dataDir, 'policies'));
    fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
    const first = await TestDaemon.start({ dataDir, config: MANUAL_DESTAGE_CONFIG });
    const before = crypto.randomBytes(8 * MiB);
    const src = path.join(dataDir, 'src.bin');
    try {
      first.createVolume('c1', '16M', '--tier', 'cold');
      first.createVolume('h1', '16M');
      fs.writeFileSync(src, before);
      nbdcopyIn(src, first.exportUri('c1'));
      nbdcopyIn(src, first.exportUri('h1'));
      assert.equal(await first.stop(), 0);
    } finally {
      await first.kill(); // not cleanup(): it removes the data directory
    }
    const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_PAUSE_START: `step:${step}` } });
    await s.line(new RegExp(`^couchestor paused start-step ${step} `));
    const sock = path.join(dataDir, 'nbd.sock');
    const uri = (n: string) => `nbd+unix:///${n}?socket=${sock}`;
    const written = crypto.randomBytes(16 * MiB);
    fs.writeFileSync(src, written);
    nbdcopyIn(src, uri('c1')); // flushed at the end: acknowledged
    nbdcopyIn(src, uri('h1'));
    process.kill(s.proc.pid!, 'SIGTERM');
    const out = await s.exited;
    assert.equal(out.code, 143, out.stderr);
    const d = await TestDaemon.start({ dataDir });
    try {
      for (const v of ['c1', 'h1']) {
        const back = nbdcopyOut(d.exportUri(v), path.join(dataDir, 'back.bin'), written.length);
        assert.ok(back.equals(written), `${v}: every acknowledged write reads back`);
      }
      assert.equal(await d.stop(), 0);
    } finally {
      await d.cleanup().catch(() => undefined);
    }
  });
}

// A client still writing when the stop comes (held at 'ready', the NBD server
// open): every block whose flush was acknowledged must read back.
test(`SIGTERM held at 'ready' while an NBD client writes and flushes block after block: exit 143, every acknowledged block reads back`, { timeout: 120_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rsig-'));
  dirs.push(dataDir);
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  const first = await TestDaemon.start({ dataDir, config: MANUAL_DESTAGE_CONFIG });
  try {
    first.createVolume('c1', '64M', '--tier', 'cold');
    first.createVolume('h1', '64M');
    assert.equal(await first.stop(), 0);
  } finally {
    await first.kill();
  }
  const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_PAUSE_START: 'step:ready' } });
  await s.line(/^couchestor paused start-step ready /);
  const sock = path.join(dataDir, 'nbd.sock');
  const writers = { c1: startBlockWriter(`nbd+unix:///c1?socket=${sock}`), h1: startBlockWriter(`nbd+unix:///h1?socket=${sock}`) };
  const deadline = Date.now() + 30_000;
  while ((writers.c1.acked < 8 || writers.h1.acked < 8) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(writers.c1.acked >= 8 && writers.h1.acked >= 8, `writers got going: ${writers.c1.acked}, ${writers.h1.acked}`);
  process.kill(s.proc.pid!, 'SIGTERM');
  const out = await Promise.race([s.exited, new Promise<'deadline'>((r) => setTimeout(() => r('deadline'), 15_000).unref())]);
  if (out === 'deadline') {
    s.proc.kill('SIGKILL');
    assert.fail(`no exit 15 s after SIGTERM with writers connected:\n${s.stderr()}`);
  }
  assert.equal(out.code, 143, out.stderr);
  await Promise.all([writers.c1.ended, writers.h1.ended]);
  const d = await TestDaemon.start({ dataDir });
  try {
    for (const v of ['c1', 'h1'] as const) {
      const back = nbdcopyOut(d.exportUri(v), path.join(dataDir, 'back.bin'), 64 * MiB);
      const want = expectedAfterBlocks(Buffer.alloc(64 * MiB), writers[v].acked, back);
      assert.ok(back.equals(want), `${v}: every acknowledged block (up to ${writers[v].acked}) reads back`);
    }
    assert.equal(await d.stop(), 0);
  } finally {
    await d.kill();
  }
});
