// npm postinstall: patch lmdb-js (patches/lmdb+<version>.patch, a heap overflow
// in mdb.c's error messages: docs/upstream.md) and build it from source, so the
// daemon loads node_modules/lmdb/build/Release/lmdb.node (node-gyp-build picks
// build/Release before the prebuilt @lmdb/lmdb-<platform> binary), never the
// unpatched prebuilt one.
//
// Fails the install, loudly, when the installed lmdb is not the version the
// patch is for (port or drop the patch first), when a hunk does not match,
// or when the built binary is not the one lmdb would load. Idempotent: on
// an `npm install` over a patched, built tree it checks and does nothing.
// A few hunks as exact text, so no patch(1) or git is needed at install.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const VERSION = '3.5.6';
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const patchFile = path.join(root, 'patches', `lmdb+${VERSION}.patch`);
const lmdbDir = path.join(root, 'node_modules', 'lmdb');
const binary = path.join(lmdbDir, 'build', 'Release', 'lmdb.node');
/** A format string only the patched mdb.c has: in the built binary iff it is patched. */
const MARKER = 'Attempting to write page at position %llu, size %lld, blocks %d';

const fail = (msg) => {
  console.error(`lmdb-patch: ${msg}`);
  process.exit(1);
};

const installed = JSON.parse(fs.readFileSync(path.join(lmdbDir, 'package.json'), 'utf8')).version;
if (installed !== VERSION) {
  fail(
    `node_modules/lmdb is ${installed}, but ${path.relative(root, patchFile)} is for ${VERSION}: ` +
      'check whether upstream fixed the overflow (docs/upstream.md), then port or drop the patch and set VERSION in scripts/lmdb-patch.mjs',
  );
}

// Each hunk's old text (context and - lines) must occur exactly once, or its new text
// (context and + lines) exactly once: patched already.
let changed = 0;
for (const filePatch of fs.readFileSync(patchFile, 'utf8').split(/^--- a\//m).slice(1)) {
  const file = path.join(lmdbDir, filePatch.slice(0, filePatch.indexOf('\n')));
  const original = fs.readFileSync(file, 'utf8');
  let text = original;
  for (const hunk of filePatch.split(/^@@.*\n/m).slice(1)) {
    const lines = hunk.replace(/\n$/, '').split('\n');
    const side = (keep) => lines.filter((l) => l[0] === ' ' || l[0] === keep).map((l) => l.slice(1)).join('\n');
    const [before, after] = [side('-'), side('+')];
    const count = (s) => text.split(s).length - 1;
    if (count(before) === 1) {
      text = text.replace(before, () => after);
      changed++;
    } else if (count(after) !== 1) {
      fail(`a hunk of ${path.relative(root, patchFile)} does not match ${path.relative(root, file)}:\n${hunk}`);
    }
  }
  if (text !== original) fs.writeFileSync(file, text);
}

const builtPatched = () => fs.existsSync(binary) && fs.readFileSync(binary).includes(MARKER);
const started = Date.now();
const build = changed > 0 || !builtPatched();
if (build) {
  // npm names its bundled node-gyp in npm_config_node_gyp for lifecycle scripts; run by hand, npm's own.
  const npmGyp = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const gyp = process.env.npm_config_node_gyp ?? (fs.existsSync(npmGyp) ? npmGyp : undefined);
  const [cmd, args] = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
  const jobs = String(os.availableParallelism());
  // Its output (compiler warnings of lmdb-js's C++) only when it fails.
  const r = spawnSync(cmd, [...args, 'rebuild', `--jobs=${jobs}`], { cwd: lmdbDir, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    fail(`building lmdb from source failed (node-gyp rebuild in node_modules/lmdb: ${r.error ?? `exit ${r.status}`})`);
  }
}
if (!builtPatched()) fail(`${path.relative(root, binary)} was not built from the patched source`);
// What lmdb itself will load (its native.js: node-gyp-build-optional-packages on its own directory).
const loads = createRequire(path.join(lmdbDir, 'package.json'))('node-gyp-build-optional-packages').path(lmdbDir);
if (path.resolve(loads) !== binary) fail(`lmdb would load ${loads}, not the patched ${path.relative(root, binary)}`);
console.log(
  `lmdb-patch: lmdb ${VERSION} ${changed ? `patched (${changed} hunks)` : 'patched already'}, ` +
    `${build ? `built from source in ${((Date.now() - started) / 1000).toFixed(0)} s` : 'built already'}; lmdb loads ${path.relative(root, binary)}`,
);
