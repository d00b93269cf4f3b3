// The daemon says at start when it runs an unpatched lmdb-js (the prebuilt
// binary, whose failed page writes overflow a heap buffer: docs/upstream.md):
// lmdb-js falls back to it without a word under PREBUILDS_ONLY or without its
// build directory. The patched source build that npm install makes is quiet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';
import { isLmdbBinary } from '../src/dataplane/meta/lmdb-build.js';

/** The daemon's stderr up to and including its `serving` line (logged after the lmdb check). */
async function startupLog(env: NodeJS.ProcessEnv): Promise<string> {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n', env });
  try {
    if (!/ serving /.test(d.stderr)) {
      await new Promise<void>((resolve, reject) => {
        const onData = () => {
          if (/ serving /.test(d.stderr)) done(null);
        };
        const onExit = () => done(new Error(`daemon exited before its serving line:\n${d.stderr}`));
        const done = (err: Error | null) => {
          d.proc.stderr!.off('data', onData);
          d.proc.off('exit', onExit);
          if (err) reject(err);
          else resolve();
        };
        // Registered after TestDaemon's own listener, which appends to d.stderr first.
        d.proc.stderr!.on('data', onData);
        d.proc.once('exit', onExit);
      });
    }
    return d.stderr;
  } finally {
    await d.cleanup();
  }
}

test('the patched source build of lmdb-js starts quietly; the prebuilt binary (PREBUILDS_ONLY=1) is named in a warning', async () => {
  const patched = await startupLog({});
  assert.doesNotMatch(patched, /unpatched lmdb-js/, patched);

  const prebuilt = await startupLog({ PREBUILDS_ONLY: '1' });
  assert.match(prebuilt, /WARN the index runs an unpatched lmdb-js: a failed page write .* overflows a heap buffer/);
  assert.match(prebuilt, /@lmdb\/lmdb-linux-x64\/[^ "]*\.node, not the patched source build/);
});

test('which mapped files are lmdb-js binaries: judged by their last directories, not by a directory named lmdb above the checkout', () => {
  // A checkout under .../lmdb/: every addon's path holds "/lmdb/". Before, all were taken for lmdb-js
  // binaries, and the daemon warned it ran an unpatched lmdb-js (and index-commit-full-disk failed).
  const repo = '/home/dev/lmdb/couchestor';
  const binaries = [
    `${repo}/node_modules/lmdb/build/Release/lmdb.node`,
    `${repo}/node_modules/lmdb/build/Debug/lmdb.node`,
    `${repo}/node_modules/@lmdb/lmdb-linux-x64/node.abi115.glibc.node`,
    `${repo}/node_modules/lmdb/prebuilds/linux-x64/node.abi115.glibc.node`,
  ];
  const others = [
    `${repo}/native/build/Release/ec_isal.node`,
    `${repo}/node_modules/@msgpackr-extract/msgpackr-extract-linux-x64/node.abi115.glibc.node`,
    `${repo}/node_modules/@riaskov/mmap-io/build/binding/Release/node-v115-linux-x64/mmap_io.node`,
    `${repo}/node_modules/lmdb/build/Release/obj.target/lmdb/src/lmdb-js.o`,
    '/tmp/lmdb/data.mdb',
  ];
  for (const f of binaries) assert.ok(isLmdbBinary(f), f);
  for (const f of others) assert.ok(!isLmdbBinary(f), f);
});
