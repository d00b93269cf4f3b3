// lmdb-js 3.5.6's mdb.c sprintf'd a failed page write's message (ENOSPC, EIO), up to
// 134 bytes, into malloc(100): a heap overflow in the daemon (glibc aborted it about 1
// run in 13 of index-commit-full-disk, or other heap memory was silently overwritten).
// npm install patches and builds lmdb-js from source (scripts/lmdb-patch.mjs,
// patches/lmdb+3.5.6.patch, docs/upstream.md). Here: this process runs that build, and
// a commit that fails on a full disk gives the patched, bounded message. Fails on the
// prebuilt binary (PREBUILDS_ONLY=1: "..., buffer sizes 4096 4096 4096", unbounded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';
import { assertPatchedLmdb } from './helpers/lmdb.js';
import { tinyFileSystem } from './helpers/journal.js';

const MiB = 1024 * 1024;

test('lmdb-js runs patched: a page write that fails on a full disk gives a bounded error, not a heap overflow', async (t) => {
  const tiny = await tinyFileSystem(t, 8 * MiB, 'lmdb-write-error-');
  const db = open({ path: path.join(tiny.dir, 'db') });
  t.after(() => db.close());
  assertPatchedLmdb('self');
  db.transactionSync(() => {
    for (let i = 0; i < 100; i++) db.putSync(`a${i}`, Buffer.alloc(1000, 1));
  });
  tiny.fill(path.join(tiny.dir, 'db', 'data.mdb'));
  // A 3 MiB value (overflow pages) among small ones: a multi-MiB write that cannot land.
  const err = (() => {
    try {
      db.transactionSync(() => {
        for (let i = 0; i < 20; i++) db.putSync(`b${i}`, Buffer.alloc(i === 10 ? 3 * MiB : 1000, 2));
      });
    } catch (e) {
      return e as Error;
    }
    return assert.fail('a 3 MiB commit succeeded on a full disk');
  })();
  const m = /^(No space left on device|File too large): (Attempting to write page at position \d+, size \d+, blocks \d+)$/.exec(err.message);
  assert.ok(m, `the failed commit's message: ${err.message}`);
  assert.ok(m[2]!.length < 100, `mdb.c's message (its buffer is 100 bytes): ${m[2]!.length} bytes`);
  // Room again: the env is fine, the earlier data there.
  fs.rmSync(path.join(tiny.dir, 'filler'), { force: true });
  assert.equal(db.get('a99')?.length, 1000);
});
