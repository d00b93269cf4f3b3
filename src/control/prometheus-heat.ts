// Heat from a Prometheus server instead of the daemon's own counters: the
// seed's metric names first (openebs_volume_iops, then mayastor_volume_iops,
// then the rate of mayastor_volume_read_ops), or the daemon's exported
// couchestor_volume_*_ops_total counters. Unreachable -> refresh() throws and
// the loop makes no migrations that pass.
import type { HeatReading, HeatSource } from './loop.js';

export type PrometheusMetrics = 'seed' | 'couchestor';

const QUERY_TIMEOUT_MS = 5_000;
/** Bound on volumes remembered from one answer. */
const MAX_SERIES = 100_000;

export class PrometheusHeat implements HeatSource {
  private readings = new Map<string, number>();
  lastQuery = '';

  constructor(
    readonly url: string,
    readonly metrics: PrometheusMetrics,
  ) {}

  private queries(windowMs: number): string[] {
    const w = `${Math.max(1, Math.round(windowMs / 1000))}s`;
    if (this.metrics === 'couchestor') {
      return [`sum by (volume) (rate(couchestor_volume_read_ops_total[${w}]) + rate(couchestor_volume_write_ops_total[${w}]))`];
    }
    return [`avg_over_time(openebs_volume_iops[${w}])`, `avg_over_time(mayastor_volume_iops[${w}])`, `rate(mayastor_volume_read_ops[${w}])`];
  }

  async refresh(windowMs: number): Promise<void> {
    for (const q of this.queries(windowMs)) {
      const res = await fetch(`${this.url.replace(/\/$/, '')}/api/v1/query?query=${encodeURIComponent(q)}`, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) });
      if (!res.ok) throw new Error(`prometheus ${this.url} answered ${res.status} for ${q}`);
      const body = (await res.json()) as { status: string; data?: { result?: { metric: Record<string, string>; value: [number, string] }[] } };
      if (body.status !== 'success') throw new Error(`prometheus query failed: ${q}`);
      const result = body.data?.result ?? [];
      if (result.length === 0) continue; // fall back to the next metric name
      const next = new Map<string, number>();
      for (const r of result.slice(0, MAX_SERIES)) {
        const name = r.metric.volume ?? r.metric.pv_name ?? r.metric.volume_id;
        const v = Number(r.value[1]);
        if (name && Number.isFinite(v)) next.set(name, (next.get(name) ?? 0) + v);
      }
      this.readings = next;
      this.lastQuery = q;
      return;
    }
    this.readings = new Map();
    this.lastQuery = '';
  }

  read(volume: string): HeatReading {
    const v = this.readings.get(volume);
    return v === undefined ? { iops: null, why: `prometheus has no series for volume ${volume}` } : { iops: v };
  }
}
