// Typed errors of the cache library, so callers can map them at their protocol boundary.

export class CacheClosedError extends Error {
  override readonly name = 'CacheClosedError';
  constructor(operation: string) {
    super(`cache is not open (${operation})`);
  }
}

export class InvalidCacheKeyError extends Error {
  override readonly name = 'InvalidCacheKeyError';
  constructor(reason: string) {
    super(`invalid cache key: ${reason}`);
  }
}

export class InvalidCacheConfigError extends Error {
  override readonly name = 'InvalidCacheConfigError';
  constructor(reason: string) {
    super(`invalid cache configuration: ${reason}`);
  }
}
