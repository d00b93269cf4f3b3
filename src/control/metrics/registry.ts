// The Prometheus registry: default process metrics plus CoucheStor's own
// (prefix couchestor_). Every project metric is read from a MetricsSource at
// scrape time, so the I/O path only bumps its own plain counters.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Tier } from '../../dataplane/meta/store.js';

export type MigrationResult = 'succeeded' | 'failed' | 'aborted';
export type StripeState = 'healthy' | 'degraded' | 'rebuilding' | 'unrecoverable';

const TIERS: readonly Tier[] = ['hot', 'warm', 'cold'];
export const MIGRATION_RESULTS: readonly MigrationResult[] = ['succeeded', 'failed', 'aborted'];
export const STRIPE_STATES: readonly StripeState[] = ['healthy', 'degraded', 'rebuilding', 'unrecoverable'];

/** One volume's I/O counters since the daemon started, and its current rates. */
export interface VolumeCounters {
  volume: string;
  tier: Tier;
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
  /** Operations per second over the heat tracker's window. */
  readIops: number;
  writeIops: number;
}

export interface PoolUsage {
  pool: string;
  tier: Tier;
  capacityBytes: number;
  usedBytes: number;
  /** False: the pool's record is in the index but the configuration no longer names it (no rebuild gauge series). Absent: configured. */
  configured?: boolean;
  /** Pool.isOnline(), the check /readyz makes (directory there, readable and writable). Absent: not known (no couchestor_pool_online series). */
  online?: boolean;
}

export interface MigrationCounters {
  /** Finished migrations since start, by outcome. */
  completedTotal: Readonly<Record<MigrationResult, number>>;
  active: number;
}

/**
 * What the metrics read at each scrape. The dataplane (or, over HTTP, a remote
 * daemon) implements it; every call must be cheap and must not block, since a
 * scrape makes one call of each per scrape.
 */
export interface MetricsSource {
  volumes(): Iterable<VolumeCounters>;
  pools(): Iterable<PoolUsage>;
  migrations(): MigrationCounters;
  degradedReadsTotal(): number;
  /** Bytes held in the write journal, not yet destaged. */
  journalBytes(): number;
  /**
   * Bytes of the journal's spare files (Journal.bytesSpare: kept for reuse,
   * counted in its capacity). Optional: without it, 0 (as journalBytes without a cold tier).
   */
  journalSpareBytes?(): number;
  /** Cold stripes by state; a state left out reads as 0. */
  stripes(): Readonly<Partial<Record<StripeState, number>>>;
  /**
   * Volumes that cannot be opened now (their pool offline, a file failing
   * with EIO), with the pool: read after stripes(), which tries every volume.
   * Optional: a source without it reports none.
   */
  unavailableVolumes?(): Iterable<{ volume: string; pool: string }>;
  /**
   * Index records skipped as damaged (S3 object and part records whose
   * shape their stripes cannot be read from), by database: read after
   * stripes(), whose count finds them. Optional; null: not known (no series).
   */
  damagedIndexRecords?(): { objects: number; parts: number } | null;
  /**
   * Cold pools not fully rebuilt (Reconstructor.incompleteRebuilds: kept in
   * the index, so listed again after a restart). Optional: without it the
   * rebuild gauges have no series (nothing known, so no 0 either).
   */
  incompleteRebuilds?(): Iterable<IncompleteRebuild>;
  /**
   * The reconstructor's failure counts since start (Reconstructor.poolRetryFailures,
   * timerFailures). Optional: without it (or without a cold tier), 0.
   */
  reconstructionFailures?(): ReconstructionFailures;
  /**
   * Volumes open now, by what holds them (VolumeManager.openCounts): pinned by
   * a client or work that keeps it (NBD, API, migration, destager), lent to a
   * background pass only, or neither. Optional: without it, no series.
   */
  openVolumes?(): { pinned: number; lent: number; idle: number };
}

/** Failures the reconstructor counted since start: logged, retried next interval. */
export interface ReconstructionFailures {
  /** A listed pool's rebuild retry that threw (the pool stays listed). */
  poolRetryFailures: number;
  /** Scheduled scrub/retry passes that failed, and each failing pool of a retry pass. */
  timerFailures: number;
}

