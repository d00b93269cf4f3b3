// The Prometheus registry: default process metrics plus CoucheStor's own
// (prefix couchestor_). Every project metric is read from a MetricsSource at
// scrape time, so the I/O path only bumps its own plain counters.

import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
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
  /** A cold pool whose segment store refuses writes after one failed (the /readyz reason says why). Absent: not a cold pool (no series). */
  writeFailed?: boolean;
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
  /**
   * The daemon-wide budget of bytes NBD requests in flight hold (InflightBudget,
   * limits.inflightBytes). Optional: without it, no series.
   */
  nbdInflight?(): NbdInflight;
}

/** InflightBudget's figures, read at each scrape. */
export interface NbdInflight {
  usedBytes: number;
  capacityBytes: number;
  /** The most in use at once since start. */
  peakBytes: number;
  /** Requests that had to wait for the budget (their connection stopped reading meanwhile). */
  pausesTotal: number;
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
  /** Read a slice at a time as the per-volume families are built (VolumeSeries): not taken in one go. */
  volumes: Iterable<VolumeCounters>;
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
  nbdInflight: NbdInflight | null;
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
  nbdInflight: null,
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
      volumes: source.volumes(),
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
      nbdInflight: source.nbdInflight?.() ?? null,
    };
  }

  snapshot(): Snapshot {
    return this.current ?? this.take();
  }

  override async metrics(): Promise<string> {
    return (await this.metricsChunks()).join('');
  }

  /**
   * The exposition in pieces, in order (GET /metrics streams them: a 5 MB string is never
   * built, nor encoded in one go): prom-client's text of each metric (collect() runs
   * synchronously at the start of its getMetricsAsString, so all see this snapshot), and each
   * per-volume family in slices (VolumeSeries).
   */
  async metricsChunks(): Promise<string[]> {
    const format = (Registry.prototype as unknown as { getMetricsAsString(m: unknown): Promise<string> }).getMetricsAsString;
    this.current = this.take();
    let pending: Promise<string | string[]>[];
    try {
      const volumes = this.current.volumes;
      pending = this.getMetricsAsArray().map((m: unknown) => (m instanceof VolumeFamily ? this.volumeSeries.family(volumes, m.spec) : format.call(this, m)));
    } finally {
      this.current = null;
    }
    const parts = await Promise.all(pending);
    // Pieces of >= 64 KiB (a write each when streamed), not one per metric and separator.
    const out: string[] = [];
    let piece = '';
    const add = (x: string): void => {
      piece += x;
      if (piece.length < 65_536) return;
      out.push(piece);
      piece = '';
    };
    parts.forEach((p, i) => {
      if (i > 0) add('\n\n');
      if (typeof p === 'string') add(p);
      else for (const x of p) add(x);
    });
    out.push(`${piece}\n`);
    return out;
  }

  private readonly volumeSeries = new VolumeSeries();
}

/** Volumes formatted before a scrape yields the event loop (setImmediate): ~2-4 ms of work at most between yields. */
export const VOLUMES_PER_SLICE = 1000;

interface VolumeFamilySpec {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  /** Index of this family's lines in a volume's cached entry. */
  index: number;
}

const VOLUME_FAMILIES: readonly VolumeFamilySpec[] = [
  { name: 'couchestor_volume_read_ops_total', help: 'Read operations served per volume.', type: 'counter', index: 0 },
  { name: 'couchestor_volume_write_ops_total', help: 'Write operations served per volume.', type: 'counter', index: 1 },
  { name: 'couchestor_volume_read_bytes_total', help: 'Bytes read per volume.', type: 'counter', index: 2 },
  { name: 'couchestor_volume_write_bytes_total', help: 'Bytes written per volume.', type: 'counter', index: 3 },
  { name: 'couchestor_volume_iops', help: 'Current operations per second per volume and direction (the heat measure).', type: 'gauge', index: 4 },
  { name: 'couchestor_volume_tier', help: 'Tier a volume is on: 1 for its current tier, 0 for the others.', type: 'gauge', index: 5 },
];

/**
 * A per-volume family in the registry: it keeps prom-client's place for it (the order of the
 * exposition) and its name; its text comes from SnapshotRegistry.getMetricsAsString. get()
 * (prom-client's JSON form, getMetricsAsJSON: nothing here uses it) gives no values.
 */
