// /healthz (liveness) and /readyz (readiness) for the daemon: each answers 200
// when its check passes and 503 with the failing reasons otherwise.

import Fastify, { type FastifyInstance } from 'fastify';
import { listen, type RunningHttpServer } from './http.js';

export const DEFAULT_HEALTH_PORT = 8081;
/**
 * A check slower than this answers 503: kubelet's probe timeout defaults to
 * 1 s, and a check stuck on a wedged disk must not hang the probe.
 */
export const HEALTH_CHECK_TIMEOUT_MS = 1000;

export interface HealthCheck {
  ok: boolean;
  /** Why the check fails, e.g. "metadata not open", "pool hot-0 missing"; empty when ok. */
  reasons: string[];
}

export type HealthProbe = () => HealthCheck | Promise<HealthCheck>;

export interface HealthChecks {
  live: HealthProbe;
  ready: HealthProbe;
}

export interface HealthServerOptions {
  /** Default 0.0.0.0: kubelet probes come to the pod IP. */
  host?: string;
  port?: number;
  checks: HealthChecks;
}

/** JSON body of /healthz and /readyz. */
export interface HealthResponse {
  check: 'live' | 'ready';
  status: 'ok' | 'failing';
  reasons: string[];
}

async function evaluate(probe: HealthProbe): Promise<HealthCheck> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<HealthCheck>((resolveTimeout) => {
    timer = setTimeout(() => resolveTimeout({ ok: false, reasons: [`check did not answer within ${HEALTH_CHECK_TIMEOUT_MS} ms`] }), HEALTH_CHECK_TIMEOUT_MS);
  });
  try {
    const result = await Promise.race([Promise.resolve().then(probe), timeout]);
    if (typeof result?.ok !== 'boolean' || !Array.isArray(result.reasons)) {
      return { ok: false, reasons: ['check returned an invalid result'] };
    }
    return result;
  } catch (err) {
    return { ok: false, reasons: [`check threw: ${err instanceof Error ? err.message : String(err)}`] };
  } finally {
    clearTimeout(timer);
  }
}

const responseSchema = {
  type: 'object',
  required: ['check', 'status', 'reasons'],
  properties: {
    check: { type: 'string' },
    status: { type: 'string' },
    reasons: { type: 'array', items: { type: 'string' } },
  },
} as const;

/** Adds GET /healthz and GET /readyz to an existing fastify instance (e.g. the admin API). */
export function registerHealthRoutes(app: FastifyInstance, checks: HealthChecks): void {
  const route = (path: string, check: HealthResponse['check'], probe: HealthProbe): void => {
    app.get(path, { schema: { response: { 200: responseSchema, 503: responseSchema } } }, async (_req, reply) => {
      const result = await evaluate(probe);
      const body: HealthResponse = result.ok
        ? { check, status: 'ok', reasons: [] }
        : { check, status: 'failing', reasons: result.reasons.length > 0 ? result.reasons : ['not ' + check] };
      reply.code(result.ok ? 200 : 503).header('cache-control', 'no-store');
      return body;
    });
  };
  route('/healthz', 'live', checks.live);
  route('/readyz', 'ready', checks.ready);
}

export async function startHealthServer(options: HealthServerOptions): Promise<RunningHttpServer> {
  const app = Fastify({ logger: false });
  registerHealthRoutes(app, options.checks);
  return listen(app, options.host ?? '0.0.0.0', options.port ?? DEFAULT_HEALTH_PORT);
}