/** A cold pool whose last rebuild skipped volumes or left stripes not rebuilt. */
export interface IncompleteRebuild {
  pool: string;
  volumesSkipped: readonly string[];
  notRebuilt: number;
}

/**
 * A source, or a function returning the current one: the metrics server can
 * start before the volume store is open; until then project metrics read 0.
 */
export type MetricsSourceRef = MetricsSource | (() => MetricsSource | null);

interface Snapshot {
  volumes: VolumeCounters[];
  pools: PoolUsage[];
  migrations: MigrationCounters;
  degradedReadsTotal: number;
  journalBytes: number;
  journalSpareBytes: number;
  stripes: Readonly<Partial<Record<StripeState, number>>>;
  unavailableVolumes: { volume: string; pool: string }[];
  damagedIndexRecords: { objects: number; parts: number } | null;
  /** Null: the source does not report rebuilds (no series at all, not 0s). */
  incompleteRebuilds: IncompleteRebuild[] | null;
  reconstructionFailures: ReconstructionFailures;
  openVolumes: { pinned: number; lent: number; idle: number } | null;
}

const EMPTY_SNAPSHOT: Snapshot = {
  volumes: [],
  pools: [],
  migrations: { completedTotal: { succeeded: 0, failed: 0, aborted: 0 }, active: 0 },
  degradedReadsTotal: 0,
  journalBytes: 0,
  journalSpareBytes: 0,
  stripes: {},
  unavailableVolumes: [],
  damagedIndexRecords: null,
  incompleteRebuilds: null,
  reconstructionFailures: { poolRetryFailures: 0, timerFailures: 0 },
  openVolumes: null,
};

/**
 * A Registry that reads the source once per scrape: prom-client calls every
 * metric's collect() synchronously at the start of metrics(), so all project
 * metrics of one scrape see the same snapshot.
 */
class SnapshotRegistry extends Registry {
  private current: Snapshot | null = null;

  constructor(private readonly sourceRef: MetricsSourceRef) {
    super();
  }

  private take(): Snapshot {
    const source = typeof this.sourceRef === 'function' ? this.sourceRef() : this.sourceRef;
    if (source === null) return EMPTY_SNAPSHOT;
    return {
      volumes: [...source.volumes()],
      pools: [...source.pools()],
      migrations: source.migrations(),
      degradedReadsTotal: source.degradedReadsTotal(),
      journalBytes: source.journalBytes(),
      journalSpareBytes: source.journalSpareBytes?.() ?? 0,
      stripes: source.stripes(),
      unavailableVolumes: [...(source.unavailableVolumes?.() ?? [])],
      damagedIndexRecords: source.damagedIndexRecords?.() ?? null,
      incompleteRebuilds: source.incompleteRebuilds ? [...source.incompleteRebuilds()] : null,
      reconstructionFailures: source.reconstructionFailures?.() ?? EMPTY_SNAPSHOT.reconstructionFailures,
      openVolumes: source.openVolumes?.() ?? null,
    };
  }

  snapshot(): Snapshot {
    return this.current ?? this.take();
  }

  override metrics(): Promise<string> {
    this.current = this.take();
    try {
      return super.metrics();
    } finally {
      this.current = null;
    }
  }
}

