// Public surface of the cache library (issue #5): import from here, not from the files behind it.
export {
  CacheManager,
  chunkKey,
  type CacheManagerOptions,
  type CacheStats,
  type L2Options,
  type L3Backend,
  type TierStats,
} from './cache-manager.js';
export { CacheClosedError, InvalidCacheConfigError, InvalidCacheKeyError } from './errors.js';
export { registerCacheMetrics } from './metrics.js';
