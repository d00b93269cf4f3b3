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
  // A close (the daemon's stop) cuts every connection, a scrape in flight too: a scrape is built
  // over many turns of the event loop and streamed, so the close would wait for it: forever for a
  // client that stopped reading, and for one that read it whole, until the keep-alive timeout
  // (72 s) after its end, the connection being busy when the close began. The stop hung there until
  // the orchestrator's SIGKILL. (Sent in one turn, as before streaming, a scrape had always ended
  // by then and its idle connection was cut.)
  const app = Fastify({ logger: false, forceCloseConnections: true });
  registerMetricsRoute(app, options.registry);
  return listen(app, options.host ?? '0.0.0.0', options.port ?? DEFAULT_METRICS_PORT);
}