export function createMetrics(source: MetricsSourceRef): Registry {
  const registry = new SnapshotRegistry(source);
  collectDefaultMetrics({ register: registry });
  // prom-client's gauges named like counters fail `promtool check metrics` ("non-counter metrics
  // should not have _total suffix"); each is the sum of its labelled nodejs_active_* gauge.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  const registers = [registry];

  // Counters here mirror totals the dataplane already keeps: each scrape resets
  // them and sets the current total (prom-client has no counter "set").
  new Counter({
    name: 'couchestor_migrations_total',
    help: 'Finished volume migrations, by result.',
    labelNames: ['result'],
    registers,
    collect() {
      const { completedTotal } = registry.snapshot().migrations;
      this.reset();
      for (const result of MIGRATION_RESULTS) this.inc({ result }, completedTotal[result]);
    },
  });
  new Gauge({
    name: 'couchestor_active_migrations',
    help: 'Volume migrations in progress.',
    registers,
    collect() {
      this.set(registry.snapshot().migrations.active);
    },
  });

  const volumeCounter = (name: string, help: string, pick: (v: VolumeCounters) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['volume'],
      registers,
      collect() {
        this.reset();
        for (const v of registry.snapshot().volumes) this.inc({ volume: v.volume }, pick(v));
      },
    });
  };
  volumeCounter('couchestor_volume_read_ops_total', 'Read operations served per volume.', (v) => v.readOps);
  volumeCounter('couchestor_volume_write_ops_total', 'Write operations served per volume.', (v) => v.writeOps);
  volumeCounter('couchestor_volume_read_bytes_total', 'Bytes read per volume.', (v) => v.readBytes);
  volumeCounter('couchestor_volume_write_bytes_total', 'Bytes written per volume.', (v) => v.writeBytes);

  new Gauge({
    name: 'couchestor_volume_iops',
    help: 'Current operations per second per volume and direction (the heat measure).',
    labelNames: ['volume', 'direction'],
    registers,
    collect() {
      this.reset();
      for (const v of registry.snapshot().volumes) {
        this.set({ volume: v.volume, direction: 'read' }, v.readIops);
        this.set({ volume: v.volume, direction: 'write' }, v.writeIops);
      }
    },
  });
  new Gauge({
    name: 'couchestor_volume_tier',
    help: 'Tier a volume is on: 1 for its current tier, 0 for the others.',
    labelNames: ['volume', 'tier'],
    registers,
    collect() {
      this.reset();
      for (const v of registry.snapshot().volumes) {
        for (const tier of TIERS) this.set({ volume: v.volume, tier }, v.tier === tier ? 1 : 0);
      }
    },
  });

  new Gauge({
    name: 'couchestor_pool_capacity_bytes',
    help: 'Capacity of each pool.',
    labelNames: ['pool', 'tier'],
    registers,
    collect() {
      this.reset();
      for (const p of registry.snapshot().pools) this.set({ pool: p.pool, tier: p.tier }, p.capacityBytes);
    },
  });
  new Gauge({
    name: 'couchestor_pool_used_bytes',
    help: 'Bytes used in each pool.',
    labelNames: ['pool', 'tier'],
    registers,
    collect() {
      this.reset();
      for (const p of registry.snapshot().pools) this.set({ pool: p.pool, tier: p.tier }, p.usedBytes);
    },
  });
  new Gauge({
    name: 'couchestor_pool_online',
    help: 'Whether each pool is online: 1 when its directory is there, readable and writable (the check /readyz makes), 0 when it is missing (disk not mounted or dead; /readyz answers 503 naming it). Follows the directory at runtime, no restart needed.',
    labelNames: ['pool', 'tier'],
    registers,
    collect() {
      this.reset();
      for (const p of registry.snapshot().pools) if (p.online !== undefined) this.set({ pool: p.pool, tier: p.tier }, p.online ? 1 : 0);
    },
  });

  new Counter({
    name: 'couchestor_degraded_reads_total',
    help: 'Reads of a cold stripe that needed parity to reconstruct data.',
    registers,
    collect() {
      this.reset();
      this.inc(registry.snapshot().degradedReadsTotal);
    },
  });
  new Counter({
    name: 'couchestor_rebuild_retry_failures_total',
    help: "Retries of a cold pool's rebuild that failed: the rebuild of the volumes its last rebuild skipped (couchestor_rebuild_incomplete), run by the retry timer. The pool stays listed and is retried next interval; the daemon log names each distinct error once per pool.",
    registers,
    collect() {
      this.reset();
      this.inc(registry.snapshot().reconstructionFailures.poolRetryFailures);
    },
  });
  new Counter({
    name: 'couchestor_reconstruction_timer_failures_total',
    help: "Failures in the reconstructor's scheduled passes: a scrub or retry pass that failed as a whole, and each pool whose rebuild retry failed in a retry pass. Logged; the next interval tries again.",
    registers,
    collect() {
      this.reset();
      this.inc(registry.snapshot().reconstructionFailures.timerFailures);
    },
  });
  new Gauge({
    name: 'couchestor_open_volumes',
    help: 'Volumes open now (a file descriptor or more each, and the chunk map in memory), by what holds them: "pinned" by a client or work that keeps it (an NBD connection, an API request, a migration, the destager), "lent" to a background pass (scrub, pool rebuild, control loop) only, "idle" held by neither (closed at its next release). Bounded by what is in use, not by the volumes that exist.',
    labelNames: ['held'],
    registers,
    collect() {
      this.reset();
      const o = registry.snapshot().openVolumes;
      if (o === null) return;
      this.set({ held: 'pinned' }, o.pinned);
      this.set({ held: 'lent' }, o.lent);
      this.set({ held: 'idle' }, o.idle);
    },
  });
  new Gauge({
    name: 'couchestor_journal_bytes',
    help: 'Bytes in the write journal not yet destaged to cold stripes.',
    registers,
    collect() {
      this.set(registry.snapshot().journalBytes);
    },
  });
  new Gauge({
    name: 'couchestor_journal_spare_bytes',
    help: 'Bytes of the write journal\'s spare files: destaged files kept for reuse instead of new ones. They count in the journal capacity (live + spare <= capacity) and are dropped first when a write needs their room.',
    registers,
    collect() {
      this.set(registry.snapshot().journalSpareBytes);
    },
  });
  new Gauge({
    name: 'couchestor_stripes',
    help: 'Cold stripes by state.',
    labelNames: ['state'],
    registers,
    collect() {
      const stripes = registry.snapshot().stripes;
      for (const state of STRIPE_STATES) this.set({ state }, stripes[state] ?? 0);
    },
  });

  new Gauge({
    name: 'couchestor_volume_unavailable',
    help: 'Volumes that cannot be opened (their pool offline, a file failing with EIO): 1 per volume, labelled with the pool it failed on. Their I/O and stripe figures are missing from the other metrics until they open.',
    labelNames: ['volume', 'pool'],
    registers,
    collect() {
      this.reset();
      for (const u of registry.snapshot().unavailableVolumes) this.set({ volume: u.volume, pool: u.pool }, 1);
    },
  });

  new Gauge({
    name: 'couchestor_index_damaged_records',
    help: 'Index records skipped as damaged, by database (objects, parts: S3 records whose stripes cannot be read from them). Their stripes are missing from couchestor_stripes; the log names each once, couchestor fsck lists them all. No series: no S3 front end.',
    labelNames: ['db'],
    registers,
    collect() {
      this.reset();
      const d = registry.snapshot().damagedIndexRecords;
      if (d !== null) for (const db of ['objects', 'parts'] as const) this.set({ db }, d[db]);
    },
  });

  // Every configured cold pool has a series, 0 unless listed, so an alert can tell "rebuilt"
  // from "no data"; a pool taken out of the configuration has none unless listed (made another
  // tier, its entry is dropped at start: forgetRemovedPoolRebuilds). A source that does not report rebuilds (or
  // none open yet) gives no series: 0 would claim "rebuilt".
  const rebuildGauge = (name: string, help: string, pick: (r: IncompleteRebuild) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        const snap = registry.snapshot();
        if (snap.incompleteRebuilds === null) return;
        for (const p of snap.pools) if (p.tier === 'cold' && p.configured !== false) this.set({ pool: p.pool }, 0);
        for (const r of snap.incompleteRebuilds) this.set({ pool: r.pool }, pick(r));
      },
    });
  };
  rebuildGauge(
    'couchestor_rebuild_incomplete',
    "Cold pools not fully rebuilt: 1 per pool whose last rebuild skipped volumes that could not be opened or left stripes not rebuilt (GET /v1/cold incompleteRebuilds; kept across restarts). 0 for the other cold pools.",
    () => 1,
  );
  rebuildGauge('couchestor_rebuild_volumes_skipped', 'Volumes the last rebuild of the pool could not open and has not rebuilt since (retried once they open).', (r) => r.volumesSkipped.length);
  rebuildGauge('couchestor_rebuild_stripes_not_rebuilt', 'Stripes the last whole-pool rebuild of the pool left not rebuilt (rebuild the pool again).', (r) => r.notRebuilt);

  return registry;
}
