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
  /** pool -> the segment store last judged and its replacedMs: the identity is read again only for another store. Bounded by the cold pools. */
  private readonly judged = new Map<string, { store: object; replacedMs: number }>();

  constructor(
    meta: MetaStore,
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
   * When `pool`'s current disk took over from one whose places the index may
   * still name (0: no such replacement seen). `store`: the pool's segment
   * store now (the identity is read again only when it changes: a replaced
   * directory opens a new store); `openedEmpty`: the stripe store opened it
   * empty in this process while marked written (mayHoldStalePlaces), which
   * makes a first record a replacement.
   */
  replacedSince(pool: string, store: object, openedEmpty: boolean): number {
    const seen = this.judged.get(pool);
    if (seen !== undefined && seen.store === store) return seen.replacedMs;
    const replacedMs = this.judge(pool, openedEmpty);
    this.judged.set(pool, { store, replacedMs });
    return replacedMs;
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
