// Which disk each cold pool's directory holds, as the object store last saw
// it, kept in the index (s3-pool-disks) so that a disk replaced under
// references the index still holds is known after a restart too.
//
// The stripe store knows a replaced pool only in the process that opened its
// new, empty store (StripeStore.mayHoldStalePlaces). Once the new disk took
// records, a lost shard's place inside what it has written looks kept; after a
// restart nothing said otherwise, so HEAD of a cold object lost beyond parity
// answered 200 while GET answered 500. Here each cold pool's identity (the
// `.couchestor-pool` file `pools replace` writes for a new disk, with its
// uuid and creation time) is compared with the one recorded: a different one
// is a replaced disk, and shards of data written before it took over
// (replacedMs) are "unsure": cold-segments.ts assertColdShardsKnownKept reads
// their headers when they could decide a stripe (more than parity-many gone
// or unsure), as for a store replaced in this process.
//
// Until the pool is rebuilt: once a whole-pool rebuild that landed on the
// current disk answers complete (every stripe with a shard on the pool holds
// it there, read back or rebuilt, its flips durable), the record's
// replacedMs goes back to 0 (rebuilt()), so a HEAD of an older object reads
// no header again. Kept forever, three replaced pools of 4+2 made every HEAD
// of every older object read its shards' headers (1 GiB: 16.5 -> 98 ms).
import type { Database } from 'lmdb';
import type { MetaStore } from '../meta/store.js';
import { readPoolIdentity } from '../pools/identity.js';
import { log } from '../../log.js';

export const POOL_DISKS_DB = 's3-pool-disks';

interface PoolDiskRecord {
  uuid: string;
  createdMs: number;
  /** When the current disk replaced one the index may name places of (its identity's createdMs); 0: none seen. */
  replacedMs: number;
}

export class PoolDisks {
  private readonly db: Database<PoolDiskRecord, string>;
  /**
   * pool -> the segment store last judged and its replacedMs: the identity is
   * read again only for another store. `rebuilt`: a whole-pool rebuild landed
   * on that store completed (rebuilt()), which also ends the distrust of a
   * store opened empty in this process. Bounded by the cold pools.
   */
  private readonly judged = new Map<string, { store: object; replacedMs: number; rebuilt: boolean }>();
  /**
   * pool -> the store the last whole-pool rebuild of it landed on and the
   * disk identity found there at its start (rebuildStarting): rebuilt() clears
   * only for that disk. Bounded by the cold pools.
   */
  private readonly rebuilding = new Map<string, { store: object; uuid: string; createdMs: number }>();

  constructor(
    private readonly meta: MetaStore,
    /** A cold pool's directory (undefined: no such pool). */
    private readonly poolPath: (pool: string) => string | undefined,
  ) {
    this.db = meta.openDB<PoolDiskRecord, string>(POOL_DISKS_DB);
  }

  /**
   * At open: each cold pool's disk compared with the one recorded, so a disk
   * replaced while the daemon was down is known, and recorded where none is
   * (a pool's first start with this build: no replacement known before it).
   */
  recordAll(pools: Iterable<string>): void {
    for (const pool of pools) this.judge(pool, false);
  }

  /**
   * Cold data written at or before the returned time may name places on
   * `pool` that hold another record now (0: none; MAX_SAFE_INTEGER: any):
   * when its current disk took over from one whose places the index may
   * still name, unless a whole-pool rebuild onto this disk completed since.
   * `store`: the pool's segment store now (the identity is read again only
   * when it changes: a replaced directory opens a new store); `openedEmpty`:
   * the stripe store opened it empty in this process while marked written
   * (mayHoldStalePlaces): any data is unsure there until it is rebuilt, and a
   * first record makes it a replacement.
   */
  replacedSince(pool: string, store: object, openedEmpty: boolean): number {
    let seen = this.judged.get(pool);
    if (seen === undefined || seen.store !== store) {
      seen = { store, replacedMs: this.judge(pool, openedEmpty), rebuilt: false };
      this.judged.set(pool, seen);
    }
    return openedEmpty && !seen.rebuilt ? Number.MAX_SAFE_INTEGER : seen.replacedMs;
  }

