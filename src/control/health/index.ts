// Public API of the health module: /healthz and /readyz.

export {
  startHealthServer,
  registerHealthRoutes,
  DEFAULT_HEALTH_PORT,
  HEALTH_CHECK_TIMEOUT_MS,
  type HealthCheck,
  type HealthChecks,
  type HealthProbe,
  type HealthResponse,
  type HealthServerOptions,
} from './server.js';
export type { RunningHttpServer } from './http.js';
