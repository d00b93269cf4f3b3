// A new pool's identity (POOL/.couchestor-pool) written onto a file system that is full: serve
// refuses to start saying which pool and file, and leaves nothing in the directory. Before, it
// exited with a bare "couchestor: ENOSPC: no space left on device, write" and left an empty
// .couchestor-pool.tmp-PID behind (for good: `pools replace` then refused the directory as not empty).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { poolsYaml, readyz, startOrError } from './helpers/missing-pool.js';
import { tinyFileSystem } from './helpers/journal.js';

test('a new pool on a full file system: the start is refused naming the pool and its identity file, nothing left there; with room, it starts', async (t) => {
  const tiny = await tinyFileSystem(t, 64 * 1024, 'pool-identity-full-');
  // The daemon is another process: only a real mount (root, as CI runs) is seen by it.
  assert.equal(tiny.kind, 'mount', `needs a tmpfs the daemon (another process) sees (run as root); got ${tiny.kind}`);
  const poolDir = path.join(tiny.dir, 'hot-9');
  fs.mkdirSync(poolDir);
  tiny.fill(path.join(poolDir, '.couchestor-pool'));
  const dataDir = fs.mkdtempSync(path.join(path.dirname(tiny.dir), 'pool-identity-full-data-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n' + poolsYaml(['hot-0', 'hot'], ['hot-9', 'hot', poolDir]));

  const refused = await startOrError(dataDir);
  if (refused instanceof TestDaemon) {
    await refused.kill();
    assert.fail('serve started with the pool identity not written');
  }
  assert.match(refused.message, new RegExp(`pool hot-9: its identity ${path.join(poolDir, '.couchestor-pool').replace(/[.]/g, '\\.')} cannot be written: ENOSPC`));
  assert.deepEqual(fs.readdirSync(poolDir), [], 'no temp file left in the pool directory');

  fs.rmSync(path.join(tiny.dir, 'filler'));
  const d = await TestDaemon.start({ dataDir });
  t.after(() => d.kill());
  assert.equal((await readyz(d)).status, 200);
  assert.equal((JSON.parse(fs.readFileSync(path.join(poolDir, '.couchestor-pool'), 'utf8')) as { pool: string }).pool, 'hot-9');
});
