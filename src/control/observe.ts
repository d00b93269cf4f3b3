// Health probes and the metrics source of a running daemon, read from the
// dataplane through its public objects at probe/scrape time.
import type { HealthChecks } from './health/index.js';
import type { MetricsSource, VolumeCounters } from './metrics/index.js';
import type { HeatTracker } from './heat.js';
import type { VolumeManager } from '../dataplane/volumes/manager.js';
import { listedIncomplete } from '../dataplane/ec/reconstruction.js';
import { damagedIndexRecords } from '../dataplane/objects/cold-holders.js';
import { inflightBudget } from '../dataplane/inflight-budget.js';

export interface MigrationStats {
  completedTotal: { succeeded: number; failed: number; aborted: number };
  active: number;
}

export function healthChecks(manager: VolumeManager, isOpen: () => boolean): HealthChecks {
  return {
    live: () => {
      const reasons: string[] = [];
      if (manager.cold?.journal.failed) reasons.push(manager.cold.journal.failed.message);
      // Latched until restart (MetaStore.durable): a restart is the way back.
      if (manager.meta.failed) reasons.push(manager.meta.failed.message);
      return { ok: reasons.length === 0, reasons };
    },
    ready: () => {
      const reasons: string[] = [];
      if (!isOpen()) reasons.push('metadata not open');
      if (manager.meta.failed) reasons.push(manager.meta.failed.message);
      for (const p of manager.pools.values()) if (!p.isOnline()) reasons.push(p.offlineButPresent() ? `pool ${p.name} offline (${p.rec.path}): ${p.offlineReason() ?? 'not the pool'}` : `pool ${p.name} missing (${p.rec.path})`);
      // A cold pool whose segment store latched a write failure: online (its directory is fine) but destaging
      // to it fails. A full disk's clears at the next write once there is room; any other needs a restart.
      for (const p of manager.pools.values()) {
        const failed = p.rec.tier === 'cold' ? manager.cold?.stripes.writeFailure(p.name) : undefined;
        if (failed) reasons.push(`pool ${p.name} takes no writes (${p.rec.path}): a write failed: ${failed.error.message}; ${failed.clearsWithRoom ? 'retried at the next write once the disk has room' : 'restart the daemon'}`);
      }
      for (const v of manager.openVolumes()) if (v.failed) reasons.push(`volume ${v.name} failed: ${v.failed.message}`);
      return { ok: reasons.length === 0, reasons };
    },
  };
}

/** Volume records read from the index at a time by the metrics source (a scrape's slice is 1,000). */
const VOLUMES_PAGE = 500;

export function metricsSource(manager: VolumeManager, heat: HeatTracker, migrations: () => MigrationStats): MetricsSource {
  return {
    *volumes() {
      // Every volume, open or not: a volume closes once nothing holds it (its NBD clients gone), and
      // its series must not vanish then (a closed one's counters are those it had when it closed).
      // Read from the index a page at a time: the scrape takes them a slice at a time with the
      // event loop free between (listVolumes() decoded 10,000 records in one go: ~20 ms).
      for (let after: string | undefined, page = true; page; ) {
        page = false;
        // A page is read whole: no cursor stays open across the scrape's yields. Its volumes' values
        // are read at once too, the open ones with the closed ones' counters: a volume opened between
        // two slices takes its counters off the closed map (an open map taken at the scrape's start
        // missed it: its totals read 0 in that scrape, a counter reset to Prometheus).
        const records = [...manager.meta.volumes.getRange({ start: after, limit: VOLUMES_PAGE + 1 })];
        const open = new Map(manager.openVolumes().map((v) => [v.name, v]));
        const closed = manager.closedVolumeCounters();
        const out: VolumeCounters[] = [];
        for (const { key, value: rec } of records) {
          if (key === after) continue;
          after = key;
          page = true;
          const v = open.get(rec.name);
          const counters = v?.counters ?? closed.get(rec.id) ?? { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 };
          out.push({ volume: rec.name, tier: (v?.rec ?? rec).tier, readOps: counters.readOps, writeOps: counters.writeOps, readBytes: counters.readBytes, writeBytes: counters.writeBytes, ...heat.iops(rec.name, rec.id) });
        }
        yield* out;
      }
    },
    *pools() {
      for (const p of manager.pools.values()) yield { pool: p.name, tier: p.rec.tier, capacityBytes: p.rec.capacityBytes, usedBytes: p.usedBytes, configured: manager.configuredPools?.has(p.name) ?? true, online: p.isOnline(), ...(p.rec.tier === 'cold' && manager.cold ? { writeFailed: manager.cold.stripes.writeFailure(p.name) !== undefined } : {}) };
    },
    migrations,
    degradedReadsTotal: () => manager.cold?.stripes.counters.degradedReads ?? 0,
    journalBytes: () => manager.cold?.journal.bytesLive ?? 0,
    journalSpareBytes: () => manager.cold?.journal.bytesSpare ?? 0,
    stripes: () => {
      const c = manager.cold?.reconstructor.counts();
      return c ? { healthy: c.Healthy, degraded: c.Degraded, rebuilding: c.Reconstructing, unrecoverable: c.Failed } : {};
    },
    unavailableVolumes: () => manager.unavailableVolumes(),
    openVolumes: () => manager.openCounts(),
    nbdInflight: () => ({ usedBytes: inflightBudget.usedBytes, capacityBytes: inflightBudget.capacityBytes, peakBytes: inflightBudget.peakBytes, pausesTotal: inflightBudget.pausesTotal }),
    // Found by stripes()' count of the object stripes (read before this in a scrape).
    damagedIndexRecords: () => damagedIndexRecords(manager.meta),
    // Without a cold tier (no policy file, say) the index still holds the last list: [] would
    // read 0 (rebuilt) for every cold pool it names.
    incompleteRebuilds: () =>
      manager.cold?.reconstructor.incompleteRebuilds() ?? [...manager.meta.incompleteRebuilds.getRange()].map(({ key, value }) => listedIncomplete(key, value)),
    reconstructionFailures: () => {
      const r = manager.cold?.reconstructor;
      return { poolRetryFailures: r?.poolRetryFailures ?? 0, timerFailures: r?.timerFailures ?? 0 };
    },
  };
}
