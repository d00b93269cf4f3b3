// Public API of the metrics module: the registry and the /metrics server.

export {
  createMetrics,
  MIGRATION_RESULTS,
  STRIPE_STATES,
  type MetricsSource,
  type MetricsSourceRef,
  type VolumeCounters,
  type PoolUsage,
  type MigrationCounters,
  type MigrationResult,
  type StripeState,
} from './registry.js';
export { startMetricsServer, registerMetricsRoute, DEFAULT_METRICS_PORT, type MetricsServerOptions } from './server.js';
