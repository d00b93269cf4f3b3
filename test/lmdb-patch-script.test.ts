// scripts/lmdb-patch.mjs (npm postinstall: patches lmdb-js's mdb.c, builds it from source)
// over the trees a developer has: a fresh install, a second `npm install`, and a tree patched
// and built with an earlier revision of patches/lmdb+3.5.6.patch. Before, a revised patch
// failed `npm install` on every installed tree ("a hunk ... does not match": the file held the
// old revision), and a binary built from an earlier revision counted as built (it holds the
// marker). The script runs on a copy in a temporary tree, with a one-hunk patch against a small
// mdb.c, and npm's own npm_config_node_gyp pointing at a stand-in for node-gyp that "builds"
// build/Release/lmdb.node as a copy of mdb.c (so it holds the marker iff mdb.c does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MARKER = 'Attempting to write page at position %llu, size %lld, blocks %d';
const MDB = 'dependencies/lmdb/libraries/liblmdb/mdb.c';

const PRISTINE = ['int a;', 'void f(void) {', '\tsprintf(e, "old %u", x);', '\tg();', '}', 'int z;', ''].join('\n');
const patch = (plus: string) =>
  ['one hunk', '', `--- a/${MDB}`, `+++ b/${MDB}`, '@@ -1,4 +1,4 @@', ' void f(void) {', '-\tsprintf(e, "old %u", x);', `+${plus}`, ' \tg();', ' }', ''].join('\n');
const V1 = `\tsnprintf(e, 100, "${MARKER}", x);`;
const V2 = `\tsnprintf(e, 100, "${MARKER} (v2)", x);`;
const patched = (line: string) => PRISTINE.replace('\tsprintf(e, "old %u", x);', line);

/** A tree with the script, `patchText` as patches/lmdb+3.5.6.patch and a pristine lmdb-js 3.5.6 of one file. */
function tree(t: { after(fn: () => void): void }, patchText: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lmdb-patch-script-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'scripts'));
  fs.copyFileSync(path.join(ROOT, 'scripts', 'lmdb-patch.mjs'), path.join(dir, 'scripts', 'lmdb-patch.mjs'));
  fs.mkdirSync(path.join(dir, 'patches'));
  fs.writeFileSync(path.join(dir, 'patches', 'lmdb+3.5.6.patch'), patchText);
  const lmdb = path.join(dir, 'node_modules', 'lmdb');
  fs.mkdirSync(path.dirname(path.join(lmdb, MDB)), { recursive: true });
  fs.writeFileSync(path.join(lmdb, 'package.json'), JSON.stringify({ name: 'lmdb', version: '3.5.6' }));
  fs.writeFileSync(path.join(lmdb, MDB), PRISTINE);
  // What the script asks lmdb-js would load: the real resolver.
  const resolver = path.dirname(createRequire(path.join(ROOT, 'node_modules', 'lmdb', 'package.json')).resolve('node-gyp-build-optional-packages/package.json'));
  fs.symlinkSync(resolver, path.join(dir, 'node_modules', 'node-gyp-build-optional-packages'));
  // node-gyp's stand-in: `rebuild` clears build/ and copies mdb.c to build/Release/lmdb.node; FAIL=1 fails first.
  fs.writeFileSync(
    path.join(dir, 'gyp.cjs'),
    [
      "const fs = require('fs');",
      "fs.appendFileSync(process.env.BUILDS_LOG, process.argv.slice(2).join(' ') + '\\n');",
      "if (process.env.FAIL === '1') { console.error('cc: not found'); process.exit(1); }",
      "fs.rmSync('build', { recursive: true, force: true });",
      "fs.mkdirSync('build/Release', { recursive: true });",
      `fs.copyFileSync(${JSON.stringify(MDB)}, 'build/Release/lmdb.node');`,
    ].join('\n'),
  );
  const builds = path.join(dir, 'builds.log');
  fs.writeFileSync(builds, '');
  const run = (env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [path.join(dir, 'scripts', 'lmdb-patch.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, npm_config_node_gyp: path.join(dir, 'gyp.cjs'), BUILDS_LOG: builds, PREBUILDS_ONLY: '', LMDB_PREBUILD: '', ...env },
    });
  return {
    run,
    setPatch: (text: string) => fs.writeFileSync(path.join(dir, 'patches', 'lmdb+3.5.6.patch'), text),
    mdb: () => fs.readFileSync(path.join(lmdb, MDB), 'utf8'),
    binary: () => fs.readFileSync(path.join(lmdb, 'build', 'Release', 'lmdb.node'), 'utf8'),
    builds: () => fs.readFileSync(builds, 'utf8').split('\n').filter(Boolean).length,
    /** Makes the tree one the script before pristine copies and build stamps left. */
    forgetState: () => {
      fs.rmSync(path.join(lmdb, `${MDB}.couchestor-orig`));
      fs.rmSync(path.join(lmdb, 'build', 'couchestor-patch'));
    },
  };
}

