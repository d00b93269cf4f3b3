// Review of 80f2e53 (a known pool missing at start stays offline): when its
// directory comes back while the daemon runs (README: "mounted or made, the
// running daemon uses it again, no restart needed"), the daemon must treat it
// as it treats a pool present at start. Two things start-up does for a pool
// were skipped for one that returns: its lock (POOL/couchestor.lock, which keeps
// a second data directory naming the same pool out) and, for a hot pool, the
// S3 objects/ fan-out directories (prepareHotPool), without which every PUT
// placed on it answered 503.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, TestDaemon } from './helpers/daemon.js';
import { aws, startS3 } from './helpers/s3-env.js';
import { DataDirLock } from '../src/data-dir-lock.js';

const GiB = 1024 ** 3;
// hot-1 the larger: placement (most free bytes) puts new hot objects there.
const CONFIG =
  'demoVolume: null\npools:\n' +
  `  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: ${GiB} }\n` +
  `  - { name: hot-1, tier: hot, path: pools/hot-1, capacity: ${4 * GiB} }\n` +
  [0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');

async function readyStatus(d: TestDaemon): Promise<number> {
  return (await fetch(`http://127.0.0.1:${d.info.api.port}/readyz`)).status;
}

test('a hot pool missing at start and made again (replaced disk) while the daemon runs takes S3 PUTs and is locked', async (t) => {
  let env = await startS3({ config: CONFIG });
  const dataDir = env.daemon.dataDir;
  t.after(() => env.cleanup());
  const hot1 = path.join(dataDir, 'pools', 'hot-1');
  const body = crypto.randomBytes(3 * 1024 * 1024);
  const src = path.join(env.home, 'obj.bin');
  fs.writeFileSync(src, body);
  assert.equal(aws(env, ['s3api', 'create-bucket', '--bucket', 'bkt']).status, 0);
  assert.equal(await env.daemon.stop(), 0);
  // hot-1's disk died: the next start finds its directory missing (offline, not made).
  fs.renameSync(hot1, `${hot1}.dead`);
  env.sdk.destroy();
  fs.rmSync(env.home, { recursive: true, force: true });
  env = await startS3({ dataDir });
  fs.writeFileSync(path.join(env.home, 'obj.bin'), body);
  assert.equal(fs.existsSync(hot1), false);
  assert.equal(await readyStatus(env.daemon), 503);

  // The operator makes its directory on the new disk and runs `pools replace` (README), the
  // daemon running; another data directory holds it first: it stays offline here, said once.
  fs.mkdirSync(hot1);
  assert.equal(await readyStatus(env.daemon), 503, 'an empty directory without the pool identity is not the pool');
  const replaced = spawnSync(process.execPath, [CLI, 'pools', 'replace', 'hot-1', '--data-dir', dataDir], { encoding: 'utf8' });
  assert.equal(replaced.status, 0, `pools replace hot-1: ${replaced.stderr}`);
  const otherHolder = fs.mkdtempSync(path.join(path.dirname(dataDir), 'review-pool-back-holder-'));
  t.after(() => fs.rmSync(otherHolder, { recursive: true, force: true }));
  const holder = DataDirLock.acquire(otherHolder, 'test');
  try {
    holder.lockPools([hot1], 'test');
    assert.equal(await readyStatus(env.daemon), 503, 'a returned pool another process holds stays offline');
    assert.match(env.daemon.stderr, /pool directory back, but the pool stays offline.*pool=hot-1/);
  } finally {
    holder.release();
  }
  assert.equal(await readyStatus(env.daemon), 200);
  assert.ok(DataDirLock.isHeld(hot1), 'the returned pool is locked by the daemon, as one present at start');
  // A second data directory naming the same pool is refused, as it would be for a pool present at start.
  const other = fs.mkdtempSync(path.join(path.dirname(dataDir), 'review-pool-back-other-'));
  t.after(() => fs.rmSync(other, { recursive: true, force: true }));
  fs.writeFileSync(path.join(other, 'couchestor.yaml'), `demoVolume: null\npools:\n  - { name: hot-x, tier: hot, path: ${hot1}, capacity: ${GiB} }\n`);
  const second = spawnSync(process.execPath, [CLI, 'pools', 'list', '--data-dir', other], { encoding: 'utf8' });
  assert.notEqual(second.status, 0, `another data directory opened the returned pool:\n${second.stdout}`);
  assert.match(second.stderr, /hot-1/);
  assert.match(second.stderr, /the couchestor daemon \(pid /);

  // New hot objects land on hot-1 (the most free bytes) and are stored, not refused.
  for (let i = 0; i < 3; i++) {
    const put = aws(env, ['s3api', 'put-object', '--bucket', 'bkt', '--key', `k${i}`, '--body', path.join(env.home, 'obj.bin')]);
    assert.equal(put.status, 0, `PUT k${i} onto the returned hot pool: ${put.stderr}`);
    const out = path.join(env.home, `k${i}.out`);
    const get = aws(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', `k${i}`, out]);
    assert.equal(get.status, 0, get.stderr);
    assert.ok(fs.readFileSync(out).equals(body), `k${i} reads back byte-exact`);
  }
  assert.ok(fs.readdirSync(path.join(hot1, 'objects')).length > 0, 'the objects went to hot-1');
});
