// Which lmdb-js native binary a process runs: the source build patched at install
// (scripts/lmdb-patch.mjs, patches/lmdb+3.5.6.patch: mdb.c's heap overflow on a failed
// page write), never the unpatched prebuilt @lmdb/lmdb-<platform> one.
import fs from 'node:fs';
import { lmdbBinariesOf as mappedLmdbBinaries } from '../../src/dataplane/meta/lmdb-build.js';

/** The lmdb .node files mapped into process `pid` (its /proc/<pid>/maps; src/dataplane/meta/lmdb-build.ts). */
export function lmdbBinariesOf(pid: number | 'self'): string[] {
  const found = mappedLmdbBinaries(pid);
  if (found === null) throw new Error(`/proc/${pid}/maps cannot be read: which lmdb-js binary process ${pid} runs is unknown`);
  return found;
}

/** Asserts process `pid` runs the patched source build of lmdb-js and no other lmdb binary. */
export function assertPatchedLmdb(pid: number | 'self'): void {
  const loaded = lmdbBinariesOf(pid);
  if (loaded.length !== 1 || !loaded[0]!.endsWith('/node_modules/lmdb/build/Release/lmdb.node')) {
    throw new Error(
      `process ${pid} runs lmdb-js from ${loaded.join(', ') || 'nowhere'}, not the patched source build node_modules/lmdb/build/Release/lmdb.node (npm install runs scripts/lmdb-patch.mjs)`,
    );
  }
  if (!fs.readFileSync(loaded[0]!).includes('Attempting to write page at position %llu, size %lld, blocks %d')) {
    throw new Error(`${loaded[0]} is not built from the patched mdb.c (patches/lmdb+3.5.6.patch)`);
  }
}
