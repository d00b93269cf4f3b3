// An existing couchestor.yaml with no settings in it (empty, whitespace,
// only comments, `null`) is refused with one line, by serve and by the
// offline commands alike: taken for "all defaults", its embedded pools
// (hot-0, cold-0..5 in the data directory) silently stood in for the
// operator's (the kubelet's empty file where a ConfigMap was mounted, an
// editor that truncated it). No file at all is still a first start: the
// default is written and loaded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { CLI } from './helpers/daemon.js';

const EMPTY_LIKE = ['', '\n', '   \n\t\n', '# couchestor.yaml\n# (settings to come)\n', 'null\n', '~\n', '---\n'];

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-empty-cfg-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('loadConfig refuses an existing couchestor.yaml that holds no settings, naming the file', (t) => {
  for (const text of EMPTY_LIKE) {
    const dir = tempDir(t);
    const file = path.join(dir, 'couchestor.yaml');
    fs.writeFileSync(file, text);
    assert.throws(() => loadConfig(dir), (err: Error) => {
      assert.equal(err.message, `${file}: holds no settings (empty, or only comments or null): not taken for the embedded default, whose pools (hot-0, cold-0..5 in the data directory) would stand in for the configured ones; restore it (or delete it: serve then writes the default)`, JSON.stringify(text));
      return true;
    });
    assert.equal(fs.readFileSync(file, 'utf8'), text, 'the file is left as it was');
  }
});

test('a first start (no couchestor.yaml) still writes and loads the embedded default; a file with one setting loads with defaults for the rest', (t) => {
  const dir = tempDir(t);
  const cfg = loadConfig(dir);
  assert.deepEqual(cfg.pools.map((p) => p.name), ['hot-0', 'cold-0', 'cold-1', 'cold-2', 'cold-3', 'cold-4', 'cold-5']);
  assert.match(fs.readFileSync(path.join(dir, 'couchestor.yaml'), 'utf8'), /^# CoucheStor daemon configuration \(embedded default\)\.\n[^]*\npools:\n/);
  const one = tempDir(t);
  fs.writeFileSync(path.join(one, 'couchestor.yaml'), '# only the demo volume off\ndemoVolume: null\n');
  assert.equal(loadConfig(one).demoVolume, null);
});

test('serve and an offline command on a data directory whose couchestor.yaml is empty: exit 1, one line, no pool made', (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'couchestor.yaml'), '');
  for (const args of [['serve', '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], ['pools', 'list']]) {
    const r = spawnSync(process.execPath, [CLI, ...args, '--data-dir', dir], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^couchestor: .*couchestor\.yaml: holds no settings /);
  }
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n !== 'couchestor.lock').sort(), ['couchestor.yaml'], 'no index, no pool directory, no default policy written');
});
