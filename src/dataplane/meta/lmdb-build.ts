// Which lmdb-js native binary a process runs. npm install builds lmdb-js from
// source with patches/lmdb+3.5.6.patch (scripts/lmdb-patch.mjs): the prebuilt
// @lmdb/lmdb-<platform> binary overflows a heap buffer when a page write fails
// (a full or failing metadata disk; docs/upstream.md). lmdb-js falls back to
// that prebuilt binary without a word if its build directory is removed or
// PREBUILDS_ONLY / LMDB_PREBUILD is set, so the daemon says so at start.
import fs from 'node:fs';

/** The patched mdb.c's page-write message format, present only in the patched build. */
const PATCHED_FORMAT = 'Attempting to write page at position %llu, size %lld, blocks %d';

/** The lmdb .node files mapped into process `pid` (Linux: /proc/<pid>/maps); null where there is no /proc. */
export function lmdbBinariesOf(pid: number | 'self'): string[] | null {
  let maps: string;
  try {
    maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return null;
  }
  const paths = maps
    .split('\n')
    .map((l) => l.slice(l.indexOf('/')))
    .filter(isLmdbBinary);
  return [...new Set(paths)];
}

/**
 * Whether `file` is an lmdb-js native binary: its source build
 * (lmdb/build/Release or Debug), a prebuilt package's (@lmdb/lmdb-<platform>/)
 * or its prebuilds/ directory's. Judged by the last directories only: a
 * checkout under a directory named lmdb has every addon under ".../lmdb/...".
 */
export function isLmdbBinary(file: string): boolean {
  return /\/(lmdb\/build\/(Release|Debug)|@lmdb\/lmdb-[^/]+|lmdb\/prebuilds\/[^/]+)\/[^/]+\.node$/.test(file);
}

/**
 * Why process `pid` does not run the patched source build of lmdb-js, or null
 * if it does (or if that cannot be known: no /proc, lmdb not loaded yet).
 */
export function unpatchedLmdbReason(pid: number | 'self'): string | null {
  const loaded = lmdbBinariesOf(pid);
  if (loaded === null || loaded.length === 0) return null;
  if (loaded.length !== 1 || !loaded[0]!.endsWith('/node_modules/lmdb/build/Release/lmdb.node')) {
    return `lmdb-js runs from ${loaded.join(', ')}, not the patched source build node_modules/lmdb/build/Release/lmdb.node (npm install runs scripts/lmdb-patch.mjs)`;
  }
  let binary: Buffer;
  try {
    binary = fs.readFileSync(loaded[0]!);
  } catch (err) {
    return `${loaded[0]} cannot be read to check it: ${(err as Error).message}`;
  }
  if (!binary.includes(PATCHED_FORMAT)) return `${loaded[0]} is not built from the patched mdb.c (patches/lmdb+3.5.6.patch)`;
  return null;
}
