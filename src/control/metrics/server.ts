// GET /metrics in the Prometheus text format, from a registry made by createMetrics().

import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { listen, type RunningHttpServer } from '../health/http.js';

export const DEFAULT_METRICS_PORT = 8080;

export interface MetricsServerOptions {
  /** Default 0.0.0.0: Prometheus scrapes the pod IP. */
  host?: string;
  port?: number;
  registry: Registry;
}

/** Adds GET /metrics to an existing fastify instance. */
export function registerMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', async (_req, reply) => {
    let text: string | Readable;
    try {
      // Our registry's pieces, streamed (a scrape of 10,000 volumes is ~5 MB); any other registry's string.
      const chunks = (registry as { metricsChunks?: () => Promise<string[]> }).metricsChunks;
      text = chunks ? Readable.from(await chunks.call(registry)) : await registry.metrics();
    } catch (err) {
      // A source that throws must not take the endpoint down silently: say why.
      reply.code(500).type('text/plain; charset=utf-8');
      return `metrics collection failed: ${err instanceof Error ? err.message : String(err)}\n`;
    }
    reply.type(registry.contentType);
    return text;
  });
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<RunningHttpServer> {
  const app = Fastify({ logger: false });
  registerMetricsRoute(app, options.registry);
  return listen(app, options.host ?? '0.0.0.0', options.port ?? DEFAULT_METRICS_PORT);
}