class VolumeFamily {
  readonly aggregator = 'sum';
  constructor(readonly spec: VolumeFamilySpec) {}
  get name(): string {
    return this.spec.name;
  }
  get help(): string {
    return this.spec.help;
  }
  get type(): string {
    return this.spec.type;
  }
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string>; value: number }[] } {
    const values: { labels: Record<string, string>; value: number }[] = [];
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
  reset(): void {}
}

/** One volume's last formatted values and lines (one string per family, a family's lines joined by newlines). */
interface VolumeEntry extends Omit<VolumeCounters, 'volume'> {
  lines: string[];
  /** The scrape that last saw the volume: entries of volumes gone since are dropped. */
  seen: number;
}

/**
 * The per-volume families' text, built once per scrape for all six families: a volume whose
 * values did not change since the last scrape (an idle one) costs a comparison and its cached
 * lines, not a re-format; the work is done in slices of VOLUMES_PER_SLICE volumes with the event
 * loop free between them, so NBD and S3 requests are not held by a scrape of any size.
 */
class VolumeSeries {
  private readonly cache = new Map<string, VolumeEntry>();
  private scrapes = 0;
  /** The last scrape's slices: their volumes' entries, and each family's text of them. */
  private slices: { entries: VolumeEntry[]; texts: string[] }[] = [];
  /** The build of the scrape under way (the families of one scrape share it), by its volumes array. */
  private building: { volumes: Iterable<VolumeCounters>; text: Promise<string[][]> } | null = null;

  /** A family's text in pieces: its header, then its lines a slice of volumes at a time. */
  family(volumes: Iterable<VolumeCounters>, spec: VolumeFamilySpec): Promise<string[]> {
    if (this.building?.volumes !== volumes) this.building = { volumes, text: this.build(volumes) };
    const header = `# HELP ${spec.name} ${escapeString(spec.help)}\n# TYPE ${spec.name} ${spec.type}`;
    return this.building.text.then((texts) => [header, ...texts[spec.index]!.map((t) => `\n${t}`)]);
  }

