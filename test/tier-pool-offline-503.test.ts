// A hot/warm placement with every pool of the tier offline (its directory
// missing: a disk not mounted) is refused 503 TooFewOnlinePools, like the
// cold tier's: it passes once the pool is back. It was 507 NoSuitablePool,
// which says "no space" (RFC 4918 Insufficient Storage). A pool of the tier
// online but full stays 507 NoSuitablePool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { TestDaemon, run } from './helpers/daemon.js';
import { api, warmConfig } from './helpers/hot-warm.js';
import { warmPoolGoneAtStart } from './helpers/missing-pool.js';

const MiB = 1024 * 1024;

test('warm pool offline: volumes create --tier warm and a move to warm answer 503 TooFewOnlinePools naming the pool; both pass once it is back', async (t) => {
  const { d, remount } = await warmPoolGoneAtStart(t);
  const why = 'no online pool with tier=warm (warm-0 offline)';

  const created = await api(d, 'POST', '/v1/volumes', { name: 'w', sizeBytes: 4 * MiB, tier: 'warm' });
  assert.equal(created.status, 503);
  assert.deepEqual(created.body, { error: 'TooFewOnlinePools', message: why });
  const cli = d.cli('volumes', 'create', 'w', '4M', '--tier', 'warm');
  assert.equal(cli.status, 1);
  assert.equal(cli.stderr, `couchestor: ${why}\n`);

  const moved = await api(d, 'POST', '/v1/volumes/good/migrate', { tier: 'warm' });
  assert.equal(moved.status, 503);
  assert.deepEqual(moved.body, { error: 'TooFewOnlinePools', message: `cannot migrate good to warm: ${why}` });

  remount();
  assert.equal((await api(d, 'POST', '/v1/volumes', { name: 'w', sizeBytes: 4 * MiB, tier: 'warm' })).status, 201);
  const again = await api<{ phase: string; toPool: string }>(d, 'POST', '/v1/volumes/good/migrate', { tier: 'warm' });
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.phase, 'Done');
  assert.equal(again.body.toPool, 'warm-0');
});

test('warm pool online but full: volumes create --tier warm and a move to warm stay 507 NoSuitablePool', async (t) => {
  const config = YAML.parse(warmConfig()) as { pools: { name: string; capacity: number | 'auto' }[] };
  config.pools.find((p) => p.name === 'warm-0')!.capacity = 4096;
  const d = await TestDaemon.start({ dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-warm-full-')), config: YAML.stringify(config) });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'warm-full-'));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  d.createVolume('good', '4M');
  fs.writeFileSync(path.join(work, 'src.bin'), Buffer.alloc(MiB, 0x5a));
  run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('good')]);

  const created = await api<{ error: string; message: string }>(d, 'POST', '/v1/volumes', { name: 'w', sizeBytes: 4 * MiB, tier: 'warm' });
  assert.equal(created.status, 507);
  assert.equal(created.body.error, 'NoSuitablePool');
  assert.match(created.body.message, /^no pool with tier=warm has room/);
  const moved = await api<{ error: string; message: string }>(d, 'POST', '/v1/volumes/good/migrate', { tier: 'warm' });
  assert.equal(moved.status, 507);
  assert.equal(moved.body.error, 'NoSuitablePool');
  assert.match(moved.body.message, /^cannot migrate good to warm: no pool with tier=warm has room/);
});
