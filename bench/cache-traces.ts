// Loads the access traces in /work/shared/traces (cache2k: xz, big-endian uint32 keys;
// LIRS: gzip text, one block number per line) into key arrays for the hit-ratio benchmark.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

export const TRACE_DIR = process.env['COUCHESTOR_TRACE_DIR'] ?? '/work/shared/traces';
// Bound on a decompressed trace; the largest shipped one is 20 MB.
const MAX_TRACE_BYTES = 256 * 1024 * 1024;

export interface Trace {
  name: string;
  keys: Float64Array;
  distinctKeys: number;
}

export function loadTrace(path: string): Float64Array {
  if (path.endsWith('.xz')) {
    const raw = execFileSync('xz', ['-dc', path], { maxBuffer: MAX_TRACE_BYTES });
    if (raw.length % 4 !== 0) throw new Error(`${path}: length ${raw.length} is not a multiple of 4`);
    const keys = new Float64Array(raw.length / 4);
    for (let i = 0; i < keys.length; i++) keys[i] = raw.readUInt32BE(i * 4);
    return keys;
  }
  if (path.endsWith('.gz')) {
    const text = gunzipSync(readFileSync(path), { maxOutputLength: MAX_TRACE_BYTES }).toString('latin1');
    const out: number[] = [];
    for (const line of text.split('\n')) {
      const t = line.trim();
      if (!/^-?\d+$/.test(t)) continue;
      out.push(Number(t));
    }
    return Float64Array.from(out);
  }
  throw new Error(`${path}: unknown trace format`);
}

export function loadAllTraces(dir = TRACE_DIR): Trace[] {
  const names = readdirSync(dir)
    .filter((n) => n.endsWith('.trace.xz') || n.endsWith('.trace.gz'))
    .sort();
  return names.map((file) => {
    const keys = loadTrace(join(dir, file));
    return { name: file.replace(/\.trace\.(xz|gz)$/, ''), keys, distinctKeys: new Set(keys).size };
  });
}
