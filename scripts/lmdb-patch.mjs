// npm postinstall: patch lmdb-js (patches/lmdb+<version>.patch, a heap overflow
// in mdb.c's error messages: docs/upstream.md) and build it from source, so the
// daemon loads node_modules/lmdb/build/Release/lmdb.node (node-gyp-build picks
// build/Release before the prebuilt @lmdb/lmdb-<platform> binary), never the
// unpatched prebuilt one.
//
// Fails the install, loudly, when the installed lmdb is not the version the
// patch is for (port or drop the patch first), when a hunk does not match,
// or when the built binary is not the one lmdb would load. Idempotent: on
// an `npm install` over a patched, built tree it checks and does nothing; over
// a tree patched and built with an earlier revision of the patch, it redoes both.
// A few hunks as exact text, so no patch(1) or git is needed at install.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
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

// The patched files are made from pristine copies kept beside them (<file>.couchestor-orig), so
// a later revision of the patch applies over an earlier one: `npm install` on a tree patched
// before then redoes the patch and rebuilds. A tree with no pristine copy (never patched, or
// patched before they were kept) gets one by undoing this patch's hunks found in it.
const patchText = fs.readFileSync(patchFile, 'utf8');
const count = (text, s) => text.split(s).length - 1;
const sources = createHash('sha256').update(patchText);
let changed = 0;
for (const filePatch of patchText.split(/^--- a\//m).slice(1)) {
  const file = path.join(lmdbDir, filePatch.slice(0, filePatch.indexOf('\n')));
  const pristineFile = `${file}.couchestor-orig`;
  const current = fs.readFileSync(file, 'utf8');
  const hunks = filePatch
    .split(/^@@.*\n/m)
    .slice(1)
    .map((hunk) => {
      const lines = hunk.replace(/\n$/, '').split('\n');
      const side = (keep) => lines.filter((l) => l[0] === ' ' || l[0] === keep).map((l) => l.slice(1)).join('\n');
      return { hunk, before: side('-'), after: side('+') };
    });
  const kept = fs.existsSync(pristineFile);
  let pristine = kept ? fs.readFileSync(pristineFile, 'utf8') : current;
  if (!kept) for (const { before, after } of hunks) if (count(pristine, before) === 0 && count(pristine, after) === 1) pristine = pristine.replace(after, () => before);
  let text = pristine;
  for (const { hunk, before, after } of hunks) {
    if (count(text, before) !== 1) {
      fail(
        `a hunk of ${path.relative(root, patchFile)} does not match ${path.relative(root, kept ? pristineFile : file)}:\n${hunk}\n` +
          'If an earlier revision of the patch was applied there, reinstall lmdb-js: rm -rf node_modules/lmdb && npm install',
      );
    }
    text = text.replace(before, () => after);
  }
  if (!kept) fs.writeFileSync(pristineFile, pristine);
  if (text !== current) {
    fs.writeFileSync(file, text);
    changed++;
  }
  sources.update(text);
}

// build/couchestor-patch: the hash of the patch and the patched files the binary was built from
// (node-gyp rebuild clears build/ first). A binary without it but with the marker was built by
// an earlier version of this script from these very files if none changed now.
const stampFile = path.join(lmdbDir, 'build', 'couchestor-patch');
const stamp = sources.digest('hex');
const hasMarker = () => fs.existsSync(binary) && fs.readFileSync(binary).includes(MARKER);
const stamped = () => fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp;
if (hasMarker() && changed === 0 && !fs.existsSync(stampFile)) fs.writeFileSync(stampFile, stamp);
const started = Date.now();
const build = !(hasMarker() && stamped());
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
    fail(
      `building lmdb from source failed (node-gyp rebuild in node_modules/lmdb: ${r.error ?? `exit ${r.status}`}); it needs python3, make, ` +
        "a C/C++ compiler and Node's headers (npm_config_nodedir=/usr with Debian's nodejs, else node-gyp downloads them from nodejs.org)",
    );
  }
  if (hasMarker()) fs.writeFileSync(stampFile, stamp);
}
if (!hasMarker()) fail(`${path.relative(root, binary)} was not built from the patched source`);
// What lmdb itself will load (its native.js: node-gyp-build-optional-packages on its own directory).
const loads = createRequire(path.join(lmdbDir, 'package.json'))('node-gyp-build-optional-packages').path(lmdbDir);
if (path.resolve(loads) !== binary) fail(`lmdb would load ${loads}, not the patched ${path.relative(root, binary)}`);
console.log(
  `lmdb-patch: lmdb ${VERSION} ${changed ? `patched (${changed} file${changed === 1 ? '' : 's'})` : 'patched already'}, ` +
    `${build ? `built from source in ${((Date.now() - started) / 1000).toFixed(0)} s` : 'built already'}; lmdb loads ${path.relative(root, binary)}`,
);
