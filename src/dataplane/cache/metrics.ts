// Prometheus export of CacheManager.stats(): per-tier counters and gauges, couchestor_cache_*.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CacheManager, CacheStats } from './cache-manager.js';

type Tier = 'l1' | 'l2' | 'l3';

/**
 * Registers the cache's metrics on registry. Values are read from cm.stats() at scrape time,
 * so the hot path pays nothing for them.
 */
export function registerCacheMetrics(cm: CacheManager, registry: Registry): void {
  const stats = (): CacheStats => cm.stats();
  const counter = (name: string, help: string, read: (s: CacheStats) => Partial<Record<Tier, number | undefined>>) =>
    new Counter({
      name,
      help,
      labelNames: ['tier'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [tier, value] of Object.entries(read(stats()))) {
          if (value !== undefined) this.inc({ tier }, value);
        }
      },
    });
  const gauge = (name: string, help: string, read: (s: CacheStats) => Partial<Record<Tier, number | undefined>>) =>
    new Gauge({
      name,
      help,
      labelNames: ['tier'],
      registers: [registry],
      collect() {
        for (const [tier, value] of Object.entries(read(stats()))) {
          if (value !== undefined) this.set({ tier }, value);
        }
      },
    });

  counter('couchestor_cache_hits_total', 'Cache lookups answered by the tier', (s) => ({ l1: s.l1.hits, l2: s.l2?.hits, l3: s.l3.hits }));
  counter('couchestor_cache_misses_total', 'Cache lookups the tier could not answer', (s) => ({ l1: s.l1.misses, l2: s.l2?.misses, l3: s.l3.misses }));
  counter('couchestor_cache_evictions_total', 'Entries dropped by the tier to make room', (s) => ({ l1: s.l1.evictions, l2: s.l2?.evictions }));
  counter('couchestor_cache_corruptions_total', 'L2 records that failed their CRC32C check and were dropped', (s) => ({ l2: s.l2?.corruptions }));
  counter('couchestor_cache_l3_errors_total', 'L3 backend reads that failed', (s) => ({ l3: s.l3.errors }));
  gauge('couchestor_cache_bytes', 'Bytes held by the tier (compressed size where compressed)', (s) => ({ l1: s.l1.bytes, l2: s.l2?.bytes }));
  gauge('couchestor_cache_capacity_bytes', 'Configured capacity of the tier', (s) => ({ l1: s.l1.capacityBytes, l2: s.l2?.capacityBytes }));
  gauge('couchestor_cache_entries', 'Entries held by the tier', (s) => ({ l1: s.l1.entries, l2: s.l2?.entries }));
}
