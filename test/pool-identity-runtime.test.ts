// A pool's disk that fails or is unmounted while the daemon runs leaves an empty mount point. The
// running daemon must treat it as it does at a start (pool-identity): offline, nothing written there,
// until the disk is mounted again or `couchestor pools replace` gives a new disk the pool's identity.
// Before, a directory the daemon had verified that became another directory at runtime was taken as
// the pool's replacement (its identity written): new warm volumes and hot S3 objects were stored on
// the root filesystem under the mount point and vanished, acknowledged, when the disk came back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { MiB, assertSameBytes, patternBytes, readExport } from './helpers/cold.js';
import { mountPool, poolOnlineGauge, readyz, s3ObjectOnHot1, unmountPool } from './helpers/missing-pool.js';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { aws, awsFail } from './helpers/s3-env.js';

test('a warm pool unmounted while the daemon runs: offline, no volume made on the empty mount point; mounted again, its volume reads back', async (t) => {
  const d = await startWarmDaemon();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-identity-runtime-'));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  d.createVolume('v', '4M', '--tier', 'warm');
  const model = patternBytes(4 * MiB, 0x2e1);
  fs.writeFileSync(path.join(work, 'src.bin'), model);
  run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('v')]);
  assert.equal((await readyz(d)).status, 200);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');

  unmountPool(warm0);
  const ready = await readyz(d);
  assert.equal(ready.status, 503, 'the empty mount point is not the pool, at runtime as at a start');
  assert.ok(ready.reasons.some((r) => r.includes(`pool warm-0 offline (${warm0}): no pool identity in ${warm0}`)), ready.reasons.join('\n'));
  assert.equal(await poolOnlineGauge(d, 'warm-0'), 0);
  const created = d.cli('volumes', 'create', 'w', '4M', '--tier', 'warm');
  assert.notEqual(created.status, 0, `a warm volume was made on the empty mount point:\n${created.stdout}`);
  assert.deepEqual(fs.readdirSync(warm0), [], 'nothing written into the empty mount point');

  mountPool(warm0); // throws if anything was written into the mount point
  assert.equal((await readyz(d)).status, 200);
  assert.equal(await poolOnlineGauge(d, 'warm-0'), 1);
  assertSameBytes(readExport(d, 'v', path.join(work, 'out.bin')), model, 'v once warm-0 is mounted again');
});

test('a hot pool unmounted while the daemon runs: S3 PUTs are refused (503), none stored on the empty mount point; mounted again, the objects read back', async (t) => {
  const body = crypto.randomBytes(1024 * 1024);
  const { env, hot1, src } = await s3ObjectOnHot1(t, 'before', body);

  unmountPool(hot1);
  assert.equal((await readyz(env.daemon)).status, 503);
  // hot-1 (most free bytes) is not taken: hot-0 may store the PUT, never the mount point.
  const puts = [0, 1, 2].map((i) => aws(env, ['s3api', 'put-object', '--bucket', 'bkt', '--key', `during${i}`, '--body', src]));
  assert.deepEqual(fs.readdirSync(hot1), [], 'nothing written into the empty mount point');
  const get = awsFail(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', 'before', path.join(env.home, 'x.bin')]);
  assert.equal(get.httpStatus, 503, `the object on the unmounted pool: ${get.message}`);

  mountPool(hot1);
  assert.equal((await readyz(env.daemon)).status, 200);
  for (const key of ['before', ...puts.flatMap((p, i) => (p.status === 0 ? [`during${i}`] : []))]) {
    const out = path.join(env.home, `${key}.out`);
    const r = aws(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', key, out]);
    assert.equal(r.status, 0, `GET ${key}: ${r.stderr}`);
    assert.ok(fs.readFileSync(out).equals(body), `${key} reads back its bytes`);
  }
});
