// A volume with a big chunk map, made in a stopped daemon's index: many
// chunk entries (as a disk written through at small chunks would have)
// without writing them through NBD first. The volume's file is sized to hold
// them (sparse: its Allocated chunks read as zeros until bytes are put there).
import fs from 'node:fs';
import path from 'node:path';
import { ChunkState, MetaStore } from '../../src/dataplane/meta/store.js';

/**
 * Gives volume `name` of the stopped daemon at `dataDir` `chunks` chunks of
 * `chunkBytes` (its size becomes chunks * chunkBytes), those `allocated`
 * says Allocated (in its placement pool's file), the others without an
 * entry. `state` Discarded: those entries are trimmed chunks instead (no
 * bytes anywhere: a cold volume's map, its file left as it is). Entries
 * already there (written before, a cold chunk's stripe) are kept. Returns its
 * volume file's path.
 */
export async function bigChunkMap(dataDir: string, name: string, opts: { chunks: number; chunkBytes: number; allocated?: (chunk: number) => boolean; state?: ChunkState.Allocated | ChunkState.Discarded }): Promise<string> {
  const state = opts.state ?? ChunkState.Allocated;
  const meta = MetaStore.open(dataDir);
  try {
    const rec = meta.volumes.get(name);
    if (rec === undefined) throw new Error(`no volume ${name} in ${dataDir}`);
    await meta.transaction(() => {
      void meta.volumes.put(name, { ...rec, chunkSizeBytes: opts.chunkBytes, sizeBytes: opts.chunks * opts.chunkBytes });
      for (let i = 0; i < opts.chunks; i++) {
        if (!(opts.allocated?.(i) ?? true) || meta.chunks.get([rec.id, i]) !== undefined) continue;
        void meta.chunks.put([rec.id, i], { state, pool: state === ChunkState.Allocated ? rec.poolName : '' });
      }
    });
    await meta.durable();
    const pool = meta.pools.get(rec.poolName)!;
    const file = path.join(path.resolve(dataDir, pool.path), 'volumes', `${rec.id}.dat`);
    if (state === ChunkState.Allocated) fs.truncateSync(file, opts.chunks * opts.chunkBytes);
    return file;
  } finally {
    await meta.close();
  }
}