  private async build(volumes: Iterable<VolumeCounters>): Promise<string[][]> {
    const seen = ++this.scrapes;
    // Each family's text, joined slice by slice and kept in those pieces: one join of every
    // volume's lines held the loop ~200 ms at 20,000 volumes.
    // A slice whose volumes' entries are the last scrape's (none changed: all idle) reuses its
    // text too: an idle scrape allocates next to nothing (each one's ~5 MB of garbage at
    // 10,000 volumes brought major GCs of 100+ ms).
    const texts: string[][] = VOLUME_FAMILIES.map(() => []);
    // The source is read a slice at a time too (the daemon's pages through the index).
    const it = volumes[Symbol.iterator]();
    let n = 0;
    let count = 0;
    for (let done = false; !done; n++) {
      if (n > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const entries: VolumeEntry[] = [];
      for (let i = 0; i < VOLUMES_PER_SLICE; i++) {
        const next = it.next();
        if (next.done) {
          done = true;
          break;
        }
        const v = next.value;
        let e = this.cache.get(v.volume);
        if (e === undefined || e.tier !== v.tier || e.readOps !== v.readOps || e.writeOps !== v.writeOps || e.readBytes !== v.readBytes || e.writeBytes !== v.writeBytes || !same(e.readIops, v.readIops) || !same(e.writeIops, v.writeIops)) {
          e = { tier: v.tier, readOps: v.readOps, writeOps: v.writeOps, readBytes: v.readBytes, writeBytes: v.writeBytes, readIops: v.readIops, writeIops: v.writeIops, lines: format(v), seen };
          this.cache.set(v.volume, e);
        }
        e.seen = seen;
        entries.push(e);
      }
      count += entries.length;
      if (entries.length === 0) break;
      let cached = this.slices[n];
      if (cached === undefined || cached.entries.length !== entries.length || cached.entries.some((e, i) => e !== entries[i])) {
        cached = { entries, texts: VOLUME_FAMILIES.map((_, f) => entries.map((e) => e.lines[f]!).join('\n')) };
        this.slices[n] = cached;
      }
      for (let f = 0; f < texts.length; f++) texts[f]!.push(cached.texts[f]!);
    }
    this.slices.length = Math.ceil(count / VOLUMES_PER_SLICE);
    if (this.cache.size > count && this.scrapes === seen) for (const [name, e] of this.cache) if (e.seen !== seen) this.cache.delete(name);
    if (this.building?.volumes === volumes) this.building = null;
    return texts;
  }
}

function same(a: number, b: number): boolean {
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

/** A volume's lines of each family, as prom-client formats them (label value escaped, value by getValueAsString). */
function format(v: VolumeCounters): string[] {
  const l = `volume="${escapeString(v.volume).replace(/"/g, '\\"')}"`;
  return [
    `couchestor_volume_read_ops_total{${l}} ${value(v.readOps)}`,
    `couchestor_volume_write_ops_total{${l}} ${value(v.writeOps)}`,
    `couchestor_volume_read_bytes_total{${l}} ${value(v.readBytes)}`,
    `couchestor_volume_write_bytes_total{${l}} ${value(v.writeBytes)}`,
    `couchestor_volume_iops{${l},direction="read"} ${value(v.readIops)}\ncouchestor_volume_iops{${l},direction="write"} ${value(v.writeIops)}`,
    TIERS.map((tier) => `couchestor_volume_tier{${l},tier="${tier}"} ${v.tier === tier ? 1 : 0}`).join('\n'),
  ];
}

function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function value(x: number): string {
  if (Number.isNaN(x)) return 'Nan';
  if (!Number.isFinite(x)) return x < 0 ? '-Inf' : '+Inf';
  return `${x}`;
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

  // Per-volume families: formatted by VolumeSeries (cached per volume, in slices that yield), not
  // by prom-client, whose per-label-set hashing and formatting held the event loop ~390 ms a scrape
  // at 10,000 volumes.
  for (const f of VOLUME_FAMILIES) registry.registerMetric(new VolumeFamily(f) as unknown as Metric);
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
  new Gauge({
    name: 'couchestor_pool_write_failed',
    help: 'Cold pools only: 1 while the pool\'s segment store refuses writes because one failed (destaging to it fails; /readyz answers 503 naming it and the error). A full disk\'s (ENOSPC) clears at the next write once the disk has room; any other needs a restart. The pool may still read as online.',
    labelNames: ['pool', 'tier'],
    registers,
    collect() {
      this.reset();
      for (const p of registry.snapshot().pools) if (p.writeFailed !== undefined) this.set({ pool: p.pool, tier: p.tier }, p.writeFailed ? 1 : 0);
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
  const nbdInflightGauge = (name: string, help: string, pick: (n: NbdInflight) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.reset();
        const n = registry.snapshot().nbdInflight;
        // reset() leaves an unlabelled 0: a limit of 0 is no limit anyone set.
        if (n === null) this.remove();
        else this.set(pick(n));
      },
    });
  };
  nbdInflightGauge('couchestor_nbd_inflight_bytes', 'Bytes NBD requests in flight hold now, across all connections (WRITE payloads from their header on, READ data until handed to the socket, CACHE steps, the work TRIM and WRITE_ZEROES queue), counted against limits.inflightBytes.', (n) => n.usedBytes);
  nbdInflightGauge('couchestor_nbd_inflight_limit_bytes', 'The daemon-wide bound on couchestor_nbd_inflight_bytes (limits.inflightBytes). A request larger than it runs alone.', (n) => n.capacityBytes);
  nbdInflightGauge('couchestor_nbd_inflight_peak_bytes', 'The most couchestor_nbd_inflight_bytes has been since start: at most the limit, or one request when it alone is larger.', (n) => n.peakBytes);
  new Counter({
    name: 'couchestor_nbd_inflight_pauses_total',
    help: 'NBD requests that waited for the daemon-wide bound (limits.inflightBytes): their connection stopped reading until bytes came back, in turn. Growing steadily: the bound is what limits NBD throughput.',
    registers,
    collect() {
      this.reset();
      const n = registry.snapshot().nbdInflight;
      if (n === null) this.remove();
      else this.inc(n.pausesTotal);
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