  /**
   * Each recorded cold pool, and whether its disk replaced one the index may
   * name places of and was not fully rebuilt since: the record says so, or
   * the disk there now is not the recorded one (replaced, not judged yet).
   * For the metrics (couchestor_s3_cold_pools_unverified); reads each pool's
   * identity file. Bounded by the cold pools.
   */
  unverifiedPools(): Map<string, boolean> {
    const out = new Map<string, boolean>();
    for (const { key, value } of this.db.getRange()) {
      if (this.poolPath(key) === undefined) continue;
      const id = this.identity(key);
      out.set(key, value.replacedMs > 0 || (id !== null && (id.poolUuid !== value.uuid || id.createdMs !== value.createdMs)));
    }
    return out;
  }

  /**
   * A whole-pool rebuild of `pool` lands on `store` (called before it lists
   * anything): the disk identity found in the pool's directory now is the one
   * a completion (rebuilt) may clear. No identity readable: nothing cleared.
   */
  rebuildStarting(pool: string, store: object): void {
    const id = this.identity(pool);
    if (id === null) this.rebuilding.delete(pool);
    else this.rebuilding.set(pool, { store, uuid: id.poolUuid, createdMs: id.createdMs });
  }

  /**
   * The rebuild of `pool` that landed on `store` completed (the caller
   * checked `store` is still the pool's, after the rebuild's flips and its
   * incomplete-list entry were durable): every stripe the index holds with
   * a shard on the pool holds it on this disk, so data written before the
   * disk took over is no longer unsure there. Its record's replacedMs
   * becomes 0, committed and synced before this resolves; a crash before
   * that keeps the distrust (a HEAD reads headers, never answers wrong). Only
   * for the disk the rebuild found at its start: the pool replaced again
   * since (another identity, or another store: a second `pools replace`
   * during the rebuild) keeps it. Whether it cleared.
   */
  async rebuilt(pool: string, store: object): Promise<boolean> {
    const started = this.rebuilding.get(pool);
    if (started === undefined || started.store !== store) return false;
    const id = this.identity(pool);
    if (id === null || id.poolUuid !== started.uuid || id.createdMs !== started.createdMs) return false;
    this.rebuilding.delete(pool);
    // In memory first (synchronously with the checks): a judge() of this store racing the
    // commit below would read the old record and write its replacedMs back over the clear.
    this.judged.set(pool, { store, replacedMs: 0, rebuilt: true });
    const was = this.db.get(pool);
    if (was !== undefined && was.uuid === id.poolUuid && was.createdMs === id.createdMs && was.replacedMs === 0) return true;
    try {
      await this.db.put(pool, { uuid: id.poolUuid, createdMs: id.createdMs, replacedMs: 0 });
      await this.meta.durable();
    } catch (err) {
      // The old record stays: after a restart the pool's older objects are header-checked again (slower, never wrong).
      log.warn('object store: could not record that a cold pool is fully rebuilt', { pool, err: (err as Error).message });
      return false;
    }
    log.info('object store: cold pool fully rebuilt onto its current disk; cold objects written before it took over are no longer checked shard by shard there', { pool });
    return true;
  }

  private identity(pool: string): { poolUuid: string; createdMs: number } | null {
    const dir = this.poolPath(pool);
    try {
      return dir === undefined ? null : readPoolIdentity(dir);
    } catch {
      return null; // malformed: the pool is offline (Pool.isOnline says why)
    }
  }

  private judge(pool: string, openedEmpty: boolean): number {
    const was = this.db.get(pool);
    const dir = this.poolPath(pool);
    let id: ReturnType<typeof readPoolIdentity> = null;
    try {
      if (dir !== undefined) id = readPoolIdentity(dir);
    } catch {
      // Malformed: the pool is offline (Pool.isOnline says why); judged again with its next store.
    }
    if (id === null) return was?.replacedMs ?? 0;
    let replacedMs = was?.replacedMs ?? 0;
    if (was === undefined) {
      if (openedEmpty) replacedMs = id.createdMs;
    } else if (was.uuid === id.poolUuid && was.createdMs === id.createdMs) {
      return replacedMs;
    } else {
      replacedMs = id.createdMs;
      log.info('object store: a cold pool holds another disk than before; cold objects written before it are checked shard by shard where their loss could decide a stripe', { pool, since: new Date(replacedMs).toISOString() });
    }
    // Not awaited: a record lost with a crash leaves the old one, and the next start judges the change again.
    this.db.put(pool, { uuid: id.poolUuid, createdMs: id.createdMs, replacedMs }).catch((err: Error) => log.warn('object store: could not record a cold pool\'s disk', { pool, err: err.message }));
    return replacedMs;
  }
}