const ok = (r: ReturnType<typeof spawnSync>, what: RegExp) => {
  assert.equal(r.status, 0, `lmdb-patch failed:\n${String(r.stdout)}${String(r.stderr)}`);
  assert.match(String(r.stdout), what);
};

test('lmdb-patch: patches and builds once; a revised patch is applied over the earlier one and rebuilt; a failed build is retried', (t) => {
  const w = tree(t, patch(V1));
  ok(w.run(), /lmdb 3\.5\.6 patched \([^)]*\), built from source in \d+ s; lmdb loads node_modules\/lmdb\/build\/Release\/lmdb\.node/);
  assert.equal(w.mdb(), patched(V1));
  assert.equal(w.builds(), 1);
  // A second npm install: nothing to do.
  ok(w.run(), /patched already, built already/);
  assert.equal(w.builds(), 1);

  // The patch revised (a hunk's + line changed): npm install over the tree patched with the first.
  w.setPatch(patch(V2));
  ok(w.run(), /patched \([^)]*\), built from source/);
  assert.equal(w.mdb(), patched(V2), 'mdb.c is the pristine file with the revised patch');
  assert.equal(w.binary(), patched(V2));
  assert.equal(w.builds(), 2);

  // A revision whose build fails (no compiler) leaves the binary of the earlier one: the next run builds.
  w.setPatch(patch(V1));
  const failed = w.run({ FAIL: '1' });
  assert.equal(failed.status, 1);
  assert.match(failed.stderr, /building lmdb from source failed .* it needs python3, make, a C\/C\+\+ compiler and Node's headers/);
  assert.equal(w.mdb(), patched(V1));
  assert.equal(w.binary(), patched(V2), "the stand-in's failed build left the earlier binary");
  ok(w.run(), /patched already, built from source/);
  assert.equal(w.binary(), patched(V1));
  assert.equal(w.builds(), 4);
});

test('lmdb-patch: a tree patched and built before pristine copies and build stamps were kept is taken as built, and a later revision still applies', (t) => {
  const w = tree(t, patch(V1));
  ok(w.run(), /built from source/);
  w.forgetState();
  ok(w.run(), /patched already, built already/);
  assert.equal(w.builds(), 1);
  w.forgetState();
  w.setPatch(patch(V2));
  // The pristine file is made by undoing the hunks found in it: here the revised hunk is not, so it fails, naming the way out.
  const r = w.run();
  assert.equal(r.status, 1);
  assert.match(r.stderr, /does not match .*mdb\.c[\s\S]*reinstall lmdb-js: rm -rf node_modules\/lmdb && npm install/);
  // Undone with the patch it was made with, the tree takes the revision.
  w.setPatch(patch(V1));
  ok(w.run(), /patched already, built already/);
  w.setPatch(patch(V2));
  ok(w.run(), /patched \([^)]*\), built from source/);
  assert.equal(w.mdb(), patched(V2));
});
