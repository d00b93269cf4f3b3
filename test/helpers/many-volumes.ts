// Thousands of volumes in a stopped daemon's data directory, fast: records
// written straight into the index in one transaction, each with its empty
// placement file (as createVolume leaves one), one directory sync at the end.
// Through the API each create costs a file and a directory sync plus an index
// commit (~3-5 ms here): 2,000 took ~8 s; this takes well under a second.
import fs from 'node:fs';
import path from 'node:path';
import { MetaStore, type VolumeRecord } from '../../src/dataplane/meta/store.js';

/**
 * Adds `count` volumes named `${prefix}${i}` shaped as the existing volume
 * `template` (tier, placement pool, chunk size, size), with no chunk written.
 * The daemon must be stopped. Returns their names.
 */
export async function addVolumesLike(dataDir: string, template: string, prefix: string, count: number): Promise<string[]> {
  const meta = MetaStore.open(dataDir);
  try {
    const like = meta.volumes.get(template);
    if (like === undefined) throw new Error(`no volume ${template} to copy`);
    const pool = meta.pools.get(like.poolName);
    if (pool === undefined) throw new Error(`no pool ${like.poolName}`);
    const dir = path.join(path.resolve(dataDir, pool.path), 'volumes');
    const names: string[] = [];
    await meta.transaction(() => {
      for (let i = 0; i < count; i++) {
        const rec: VolumeRecord = { ...like, name: `${prefix}${i}`, id: meta.nextVolumeId(), createdMs: Date.now(), keptFilePools: [] };
        delete rec.labels;
        fs.closeSync(fs.openSync(path.join(dir, `${rec.id}.dat`), 'w', 0o600));
        meta.volumes.put(rec.name, rec);
        names.push(rec.name);
      }
    });
    const fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    await meta.durable();
    return names;
  } finally {
    await meta.close();
  }
}

/** A process's descriptors, and those on volume files (pools/<pool>/volumes/<id>.dat), from /proc. */
export function processFds(pid: number): { all: number; volumeFiles: number } {
  let all = 0;
  let volumeFiles = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    all++;
    if (/\/volumes\/\d+\.dat$/.test(target)) volumeFiles++;
  }
  return { all, volumeFiles };
}
