// Pools must not share a directory: validateConfig refuses two configured pools on one path
// (or one inside another) and openManager refuses two that are one directory through a link.
// The index names shards and volume files by pool name, so a file seen under a second name
// looks unreferenced to compaction and to a RELEASE (review-compaction-renamed-pool).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, validateConfig, type DaemonConfig } from '../src/config.js';
import { openManager } from '../src/daemon.js';
import { InvalidArgument } from '../src/dataplane/errors.js';

function config(t: { after(fn: () => void): void }): DaemonConfig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-dirs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return loadConfig(dir);
}

test('the embedded default pools are distinct directories', (t) => {
  const cfg = config(t);
  assert.ok(cfg.pools.length >= 7);
  validateConfig(cfg);
});

test('two pools on one path, written two ways, are refused naming both', (t) => {
  const cfg = config(t);
  const hot = cfg.pools.find((p) => p.tier === 'hot')!;
  cfg.pools.push({ ...hot, name: 'hot-again', path: `./${hot.path}/` });
  assert.throws(() => validateConfig(cfg), (err: Error) => err instanceof InvalidArgument && /hot-0 .* and hot-again .* share a directory/.test(err.message));
});

test('a pool inside another pool is refused', (t) => {
  const cfg = config(t);
  const cold = cfg.pools.find((p) => p.tier === 'cold')!;
  cfg.pools.push({ ...cold, name: 'nested', path: path.join(cold.path, 'inner') });
  assert.throws(() => validateConfig(cfg), /share a directory/);
});

test('sibling directories with a common name prefix are distinct pools', (t) => {
  const cfg = config(t);
  const cold = cfg.pools.find((p) => p.tier === 'cold')!;
  cfg.pools.push({ ...cold, name: 'prefix', path: `${cold.path}-b` });
  validateConfig(cfg);
});

test('a pool that is another pool through a symlink is refused at start; nothing is registered', async (t) => {
  const cfg = config(t);
  const hot = cfg.pools.find((p) => p.tier === 'hot')!;
  const hotDir = path.resolve(cfg.dataDir, hot.path);
  fs.mkdirSync(hotDir, { recursive: true });
  const link = path.join(cfg.dataDir, 'hot-link');
  fs.symlinkSync(hotDir, link);
  cfg.pools.push({ ...hot, name: 'hot-link', path: link });
  validateConfig(cfg); // the paths as written differ
  await assert.rejects(openManager(cfg), (err: Error) => err instanceof InvalidArgument && /hot-0 and hot-link are the same directory/.test(err.message));
  // Refused before the index opened: a start without the alias still works.
  cfg.pools.pop();
  const m = await openManager(cfg, { coldTier: false });
  try {
    assert.deepEqual([...m.pools.keys()].sort(), cfg.pools.map((p) => p.name).sort());
  } finally {
    await m.close();
  }
});
